#include "albef/model/layers.h"

#include "albef/core/runtime.h"
#include "ops/attention.h"
#include "ops/dropout.h"
#include "ops/linear.h"

#include <ATen/ATen.h>

#include <cmath>

namespace albef {

at::Tensor multi_head_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                int64_t num_heads, const at::Tensor& additive_mask, double dropout,
                                at::Tensor* probabilities) {
  if (!probabilities && ops::attention_applies(query, key, value, additive_mask, dropout))
    return ops::attention(query, key, value, num_heads, additive_mask, dropout);  // head by head
  const int64_t batch = query.size(0), q_len = query.size(1), width = query.size(2);
  const int64_t k_len = key.size(1), head_dim = width / num_heads;
  // [B, L, C] -> [B, heads, L, head_dim]
  auto split = [&](const at::Tensor& x, int64_t len) {
    return x.view({x.size(0), len, num_heads, head_dim}).transpose(1, 2);
  };
  const at::Tensor q = split(query, q_len);
  const at::Tensor k = split(key, k_len);
  const at::Tensor v = split(value, k_len);
  // Scaling q ([L, d]) costs less than scaling the scores ([L, L]); for d = 64 the factor 1/8 is exact.
  at::Tensor scores = at::matmul(q * (1.0 / std::sqrt(static_cast<double>(head_dim))), k.transpose(-1, -2));
  if (additive_mask.defined()) scores = scores + additive_mask.to(scores.scalar_type());
  at::Tensor probs;
  {
    // Under bf16 autocast the scores are bf16 and the probabilities go into a
    // bf16 product: softmax (which accumulates in float32 either way) can stay
    // in bf16 instead of autocast's round trip through a float32 copy.
    const AutocastOff same_dtype;
    probs = at::softmax(scores, -1);
  }
  if (probabilities) {
    // Grad-CAM runs the layers below its block without gradients: the
    // recorded probabilities then start the graph, so the backward pass stops
    // at them instead of reaching the earlier layers.
    if (at::GradMode::is_enabled() && !probs.requires_grad()) probs = probs.detach().requires_grad_(true);
    *probabilities = probs;
  }
  if (dropout > 0.0) probs = ops::dropout(probs, dropout, /*train=*/true);
  return at::matmul(probs, v).transpose(1, 2).reshape({batch, q_len, width});
}

TiedLinearImpl::TiedLinearImpl(const at::Tensor& tied_weight, const at::Tensor& tied_bias) {
  weight = register_parameter("weight", tied_weight);
  bias = register_parameter("bias", tied_bias);
}

at::Tensor TiedLinearImpl::forward(const at::Tensor& input) { return ops::linear(input, weight, bias); }

}  // namespace albef
