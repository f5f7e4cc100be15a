#pragma once
/// @file attention_head_bf16.h
/// @brief One head of bf16 attention on the CPU's bf16 dot products (AVX-512 BF16).
///
/// oneDNN's bf16 GEMM, called per head, reached about 330-370 GFLOP/s on two
/// Zen 5 cores for ViT's 257 x 257 x 64 products and under 100 for a
/// caption's 30 x 30 (its peak on large products is about 780-860): each call
/// packs its operands, and a head's float32 scores go to memory and back
/// between the two products. Here a thread packs a head's keys and values
/// once into the layout vdpbf16ps reads (pairs of bf16 along the summed
/// dimension in one 32-bit lane), then takes the queries six rows at a time:
/// their scores stay in L1, are exponentiated there and multiply the values
/// at once.
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <vector>

namespace albef::ops {

/// Whether `HeadAttentionBf16` runs heads of this width here: a CPU with
/// AVX-512 BF16 and an even width (its products read bf16 in pairs).
bool head_attention_bf16_applies(int64_t head_dim);

/// softmax(scale q k^T + mask) v for one head: q [q_len, head_dim],
/// k and v [k_len, head_dim], rows of bf16 `stride` elements apart; scores,
/// exponentials and sums in float32, the exponentials rounded to bf16 for
/// the second product, the output divided by each row's sum and rounded to
/// bf16. One object per thread: it keeps the packed keys and values and the
/// scratch rows between heads.
class HeadAttentionBf16 {
 public:
  /// Requires `head_attention_bf16_applies(head_dim)`.
  HeadAttentionBf16(int64_t q_len, int64_t k_len, int64_t head_dim);

  /// Packs one head's keys and values for the following `run` calls.
  void pack(const c10::BFloat16* key, int64_t key_stride, const c10::BFloat16* value, int64_t value_stride);

  /// out = softmax(scale q k^T + mask) v with the packed keys and values;
  /// `mask` (k_len values added to every row of scores) may be null.
  void run(const c10::BFloat16* query, int64_t query_stride, float scale, const float* mask, c10::BFloat16* out,
           int64_t out_stride);

 private:
  int64_t q_len_, k_len_, head_dim_;
  int64_t key_columns_;    // k_len rounded up to 16: the packed keys' row length
  int64_t value_columns_;  // head_dim rounded up to 16: the packed values' row length
  int64_t key_pairs_;      // ceil(k_len / 2): rows of packed values
  std::vector<uint32_t> keys_;          // [head_dim / 2][key_columns]: pair p of key j at p * key_columns + j
  std::vector<uint32_t> values_;        // [key_pairs][value_columns]: keys 2t and 2t + 1's values in lane t
  std::vector<float> scores_;           // [kRows][k_len]
  std::vector<c10::BFloat16> weights_;  // [kRows][2 key_pairs]: exp(score - max); odd k_len: last column 0
};

}  // namespace albef::ops
