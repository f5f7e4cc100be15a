#pragma once
/// @file layers.h
/// @brief Building blocks shared by the ViT and BERT encoders.

#include <torch/nn/module.h>

#include <cstdint>

namespace albef {

/// Multi-head scaled dot-product attention on [B, L, C] inputs.
/// `additive_mask` (optional) broadcasts to [B, heads, Lq, Lk] and is added
/// to the scores before the softmax; `dropout` applies to the attention
/// probabilities (training only, as BERT's attention_probs_dropout_prob).
/// Returns [B, Lq, C]. With `probabilities`, the softmax output [B, heads,
/// Lq, Lk] before dropout is stored there, part of the autograd graph
/// (Grad-CAM reads it and its gradient); that call takes the generic path.
/// When gradients are on but the inputs need none, the stored probabilities
/// are made a leaf that requires one, so a backward pass can start there.
at::Tensor multi_head_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                int64_t num_heads, const at::Tensor& additive_mask = {}, double dropout = 0.0,
                                at::Tensor* probabilities = nullptr);

/// A linear layer whose weight and bias are other modules' tensors (BERT's
/// MLM decoder is tied to the word embeddings and to the head's bias). The
/// parameters are registered under the usual names so the state_dict has
/// `decoder.weight` and `decoder.bias`, sharing storage as in PyTorch.
class TiedLinearImpl : public torch::nn::Module {
 public:
  TiedLinearImpl(const at::Tensor& weight, const at::Tensor& bias);
  at::Tensor forward(const at::Tensor& input);
  at::Tensor weight, bias;
};
TORCH_MODULE(TiedLinear);

}  // namespace albef
