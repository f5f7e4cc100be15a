#include "bench/attention_bench.h"

#include "albef/core/error.h"
#include "albef/core/runtime.h"
#include "ops/attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>

namespace albef::bench {
namespace {

constexpr int64_t kWidth = 768, kHeads = 12;  // ViT-B/16's and BERT-base's

struct Shape {
  const char* name;
  int64_t batch, q_len, k_len, key_batch;
};

/// ViT-B/16 at 256 x 256 (1,028 tokens a pass, as inference slices them), 34
/// captions of 30 tokens (the same), 16 captions on one image's keys and values
/// (image -> text re-ranking), and 16 caption-image pairs (ITM, text -> image re-ranking).
const Shape kShapes[] = {{"vit_self", 4, 257, 257, 4},
                         {"text_self", 34, 30, 30, 34},
                         {"fusion_cross", 16, 30, 257, 1},
                         {"fusion_pairs", 16, 30, 257, 16}};

/// [B, L, C] -> [B, heads, L, C / heads].
at::Tensor split_heads(const at::Tensor& x) {
  return x.view({x.size(0), x.size(1), kHeads, x.size(2) / kHeads}).transpose(1, 2);
}

/// softmax(q k^T / sqrt(d)) v by LibTorch's matmul and softmax on every head at once
/// (the softmax in float32, as CPU autocast runs it), back to [B, Lq, C].
at::Tensor aten_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value) {
  const at::Tensor q = split_heads(query);
  const at::Tensor k = split_heads(key.expand({query.size(0), key.size(1), key.size(2)}));
  const at::Tensor v = split_heads(value.expand({query.size(0), value.size(1), value.size(2)}));
  const double scale = 1.0 / std::sqrt(static_cast<double>(query.size(2) / kHeads));
  const at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).mul_(scale);
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(query.scalar_type());
  const at::Tensor out = at::matmul(probs, v);
  return out.transpose(1, 2).reshape({query.size(0), query.size(1), query.size(2)});
}

double seconds_of(const std::function<void()>& call) {
  const auto start = std::chrono::steady_clock::now();
  call();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

nlohmann::json measure(const Shape& shape, const std::string& precision, int64_t calls) {
  const at::ScalarType type = precision == "bf16" ? at::kBFloat16 : at::kFloat;
  at::manual_seed(0);
  const at::Tensor query = at::randn({shape.batch, shape.q_len, kWidth}).to(type);
  const at::Tensor key = at::randn({shape.key_batch, shape.k_len, kWidth}).to(type);
  const at::Tensor value = at::randn({shape.key_batch, shape.k_len, kWidth}).to(type);
  const PrecisionGuard guard(precision == "bf16" ? Precision::Bf16 : Precision::Fp32, at::kCPU);
  ALBEF_CHECK(ops::attention_applies(query, key, value, {}), "ops::attention does not apply to the ", shape.name,
              " shape in ", precision);
  at::Tensor ours, theirs;
  double ours_best = std::numeric_limits<double>::infinity(), theirs_best = ours_best;
  for (int64_t call = 0; call <= calls; ++call) {  // call 0 warms both up
    const double ours_s = seconds_of([&] { ours = ops::attention(query, key, value, kHeads, {}); });
    const double theirs_s = seconds_of([&] { theirs = aten_attention(query, key, value); });
    if (call == 0) continue;
    ours_best = std::min(ours_best, ours_s);
    theirs_best = std::min(theirs_best, theirs_s);
  }
  const double flop = 4.0 * shape.batch * shape.q_len * shape.k_len * kWidth;
  return {{"shape", shape.name},
          {"batch", shape.batch},
          {"q_len", shape.q_len},
          {"k_len", shape.k_len},
          {"precision", precision},
          {"albef_ms", ours_best * 1e3},
          {"aten_ms", theirs_best * 1e3},
          {"albef_gflops", flop / ours_best / 1e9},
          {"speedup", theirs_best / ours_best},
          {"max_diff", (ours.to(at::kFloat) - theirs.to(at::kFloat)).abs().max().item<double>()}};
}

}  // namespace

nlohmann::json run_attention_bench(const AttentionBenchOptions& options) {
  std::vector<std::string> precisions = options.precisions;
  if (precisions.empty()) {
    precisions = {"fp32"};
    if (dnnl_bf16_gemm_available()) precisions.push_back("bf16");
  }
  nlohmann::json rows = nlohmann::json::array();
  for (const std::string& precision : precisions) {
    if (precision != "fp32" && precision != "bf16") {  // int8 layers are linear ones; their attention is bf16's
      std::fprintf(stderr, "attention: skipping %s (attention has fp32 and bf16 kernels)\n", precision.c_str());
      continue;
    }
    if (precision == "bf16" && !dnnl_bf16_gemm_available()) {
      std::fprintf(stderr, "attention: skipping bf16 (this CPU has no native bf16 GEMM)\n");
      continue;
    }
    for (const Shape& shape : kShapes) rows.push_back(measure(shape, precision, options.calls));
  }
  return rows;
}

void print_attention_table(const nlohmann::json& rows) {
  std::printf("attention, %lld heads of %lld, fastest of the calls (albef and LibTorch's composite alternating)\n",
              static_cast<long long>(kHeads), static_cast<long long>(kWidth / kHeads));
  std::printf("%-13s %5s %12s %9s %9s %8s %8s %9s\n", "shape", "prec", "B x Lq x Lk", "albef ms", "aten ms",
              "GFLOP/s", "speedup", "max diff");
  for (const auto& row : rows) {
    const std::string dims = std::to_string(row["batch"].get<int64_t>()) + "x" +
                             std::to_string(row["q_len"].get<int64_t>()) + "x" +
                             std::to_string(row["k_len"].get<int64_t>());
    std::printf("%-13s %5s %12s %9.3f %9.3f %8.0f %7.2fx %9.2g\n", row["shape"].get<std::string>().c_str(),
                row["precision"].get<std::string>().c_str(), dims.c_str(), row["albef_ms"].get<double>(),
                row["aten_ms"].get<double>(), row["albef_gflops"].get<double>(), row["speedup"].get<double>(),
                row["max_diff"].get<double>());
  }
}

}  // namespace albef::bench
