#pragma once
/// @file dnnl_bf16_gemm.h
/// @brief oneDNN's BLAS-like bf16 GEMM (bf16 A and B, float32 C).
///
/// Exported by libdnnl (it is what its bf16 matmul calls) but not declared in
/// its public headers; CMake checks that it links (ALBEF_WITH_DNNL_BF16_GEMM).
#if defined(ALBEF_WITH_DNNL) && defined(ALBEF_WITH_DNNL_BF16_GEMM)
#include <oneapi/dnnl/dnnl.h>

extern "C" dnnl_status_t dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t m, dnnl_dim_t n, dnnl_dim_t k,
                                               float alpha, const void* a, dnnl_dim_t lda, const void* b,
                                               dnnl_dim_t ldb, float beta, float* c, dnnl_dim_t ldc);
#endif
