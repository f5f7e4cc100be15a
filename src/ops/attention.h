#pragma once
/// @file attention.h
/// @brief Multi-head attention one head at a time: float32 with its backward pass, bf16 for inference.
///
/// The generic path (at::matmul, softmax, at::matmul) materialises the scores
/// of every head at once, copies q, k and v into contiguous head-major
/// tensors and the result back into [B, L, C], and scales and masks in passes
/// of their own. This one runs each (sample, head) pair on one thread: the
/// scores go to a per-thread buffer that stays in cache, the scale rides in
/// the GEMM, the mask is added in place, and the output is written straight
/// into its columns of [B, Lq, C]. q, k and v are used where they lie, so the
/// column chunks of a fused qkv projection need no copy.
///
/// In training the same loop keeps each head's probabilities (and dropout
/// mask) and its backward pass runs head by head as well: LibTorch 1.13's
/// batched matmul on the CPU loops over the batch with a select and a
/// multi-threaded GEMM per matrix, which costs more than the arithmetic for
/// these small products.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace albef::ops {

/// Whether `attention` can compute this call: CPU float32 tensors [B, L, C]
/// with unit stride along C, oneDNN built in, a mask (if any) of B x Lk
/// values ([B, 1, 1, Lk], BERT's padding mask) that needs no gradient, and
/// keys and values of batch B, or of batch 1 when no gradient is needed.
/// Under bf16 autocast: inference only (no gradient, no dropout) where
/// oneDNN's bf16 GEMM runs, on float32 or bf16 tensors.
bool attention_applies(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                       const at::Tensor& additive_mask, double dropout = 0.0);

/// dropout(softmax(q_h k_h^T / sqrt(d) + mask)) v_h for each head h of
/// width d = C / num_heads; returns [B, Lq, C] (float32, contiguous),
/// differentiable in q, k and v; under bf16 autocast bf16, from products on
/// bf16 operands with float32 scores and softmax. With `dropout` > 0 each probability is kept
/// with 1 - dropout and scaled by 1 / (1 - dropout); the mask is drawn first,
/// as one draw_keep_mask({B, heads, Lq, Lk}, 1 - dropout) (ops/dropout.h).
/// Requires `attention_applies`; throws otherwise.
at::Tensor attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, int64_t num_heads,
                     const at::Tensor& additive_mask, double dropout = 0.0);

}  // namespace albef::ops
