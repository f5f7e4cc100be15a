#pragma once
/// @file vit.h
/// @brief ALBEF's image encoder: a pre-norm Vision Transformer (timm 0.4.9
/// layout, LayerNorm eps 1e-6, qkv bias, no pooling head). Parameter names
/// are those of the official `visual_encoder` state_dict.

#include "albef/config/config.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <utility>

namespace albef {

/// `patch_embed`: a Conv2d with kernel = stride = patch size.
class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t patch_size, int64_t embed_dim);
  /// [B, 3, H, W] -> [B, (H/p)*(W/p), D]. `image` is normalised (float), or
  /// 8-bit pixels (uint8) that vision::normalize_pixels normalises first.
  at::Tensor forward(const at::Tensor& image);
  /// For bf16 products in inference (bf16 and int8 on a CPU with oneDNN's
  /// bf16 kernels): `proj`'s weights become the [D, 3*p*p] product's, held
  /// once in bf16 in the layout oneDNN's matmul reads (ops::pack_for_inference),
  /// as the encoders' linear layers are, instead of rounded and reordered
  /// anew on every pass. Call it once the weights are final; a no-op where
  /// there is nothing to gain. `proj` then runs only through forward.
  void pack_for_inference();
  torch::nn::Conv2d proj{nullptr};

 private:
  torch::nn::Linear product_{nullptr};  // set by pack_for_inference; its weight is proj's
};
TORCH_MODULE(PatchEmbed);

/// `blocks.N.attn`: fused qkv projection, softmax attention, output proj.
class VitAttentionImpl : public torch::nn::Module {
 public:
  VitAttentionImpl(int64_t dim, int64_t num_heads);
  /// Takes `x` by value: moved in, it is freed once the qkv product has read it.
  at::Tensor forward(at::Tensor x);
  /// The class token's row of forward(x): [B, 1, D].
  at::Tensor forward_class_token(const at::Tensor& x);
  /// Grad-CAM (vit.py's register_blk): while on, every forward keeps its
  /// attention probabilities [B, heads, 1 + P, 1 + P] in `attention_map`;
  /// their gradient is read with torch::autograd::grad. Off by default.
  void save_attention(bool on) { save_attention_ = on; }
  const at::Tensor& attention_map() const { return attention_map_; }
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  int64_t num_heads;

 private:
  bool save_attention_ = false;
  at::Tensor attention_map_;
};
TORCH_MODULE(VitAttention);

/// `blocks.N.mlp`: fc1, exact GELU, fc2.
class VitMlpImpl : public torch::nn::Module {
 public:
  VitMlpImpl(int64_t dim, int64_t hidden);
  /// Takes `x` by value: moved in, it is freed before fc2 runs (ops::feed_forward).
  at::Tensor forward(at::Tensor x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(VitMlp);

/// `blocks.N`: x + attn(norm1(x)), then x + mlp(norm2(x)).
class VitBlockImpl : public torch::nn::Module {
 public:
  VitBlockImpl(int64_t dim, int64_t num_heads, double mlp_ratio);
  at::Tensor forward(const at::Tensor& x);
  /// forward(x) from x and norm1(x) as ops::layer_norm_for_products gives
  /// it; returns the output and, with `next_norm`, next_norm(output) for
  /// products: the last residual add and the next block's norm1 in one pass.
  /// `x` and `normed` are let go once read (moved in, a pass's input is freed
  /// before the MLP runs).
  std::pair<at::Tensor, at::Tensor> forward_chained(at::Tensor x, at::Tensor normed,
                                                    torch::nn::LayerNormImpl* next_norm);
  /// The class token's row of forward(x) [B, 1, D], from x and norm1(x):
  /// the block's products on that row alone, besides every token's keys and values.
  at::Tensor forward_class_token(const at::Tensor& x, const at::Tensor& normed);
  torch::nn::LayerNorm norm1{nullptr};
  VitAttention attn{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  VitMlp mlp{nullptr};
};
TORCH_MODULE(VitBlock);

/// The whole encoder: [B, 3, R, R] -> [B, 1 + (R/p)^2, D] (CLS token first).
class VisionTransformerImpl : public torch::nn::Module {
 public:
  /// `with_mask_token`: SIMLA's `mask_token` [1, 1, D] (zeros; its MIM).
  VisionTransformerImpl(const VisionConfig& config, int64_t image_res, bool with_mask_token = false);
  /// `masked_patches` [B, P] (bool, row-major patches; undefined: none) puts
  /// mask_token in place of those patch embeddings before pos_embed.
  at::Tensor forward(const at::Tensor& image, const at::Tensor& masked_patches = {});
  /// The input of block 0: patch embeddings (masked as in forward) after the
  /// CLS token, plus the position embeddings.
  at::Tensor embed(const at::Tensor& image, const at::Tensor& masked_patches = {});
  /// Blocks [begin, end) (no final norm): Grad-CAM runs the blocks below its
  /// block without gradients and the rest with them.
  at::Tensor forward_blocks(at::Tensor x, int64_t begin, int64_t end);
  /// forward(image)'s class token [B, 1, D], all a feature needs: the last
  /// block computes only that row (about 6% of ViT-B's products saved).
  at::Tensor forward_class_token(const at::Tensor& image);
  /// Random init as the official code (truncated normal, std 0.02).
  void init_weights();
  int64_t num_patches() const { return num_patches_; }

  at::Tensor cls_token, pos_embed;
  at::Tensor mask_token;  // undefined unless with_mask_token
  PatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};

 private:
  /// Blocks [begin, end) chained (none when begin == end); the second
  /// tensor is then_norm(output) for products where then_norm is given.
  std::pair<at::Tensor, at::Tensor> run_blocks(at::Tensor x, int64_t begin, int64_t end,
                                               torch::nn::LayerNormImpl* then_norm);
  int64_t num_patches_;
};
TORCH_MODULE(VisionTransformer);

/// The official `interpolate_pos_embed`: keeps the CLS row and resizes the
/// square grid of position embeddings with bicubic interpolation
/// (align_corners=false) when the checkpoint's grid differs from
/// `num_patches`. Returns the input unchanged when the grids agree.
at::Tensor interpolate_pos_embed(const at::Tensor& pos_embed, int64_t num_patches);

}  // namespace albef
