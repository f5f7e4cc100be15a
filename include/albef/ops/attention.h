#pragma once
/// @file attention.h
/// @brief Multi-head attention for float32 inference, one head at a time.
///
/// The generic path (at::matmul, softmax, at::matmul) materialises the scores
/// of every head at once, copies q, k and v into contiguous head-major
/// tensors and the result back into [B, L, C], and scales and masks in passes
/// of their own. This one runs each (sample, head) pair on one thread: the
/// scores go to a per-thread buffer that stays in cache, the scale rides in
/// the GEMM, the mask is added in place, and the output is written straight
/// into its columns of [B, Lq, C]. q, k and v are used where they lie, so the
/// column chunks of a fused qkv projection need no copy.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace albef::ops {

/// Whether `attention` can compute this call: CPU float32 tensors [B, L, C]
/// with unit stride along C, no gradient needed, no autocast, oneDNN built in,
/// and a mask (if any) of B x Lk values ([B, 1, 1, Lk], BERT's padding mask).
bool attention_applies(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                       const at::Tensor& additive_mask);

/// softmax(q_h k_h^T / sqrt(d) + mask) v_h for each head h of width
/// d = C / num_heads; returns [B, Lq, C] (float32, contiguous). Requires
/// `attention_applies`; throws otherwise.
at::Tensor attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, int64_t num_heads,
                     const at::Tensor& additive_mask);

}  // namespace albef::ops
