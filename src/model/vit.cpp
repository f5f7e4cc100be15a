#include "albef/model/vit.h"

#include "albef/core/error.h"
#include "ops/linear.h"
#include "ops/linear_int8.h"
#include "albef/model/layers.h"
#include "albef/vision/pixels.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <tuple>

namespace albef {
namespace nn = torch::nn;

PatchEmbedImpl::PatchEmbedImpl(int64_t patch_size, int64_t embed_dim) {
  proj = register_module("proj", nn::Conv2d(nn::Conv2dOptions(3, embed_dim, patch_size).stride(patch_size)));
}

namespace {

// Images [B, 3, H, W] as the rows [B * (H/p) * (W/p), 3*p*p] of bf16 patches a product reads, gathered and
// rounded in one pass. 8-bit pixels are normalised an image at a time as they are gathered: a pass never
// holds all its images' float32 values.
at::Tensor bf16_patches(const at::Tensor& images, int64_t p) {
  const int64_t batch = images.size(0), channels = images.size(1), rows = images.size(2) / p, cols = images.size(3) / p;
  at::Tensor patches = at::empty({batch, rows, cols, channels, p, p}, images.options().dtype(at::kBFloat16));
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor image = images.scalar_type() == at::kByte ? vision::normalize_pixels(images[b]) : images[b];
    patches[b].copy_(image.reshape({channels, rows, p, cols, p}).permute({1, 3, 0, 2, 4}));
  }
  return patches.view({batch * rows * cols, channels * p * p});
}

}  // namespace

at::Tensor PatchEmbedImpl::forward(const at::Tensor& input) {
  const int64_t p = proj->options.kernel_size()->at(0);
  const bool tiled = input.dim() == 4 && input.size(2) % p == 0 && input.size(3) % p == 0;
  const auto tokens = [&](const at::Tensor& rows) { return rows.view({input.size(0), -1, rows.size(1)}); };
  if (product_) {
    ALBEF_CHECK(tiled, "patch_embed: images [B, 3, H, W] with H and W multiples of ", p, " expected, got ",
                input.sizes());
    return tokens(ops::linear(*product_, bf16_patches(input, p)));
  }
  // A batch held as 8-bit pixels is normalised here, a pass of images at a time: a quarter of the memory
  // until then, the test transform's float32 values from here on.
  const at::Tensor image = input.scalar_type() == at::kByte ? vision::normalize_pixels(input) : input;
  // In bf16 inference the stride-p convolution runs as the product it is, [B*P, 3*p*p] x [3*p*p, D]:
  // oneDNN's bf16 convolution reorders its weights on every call (40% of its time for one image).
  if (tiled && !is_training() && !at::GradMode::is_enabled() && ops::products_read_bf16(image)) {
    const at::Tensor weight = proj->weight.view({proj->weight.size(0), -1});
    return tokens(ops::linear(bf16_patches(image, p), weight, proj->bias));
  }
  return proj->forward(image).flatten(2).transpose(1, 2);
}

void PatchEmbedImpl::pack_for_inference() {
  if (product_ || !proj->weight.device().is_cpu()) return;
  const at::NoGradGuard no_grad;
  const int64_t width = proj->weight.size(0), patch_values = proj->weight[0].numel();
  nn::Linear product(patch_values, width);
  product->weight.set_data(proj->weight.reshape({width, patch_values}).to(at::kBFloat16));
  product->bias.set_data(proj->bias);
  if (!ops::pack_for_inference(*product)) return;
  proj->weight.set_requires_grad(false);
  proj->weight.set_data(product->weight);  // the float32 weights are released
  product_ = product;
}

VitAttentionImpl::VitAttentionImpl(int64_t dim, int64_t heads) : num_heads(heads) {
  qkv = register_module("qkv", ops::encoder_linear(dim, dim * 3));
  proj = register_module("proj", ops::encoder_linear(dim, dim));
}

at::Tensor VitAttentionImpl::forward(at::Tensor x) {
  at::Tensor context;
  {
    const auto parts = ops::linear(*qkv, x, ops::Feeds::product).chunk(3, -1);
    x.reset();
    context = multi_head_attention(parts[0], parts[1], parts[2], num_heads, {}, 0.0,
                                   save_attention_ ? &attention_map_ : nullptr);
  }  // q, k and v are let go before the projection's output exists (a bf16 pass's highest point)
  return ops::linear(*proj, context);
}

