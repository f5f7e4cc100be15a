#pragma once
/// @file packed_weights.h
/// @brief Linear weights reordered once into the blocked layout oneDNN's
/// fastest matmul kernels read, kept while the layer lives.
#ifdef ALBEF_WITH_DNNL
#include <ATen/core/Tensor.h>
#include <oneapi/dnnl/dnnl.hpp>

namespace albef::ops {

/// The CPU engine every oneDNN call of albef's runs on.
const dnnl::engine& cpu_engine();

/// The weights [N, K] (int8 or bf16, contiguous) as `packed` describes them
/// for an [M, K] x [K, N] matmul. The first call for a layer and layout
/// reorders them; later calls return the same memory until the weights are
/// written in place (their version counter moves: a checkpoint loaded into
/// the layer). An entry holds a weak reference to the weights' storage: a
/// freed model takes its packed copies with it at the next packing (its
/// address may be reused). The copy is memory beside the weights.
dnnl::memory packed_weights(const at::Tensor& weights, const dnnl::memory::desc& packed, const dnnl::engine& engine);

/// The layout oneDNN's matmul asks for the weights of an [M, K] x [K, N]
/// product with these source and destination descriptions, decided once a
/// shape; `as_stored` (the weights [N, K] read as W^T) where oneDNN asks for
/// a plain matrix and has a kernel reading them as they are, so that no
/// copy doubles the weights' memory.
dnnl::memory::desc chosen_weights_layout(const dnnl::memory::desc& src_md, const dnnl::memory::desc& dst_md,
                                         const dnnl::memory::desc& as_stored, const dnnl::engine& engine);

/// The type an int8 matmul reads its quantised inputs as: s8, or u8 (q + 128)
/// where ops::int8_gemm_sums_pairs_in_int16 (ops/linear_int8.h).
dnnl::memory::data_type int8_input_type();

/// The weights [N, K] as an [M, K] x [K, N] matmul on `operands` (bf16 or
/// s8) reads them from memory as stored: W^T, column-major.
dnnl::memory::desc stored_weights_desc(int64_t n, int64_t k, dnnl::memory::data_type operands);

/// The layout an inference layer keeps its weights [N, K] in (pack_for_inference
/// in ops/linear.h): the one oneDNN's matmul asks for at 1,024 rows with
/// float32 results, or stored_weights_desc where it reads them as stored.
/// The same for the same arguments, so a layer's bytes need no description
/// beside them.
dnnl::memory::desc inference_weights_layout(int64_t n, int64_t k, dnnl::memory::data_type operands,
                                            const dnnl::engine& engine);

/// `weights` [N, K] reordered into `layout`: its bytes (uint8, 1-D).
at::Tensor pack_into(const at::Tensor& weights, const dnnl::memory::desc& layout, const dnnl::engine& engine);

/// The inverse of pack_into: the plain [N, K] matrix of `type`, a copy.
at::Tensor unpack_from(const at::Tensor& bytes, const dnnl::memory::desc& layout, at::ScalarType type,
                       const dnnl::engine& engine);

}  // namespace albef::ops
#endif
