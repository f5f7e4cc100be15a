#include "tasks/pretrain/grit_step.h"

#include "albef/core/error.h"
#include "albef/core/runtime.h"

#include <ATen/ATen.h>

#include <tuple>

namespace albef {
namespace {

// -sum(log_softmax(logits) * targets, dim=1).mean()
at::Tensor soft_cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  return -(at::log_softmax(logits, 1) * targets).sum(1).mean();
}

// The official hard negative of every row: the most similar other pair,
// torch.topk(softmax(sim)[b] with the diagonal zeroed, 1).
at::Tensor argmax_negatives(const at::Tensor& sim) {
  at::NoGradGuard no_grad;
  at::Tensor weights = at::softmax(sim, 1);
  weights.fill_diagonal_(0.0);
  return std::get<1>(weights.topk(1, 1)).squeeze(1);
}

}  // namespace

GritStepOutputs grit_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                             const at::Tensor& attention_mask, const MlmTokenIds& tokens, const StepChoices* injected) {
  const ModelOptions& options = model->options();
  ALBEF_CHECK(options.text_encoder == TextEncoderLayout::MaskedLM && options.contrastive && model->has_head("itm_head"),
              "GRIT pretraining needs the MaskedLM text encoder, the contrastive projections and itm_head "
              "(pretrain_model_options(false))");
  ALBEF_CHECK(!options.momentum_encoders, "GRIT pretraining trains without momentum encoders");
  const int64_t batch = images.size(0);
  ALBEF_CHECK(batch >= 2, "hard-negative mining needs a batch of at least 2, got ", batch);
  ALBEF_CHECK(input_ids.size(0) == batch, "batch of ", batch, " images but ", input_ids.size(0), " texts");
  const Config& config = model->config();
  {
    at::NoGradGuard no_grad;
    model->temp.clamp_(0.001, 0.5);
  }
  GritStepOutputs out;
  const at::Tensor image_embeds = model->encode_image(images);
  FusionImages fusion_images(image_embeds, /*keep_key_values=*/true);
  const at::Tensor image_feat = model->image_feature(image_embeds);
  const at::Tensor text_embeds = model->encode_text(input_ids, attention_mask);
  const at::Tensor text_feat = model->text_feature(text_embeds);
  out.image_feat = image_feat.detach();
  out.text_feat = text_feat.detach();

  // ITC within the batch: each direction's gradient reaches only its own
  // side (the other side's features are detached); temp gets both.
  {
    AutocastOff fp32;  // bf16 logits (steps of 1/16 near 1/temp) would drown ITC's signal
    out.sim_i2t = at::matmul(image_feat, out.text_feat.t()) / model->temp;
    out.sim_t2i = at::matmul(text_feat, out.image_feat.t()) / model->temp;
  }
  const at::Tensor targets = at::eye(batch, out.sim_i2t.options().requires_grad(false));
  out.loss_i2t = soft_cross_entropy(out.sim_i2t, targets);
  out.loss_t2i = soft_cross_entropy(out.sim_t2i, targets);
  // Consistency: image i's distribution over the texts is pulled toward
  // text i's distribution over the images (row i of the other direction).
  out.loss_c_i2t = soft_cross_entropy(out.sim_i2t, at::softmax(out.sim_t2i.detach(), 1));
  out.loss_c_t2i = soft_cross_entropy(out.sim_t2i, at::softmax(out.sim_i2t.detach(), 1));
  out.loss_ita = (out.loss_i2t + out.loss_t2i) / 2 + kGritConsistencyWeight * (out.loss_c_i2t + out.loss_c_t2i) / 2;

  // ITM: the positives, then each text's and each image's most similar
  // other pair of the batch as its negative.
  const at::Tensor fused_pos = model->fuse(text_embeds, attention_mask, fusion_images);
  out.choices.neg_image_idx = argmax_negatives(out.sim_t2i);
  out.choices.neg_text_idx = argmax_negatives(out.sim_i2t);
  std::tie(out.itm_logits, out.loss_itm) = match_pairs(model, text_embeds, attention_mask, fusion_images, fused_pos,
                                                       out.choices.neg_image_idx, out.choices.neg_text_idx);

  // MLM: plain cross-entropy over the masked tokens (no distillation), the
  // 30522-wide head run on those tokens alone.
  choose_mlm_masks(input_ids, config.mlm_probability, config.bert.vocab_size, tokens, injected, out.choices);
  const at::Tensor flat_labels = out.choices.mlm_labels.reshape({-1});
  const at::Tensor positions = (flat_labels != -100).nonzero().view({-1});
  const at::Tensor logits =
      model->mlm_logits(out.choices.masked_input_ids, attention_mask, fusion_images, positions).to(at::kFloat);
  // No token drawn for masking (possible with tiny batches): the official
  // loss would be NaN; contribute nothing instead.
  out.loss_mlm = positions.numel() > 0 ? at::cross_entropy_loss(logits, flat_labels.index_select(0, positions))
                                       : logits.sum() * 0.0;
  return out;
}

}  // namespace albef
