#include "albef/model/layers.h"

#include "albef/ops/linear.h"

#include <ATen/ATen.h>

#include <cmath>

namespace albef {

at::Tensor multi_head_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                int64_t num_heads, const at::Tensor& additive_mask, double dropout) {
  const int64_t batch = query.size(0), q_len = query.size(1), width = query.size(2);
  const int64_t k_len = key.size(1), head_dim = width / num_heads;
  // [B, L, C] -> [B, heads, L, head_dim]
  auto split = [&](const at::Tensor& x, int64_t len) {
    return x.view({x.size(0), len, num_heads, head_dim}).transpose(1, 2);
  };
  const at::Tensor q = split(query, q_len);
  const at::Tensor k = split(key, k_len);
  const at::Tensor v = split(value, k_len);
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_dim));
  if (additive_mask.defined()) scores = scores + additive_mask;
  at::Tensor probs = at::softmax(scores, -1);
  if (dropout > 0.0) probs = at::dropout(probs, dropout, /*train=*/true);
  return at::matmul(probs, v).transpose(1, 2).reshape({batch, q_len, width});
}

TiedLinearImpl::TiedLinearImpl(const at::Tensor& tied_weight, const at::Tensor& tied_bias) {
  weight = register_parameter("weight", tied_weight);
  bias = register_parameter("bias", tied_bias);
}

at::Tensor TiedLinearImpl::forward(const at::Tensor& input) { return ops::linear(input, weight, bias); }

}  // namespace albef