at::Tensor VitAttentionImpl::forward_class_token(const at::Tensor& x) {
  // Every token's keys and values, the class token's query alone.
  const auto parts = ops::linear(*qkv, x, ops::Feeds::product).chunk(3, -1);
  return ops::linear(*proj, multi_head_attention(parts[0].slice(1, 0, 1), parts[1], parts[2], num_heads, {}, 0.0,
                                                 save_attention_ ? &attention_map_ : nullptr));
}

VitMlpImpl::VitMlpImpl(int64_t dim, int64_t hidden) {
  fc1 = register_module("fc1", ops::encoder_linear(dim, hidden));
  fc2 = register_module("fc2", ops::encoder_linear(hidden, dim));
}

at::Tensor VitMlpImpl::forward(at::Tensor x) { return ops::feed_forward(*fc1, *fc2, std::move(x)); }

VitBlockImpl::VitBlockImpl(int64_t dim, int64_t num_heads, double mlp_ratio) {
  const auto norm_options = nn::LayerNormOptions({dim}).eps(1e-6);
  norm1 = register_module("norm1", nn::LayerNorm(norm_options));
  attn = register_module("attn", VitAttention(dim, num_heads));
  norm2 = register_module("norm2", nn::LayerNorm(norm_options));
  mlp = register_module("mlp", VitMlp(dim, static_cast<int64_t>(dim * mlp_ratio)));
}

at::Tensor VitBlockImpl::forward(const at::Tensor& input) {
  return forward_chained(input, ops::layer_norm_for_products(input, *norm1), nullptr).first;
}

std::pair<at::Tensor, at::Tensor> VitBlockImpl::forward_chained(at::Tensor input, at::Tensor normed,
                                                                nn::LayerNormImpl* next_norm) {
  // Each sum is written over the residual stream moved in (addition commutes), not over the sublayer's
  // output: the stream keeps its place, below the feed-forward's GELU block.
  at::Tensor attended = attn->forward(std::move(normed));
  auto [x, mlp_input] = ops::add_layer_norm_for_products(attended, std::move(input), *norm2);
  attended.reset();
  return ops::feed_forward_added(*mlp->fc1, *mlp->fc2, std::move(mlp_input), std::move(x), next_norm);
}

at::Tensor VitBlockImpl::forward_class_token(const at::Tensor& input, const at::Tensor& normed) {
  // Contiguous: the fused bf16 add-and-norm reads whole rows.
  auto [x, mlp_input] =
      ops::add_layer_norm_for_products(input.slice(1, 0, 1).contiguous(), attn->forward_class_token(normed), *norm2);
  return x + mlp->forward(mlp_input);
}

VisionTransformerImpl::VisionTransformerImpl(const VisionConfig& config, int64_t image_res, bool with_mask_token) {
  ALBEF_CHECK(image_res % config.patch_size == 0, "image_res ", image_res, " vs patch ", config.patch_size);
  const int64_t grid = image_res / config.patch_size;
  num_patches_ = grid * grid;
  cls_token = register_parameter("cls_token", at::zeros({1, 1, config.embed_dim}));
  pos_embed = register_parameter("pos_embed", at::zeros({1, num_patches_ + 1, config.embed_dim}));
  // SIMLA (vit.py:200-201) initialises it to zeros and never re-initialises it.
  if (with_mask_token) mask_token = register_parameter("mask_token", at::zeros({1, 1, config.embed_dim}));
  patch_embed = register_module("patch_embed", PatchEmbed(config.patch_size, config.embed_dim));
  blocks = register_module("blocks", nn::ModuleList());
  for (int64_t i = 0; i < config.depth; ++i)
    blocks->push_back(VitBlock(config.embed_dim, config.num_heads, config.mlp_ratio));
  norm = register_module("norm", nn::LayerNorm(nn::LayerNormOptions({config.embed_dim}).eps(1e-6)));
}

at::Tensor VisionTransformerImpl::embed(const at::Tensor& image, const at::Tensor& masked_patches) {
  at::Tensor x = patch_embed->forward(image);
  if (masked_patches.defined()) {
    ALBEF_CHECK(mask_token.defined(), "masking patches needs the ViT's mask_token (with_mask_token)");
    ALBEF_CHECK(masked_patches.dim() == 2 && masked_patches.size(0) == x.size(0) && masked_patches.size(1) == x.size(1),
                "masked_patches must be [B, P] = [", x.size(0), ", ", x.size(1), "], got ", masked_patches.sizes());
    // SIMLA's blend x*(1-w) + mask_token*w (vit.py:248-255): a masked patch's gradient reaches mask_token only.
    const at::Tensor w = masked_patches.unsqueeze(-1).to(x.scalar_type());
    x = x * (1.0 - w) + mask_token.to(x.scalar_type()) * w;
  }
  x = at::cat({cls_token.expand({x.size(0), -1, -1}).to(x.scalar_type()), x}, 1);
  return x + pos_embed.slice(1, 0, x.size(1));
}

