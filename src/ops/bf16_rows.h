#pragma once
/// @file bf16_rows.h
/// @brief Row kernels of bf16 inference: rounding float32 to bf16, and a
/// softmax whose probabilities come out in bf16 for the next product.
///
/// The library is compiled for any x86-64; these loops run on every
/// attention head, so they use AVX-512 (with its bf16 conversion) where the
/// CPU has it, chosen at run time, and ATen's kernels otherwise.
#include <c10/util/BFloat16.h>

#include <cstdint>

namespace albef::ops {

/// y = x rounded to the nearest bf16 (ties to even), as c10::BFloat16 does.
void round_to_bf16(const float* x, int64_t n, c10::BFloat16* y);

/// probs = softmax(scores + mask) along each row of a [rows, cols] matrix
/// (row-major, contiguous), in float32, rounded to bf16. `mask` (cols
/// values added to every row) may be null. `scores` is used as scratch.
void softmax_to_bf16(float* scores, const float* mask, int64_t rows, int64_t cols, c10::BFloat16* probs);

/// Each row of a [rows, cols] matrix: s = residual + update (`update` null:
/// s = residual), written to `sum` (null when `update` is), then LayerNorm(s)
/// with `gamma`, `beta` and `eps` in float32, rounded to bf16 into `out` and,
/// when `normed` is not null, also stored there in float32 (`normed` may be
/// `sum`): one pass where ATen takes an add, a layer_norm and a conversion.
/// AVX-512 BF16 only: callers check native_bf16_rows() first.
void add_layer_norm_to_bf16(const float* residual, const float* update, float* sum, const float* gamma,
                            const float* beta, float eps, int64_t rows, int64_t cols, c10::BFloat16* out,
                            float* normed);

/// Whether this CPU runs add_layer_norm_to_bf16.
bool native_bf16_rows();

}  // namespace albef::ops
