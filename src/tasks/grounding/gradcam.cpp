// Grad-CAM as Grounding.py's val() computes it, differentiating only what
// the map needs.

#include "albef/core/error.h"
#include "albef/model/itm.h"
#include "albef/tasks/grounding.h"
#include "albef/tasks/retrieval.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

namespace albef {
namespace {

// Turns attention recording on for one scope (and off again on any exit, so
// later forwards take the fused kernel).
template <typename Attention>
class Recording {
 public:
  explicit Recording(Attention& attention) : attention_(attention) { attention_.save_attention(true); }
  ~Recording() { attention_.save_attention(false); }
  Recording(const Recording&) = delete;
  Recording& operator=(const Recording&) = delete;

 private:
  Attention& attention_;
};

int64_t grid_side(const AlbefModelImpl& model) {
  const int64_t patches = model.visual_encoder->num_patches();
  const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(patches))));
  ALBEF_CHECK(side * side == patches, "Grad-CAM needs a square patch grid, the model has ", patches, " patches");
  return side;
}

// The recorded probabilities and d score / d probabilities, without weight
// gradients: autograd computes only the paths that reach `probabilities`, a
// leaf (the layers below it ran without gradients).
Gradcam recorded(const at::Tensor& score, const at::Tensor& probabilities) {
  ALBEF_CHECK(probabilities.defined() && probabilities.requires_grad(),
              "the attention of the Grad-CAM block was not recorded");
  Gradcam out;
  out.gradients = torch::autograd::grad({score}, {probabilities})[0].to(at::kFloat);
  out.attention = probabilities.detach().to(at::kFloat);
  return out;
}

Gradcam itm_gradcam(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                    const at::Tensor& attention_mask, int64_t block) {
  BertModel& bert = model->text_bert();
  const int64_t batch = images.size(0), length = input_ids.size(1), side = grid_side(*model);
  BertSelfAttentionImpl& attention = *bert->layer[block]->as<BertLayer>()->crossattention->self;

  at::Tensor hidden, image_embeds;
  {
    at::NoGradGuard no_grad;
    image_embeds = model->visual_encoder->forward(images);
    FusionImages below(image_embeds);
    // The single-stream BERT (SIMLA's Grounding.py, mode 'multimodal') cross-attends from its first layer on.
    const at::Tensor text = bert->config().single_stream ? bert->embeddings->forward(input_ids)
                                                         : bert->forward_text(input_ids, attention_mask);
    hidden = bert->forward_fusion_layers(text, attention_mask, below, bert->config().fusion_layer, block);
  }
  at::Tensor probabilities, score;
  {
    at::AutoGradMode with_grad(true);
    const Recording<BertSelfAttentionImpl> recording(attention);
    FusionImages from_block(image_embeds);
    const at::Tensor fused = bert->forward_fusion_layers(hidden, attention_mask, from_block, block,
                                                         bert->config().num_hidden_layers);
    score = itm_logits(model, fused).select(1, 1).sum();
    probabilities = attention.attention_map();
  }
  Gradcam out = recorded(score, probabilities);
  at::NoGradGuard no_grad;
  const int64_t heads = out.attention.size(1);
  const at::Tensor mask = attention_mask.to(at::kFloat).view({batch, 1, length, 1, 1});
  const at::Tensor cams = out.attention.slice(3, 1).reshape({batch, heads, length, side, side}) * mask;
  const at::Tensor grads =
      out.gradients.slice(3, 1).clamp_min(0).reshape({batch, heads, length, side, side}) * mask;
  out.token_maps = (cams * grads).mean(1);
  out.maps = out.token_maps.mean(1);
  return out;
}

Gradcam itc_gradcam(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                    const at::Tensor& attention_mask, int64_t block) {
  VisionTransformerImpl& vit = *model->visual_encoder;
  const int64_t batch = images.size(0), side = grid_side(*model);
  VitAttentionImpl& attention = *vit.blocks[block]->as<VitBlock>()->attn;

  at::Tensor text_feat, below;
  {
    at::NoGradGuard no_grad;
    text_feat = model->encode_text_features(input_ids, attention_mask);
    below = vit.forward_blocks(vit.embed(images), 0, block);
  }
  at::Tensor probabilities, score;
  {
    at::AutoGradMode with_grad(true);
    const Recording<VitAttentionImpl> recording(attention);
    const at::Tensor tokens = vit.norm->forward(vit.forward_blocks(below, block, static_cast<int64_t>(vit.blocks->size())));
    const at::Tensor similarity = at::matmul(model->image_feature(tokens), text_feat.t()) / model->temp.to(at::kFloat);
    score = similarity.diagonal().sum();
    probabilities = attention.attention_map();
  }
  Gradcam out = recorded(score, probabilities);
  at::NoGradGuard no_grad;
  const int64_t heads = out.attention.size(1);
  const at::Tensor cam = out.attention.select(2, 0).slice(2, 1).reshape({batch, heads, side, side});
  const at::Tensor grad = out.gradients.select(2, 0).slice(2, 1).reshape({batch, heads, side, side}).clamp_min(0);
  out.maps = (cam * grad).mean(1);
  return out;
}

}  // namespace

GradcamMode parse_gradcam_mode(const std::string& name, const std::string& flag) {
  if (name == "itm") return GradcamMode::Itm;
  if (name == "itc") return GradcamMode::Itc;
  fail(flag, " must be itm or itc, got '", name, "'");
}

const char* gradcam_mode_name(GradcamMode mode) { return mode == GradcamMode::Itm ? "itm" : "itc"; }

void check_gradcam_block(const Config& config, const GradcamOptions& options, const std::string& flag) {
  if (options.mode == GradcamMode::Itm) {
    const BertConfig& bert = config.bert;
    if (options.block_num < bert.fusion_layer || options.block_num >= bert.num_hidden_layers)
      fail(flag, " ", options.block_num, " is not a fusion layer of this model: itm Grad-CAM reads the cross-attention "
           "of a layer in ", bert.fusion_layer, "..", bert.num_hidden_layers - 1, " (8 in Grounding.py)");
  } else {
    const int64_t depth = config.vision.depth;
    if (options.block_num < 0 || options.block_num >= depth)
      fail(flag, " ", options.block_num, " is not a ViT block of this model: itc Grad-CAM reads ViT block 0..", depth - 1);
  }
}

Gradcam compute_gradcam(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                        const at::Tensor& attention_mask, const GradcamOptions& options) {
  check_gradcam_block(model->config(), options);
  ALBEF_CHECK(!model->is_training(), "Grad-CAM runs the model in eval mode (no dropout)");
  ALBEF_CHECK(images.dim() == 4 && input_ids.dim() == 2 && input_ids.sizes() == attention_mask.sizes() &&
                  images.size(0) == input_ids.size(0),
              "Grad-CAM needs images [B, 3, R, R] and token ids and mask [B, L], got ", images.sizes(), ", ",
              input_ids.sizes(), " and ", attention_mask.sizes());
  ALBEF_CHECK(model->options().images_per_text == 1, "Grad-CAM reads models with one image per text");
  if (options.mode == GradcamMode::Itm) {
    ALBEF_CHECK(model->has_head("itm_head"), "itm Grad-CAM needs the ITM head (itm_head)");
    return itm_gradcam(model, images, input_ids, attention_mask, options.block_num);
  }
  ALBEF_CHECK(model->options().contrastive, "itc Grad-CAM needs the contrastive projections");
  return itc_gradcam(model, images, input_ids, attention_mask, options.block_num);
}

ModelOptions grounding_model_options(bool momentum_encoders) { return retrieval_model_options(momentum_encoders); }

}  // namespace albef
