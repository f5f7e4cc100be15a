#pragma once
// `albef bench --suite attention`: ops::attention alone against LibTorch's
// composite of the same attention (matmul, softmax, matmul over
// [B, heads, L, d], which is what PyTorch's eager BERT and ViT run), on the
// shapes ALBEF runs at full size: ViT self-attention, a caption's, and the
// fusion's cross-attention of captions on one image's keys (image -> text
// re-ranking) and on an image each (ITM, text -> image re-ranking).

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace albef::bench {

struct AttentionBenchOptions {
  int64_t calls = 200;                          ///< timed calls per shape and side; the fastest is reported
  std::vector<std::string> precisions;          ///< fp32 and/or bf16; empty: fp32, and bf16 where it is native
};

/// One JSON object per shape and precision: shape, batch, q_len, k_len,
/// precision, albef_ms and aten_ms (fastest call of each, the two sides
/// alternating call by call), albef_gflops, speedup (aten_ms / albef_ms) and
/// max_diff (largest difference between the two outputs).
nlohmann::json run_attention_bench(const AttentionBenchOptions& options);

void print_attention_table(const nlohmann::json& rows);

}  // namespace albef::bench