std::pair<at::Tensor, at::Tensor> VisionTransformerImpl::run_blocks(at::Tensor x, int64_t begin, int64_t end,
                                                                   nn::LayerNormImpl* then_norm) {
  auto block = [&](int64_t i) { return blocks[i]->as<VitBlock>(); };
  nn::LayerNormImpl* first_norm = begin < end ? block(begin)->norm1.get() : then_norm;
  at::Tensor normed = first_norm != nullptr ? ops::layer_norm_for_products(x, *first_norm) : at::Tensor();
  for (int64_t i = begin; i < end; ++i) {
    nn::LayerNormImpl* next_norm = i + 1 < end ? block(i + 1)->norm1.get() : then_norm;
    std::tie(x, normed) = block(i)->forward_chained(std::move(x), std::move(normed), next_norm);
  }
  return {x, normed};
}

at::Tensor VisionTransformerImpl::forward_blocks(at::Tensor x, int64_t begin, int64_t end) {
  ALBEF_CHECK(0 <= begin && begin <= end && end <= static_cast<int64_t>(blocks->size()), "ViT blocks [", begin, ", ",
              end, ") are outside [0, ", blocks->size(), ")");
  if (begin == end) return x;
  return run_blocks(std::move(x), begin, end, nullptr).first;
}

at::Tensor VisionTransformerImpl::forward(const at::Tensor& image, const at::Tensor& masked_patches) {
  return norm->forward(forward_blocks(embed(image, masked_patches), 0, static_cast<int64_t>(blocks->size())));
}

at::Tensor VisionTransformerImpl::forward_class_token(const at::Tensor& image) {
  const auto depth = static_cast<int64_t>(blocks->size());
  if (depth == 0) return norm->forward(embed(image).slice(1, 0, 1));
  VitBlockImpl& last = *blocks[depth - 1]->as<VitBlock>();
  const auto [x, normed] = run_blocks(embed(image), 0, depth - 1, last.norm1.get());
  return norm->forward(last.forward_class_token(x, normed));
}

void VisionTransformerImpl::init_weights() {
  at::NoGradGuard no_grad;
  auto trunc_normal = [](at::Tensor t) {
    // timm's trunc_normal_(std=.02): normal(0, .02) truncated to [-2, 2] (absolute bounds).
    t.normal_(0.0, 0.02).clamp_(-2.0, 2.0);
  };
  trunc_normal(pos_embed);
  trunc_normal(cls_token);
  for (const auto& module : modules(/*include_self=*/false)) {
    if (auto* linear = module->as<nn::Linear>()) {
      trunc_normal(linear->weight);
      linear->bias.zero_();
    } else if (auto* layer_norm = module->as<nn::LayerNorm>()) {
      layer_norm->weight.fill_(1.0);
      layer_norm->bias.zero_();
    }
  }
}

at::Tensor interpolate_pos_embed(const at::Tensor& pos_embed, int64_t num_patches) {
  ALBEF_CHECK(pos_embed.dim() == 3 && pos_embed.size(0) == 1, "pos_embed must be [1, N, C], got ", pos_embed.sizes());
  const int64_t extra = 1;  // the CLS token
  const auto old_size = static_cast<int64_t>(std::sqrt(static_cast<double>(pos_embed.size(1) - extra)));
  const auto new_size = static_cast<int64_t>(std::sqrt(static_cast<double>(num_patches)));
  if (old_size == new_size) return pos_embed;
  const int64_t width = pos_embed.size(2);
  const at::Tensor cls = pos_embed.slice(1, 0, extra);
  at::Tensor grid = pos_embed.slice(1, extra).reshape({1, old_size, old_size, width}).permute({0, 3, 1, 2});
  grid = at::upsample_bicubic2d(grid.to(at::kFloat), {new_size, new_size}, /*align_corners=*/false)
             .to(pos_embed.scalar_type());
  return at::cat({cls, grid.permute({0, 2, 3, 1}).flatten(1, 2)}, 1);
}

}  // namespace albef
