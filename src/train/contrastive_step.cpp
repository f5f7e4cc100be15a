#include "train/contrastive_step.h"

#include "albef/core/error.h"
#include "albef/core/runtime.h"
#include "albef/model/itm.h"
#include "ops/linear.h"

#include <ATen/ATen.h>

#include <memory>
#include <tuple>

namespace albef {
namespace {

// Soft cross-entropy: -sum(log_softmax(logits) * targets, dim=1).mean()
at::Tensor soft_cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  return -(at::log_softmax(logits, 1) * targets).sum(1).mean();
}

// One index per row, drawn from the row's (unnormalised) weights.
at::Tensor sample_rows(const at::Tensor& weights) { return at::multinomial(weights, 1).squeeze(1); }

}  // namespace

std::pair<at::Tensor, at::Tensor> match_pairs(AlbefModel& model, const at::Tensor& fusion_text,
                                              const at::Tensor& attention_mask, FusionImages& images,
                                              const at::Tensor& fused_pos, const at::Tensor& neg_image_idx,
                                              const at::Tensor& neg_text_idx) {
  const int64_t batch = fusion_text.size(0);
  // Official pairs: (text, image_neg) then (text_neg, image). The images are
  // picked as rows of the batch's keys and values instead of copied tokens.
  const at::Tensor text_neg = fusion_text.index_select(0, neg_text_idx);
  const at::Tensor text_atts_neg = attention_mask.index_select(0, neg_text_idx);
  const at::Tensor image_rows = at::cat({neg_image_idx, at::arange(batch, neg_image_idx.options())});
  const at::Tensor fused_neg = model->fuse(at::cat({fusion_text, text_neg}),
                                           at::cat({attention_mask, text_atts_neg}), images, image_rows);
  const at::Tensor logits = itm_logits(model, at::cat({fused_pos.select(1, 0), fused_neg.select(1, 0)}).unsqueeze(1));
  const at::Tensor labels =
      at::cat({at::ones({batch}, at::kLong), at::zeros({2 * batch}, at::kLong)}).to(fusion_text.device());
  return {logits, at::cross_entropy_loss(logits.to(at::kFloat), labels)};
}

void momentum_update(AlbefModel& model, double momentum) {
  at::NoGradGuard no_grad;
  for (auto& [online, averaged] : model->momentum_pairs()) averaged.mul_(momentum).add_(online, 1.0 - momentum);
}

void dequeue_and_enqueue(AlbefModel& model, const at::Tensor& image_feat, const at::Tensor& text_feat,
                         const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  const int64_t batch = image_feat.size(0);
  const int64_t queue_size = model->image_queue.size(1);
  ALBEF_CHECK(queue_size % batch == 0, "queue_size ", queue_size, " must be a multiple of the (global) batch ", batch);
  const int64_t ptr = model->queue_ptr.item<int64_t>();
  model->image_queue.slice(1, ptr, ptr + batch).copy_(image_feat.t());
  model->text_queue.slice(1, ptr, ptr + batch).copy_(text_feat.t());
  if (ids.defined()) model->idx_queue.slice(1, ptr, ptr + batch).copy_(ids.view({1, -1}));
  model->queue_ptr.fill_((ptr + batch) % queue_size);
}

ContrastiveEncoding contrast_and_match(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                                       const at::Tensor& attention_mask, double alpha, const at::Tensor& image_ids,
                                       bool distill, const StepChoices* injected, const FeatureGather& gather,
                                       StepOutputs& out) {
  const Config& config = model->config();
  const int64_t batch = images.size(0);
  ALBEF_CHECK(batch >= 2, "hard-negative mining needs a batch of at least 2, got ", batch);
  ALBEF_CHECK(input_ids.size(0) == batch, "batch of ", batch, " images but ", input_ids.size(0), " texts");
  ALBEF_CHECK(model->options().momentum_encoders && model->options().contrastive && model->has_head("itm_head"),
              "ITC and ITM need momentum encoders, the contrastive projections and itm_head");
  ContrastiveEncoding encoded;
  const at::Tensor image_embeds = model->encode_image(images);
  encoded.images = std::make_unique<FusionImages>(image_embeds, /*keep_key_values=*/true);
  encoded.image_feat = model->image_feature(image_embeds);
  const at::Tensor& image_feat = encoded.image_feat;
  const at::Tensor text_embeds = model->encode_text(input_ids, attention_mask);
  const at::Tensor text_feat = model->text_feature(text_embeds);

  // Positive targets over [batch | queue]: the diagonal, or every entry of the same image.
  at::Tensor positives;
  const at::Tensor ids = image_ids.defined() ? image_ids.view({-1, 1}).to(images.device()) : at::Tensor();
  if (ids.defined()) {
    const at::Tensor all_ids = at::cat({ids.t(), model->idx_queue.clone()}, 1);
    positives = ids.eq(all_ids).to(at::kFloat);
    positives = positives / positives.sum(1, true);
  }

  at::Tensor image_feat_all, text_feat_all;
  {
    at::NoGradGuard no_grad;
    momentum_update(model, config.momentum);  // before the momentum features, as the official forward
    encoded.image_embeds_m = model->visual_encoder_m->forward(images);
    out.image_feat_m = l2_normalize(ops::linear(*model->vision_proj_m, encoded.image_embeds_m.select(1, 0)).to(at::kFloat));
    image_feat_all = at::cat({out.image_feat_m.t(), model->image_queue.clone()}, 1);
    const at::Tensor text_embeds_m = model->text_bert_m()->forward_text(input_ids, attention_mask);
    out.text_feat_m = l2_normalize(ops::linear(*model->text_proj_m, text_embeds_m.select(1, 0)).to(at::kFloat));
    text_feat_all = at::cat({out.text_feat_m.t(), model->text_queue.clone()}, 1);
    AutocastOff fp32;  // bf16 logits (steps of 1/16 near 1/temp) would drown ITC's signal
    if (!positives.defined()) {
      positives = at::zeros({batch, text_feat_all.size(1)}, image_feat_all.options());
      positives.diagonal().fill_(1.0);
    }
    out.sim_i2t_targets = positives;
    out.sim_t2i_targets = positives;
    if (distill) {
      const at::Tensor sim_i2t_m = at::matmul(out.image_feat_m, text_feat_all) / model->temp;
      const at::Tensor sim_t2i_m = at::matmul(out.text_feat_m, image_feat_all) / model->temp;
      out.sim_i2t_targets = alpha * at::softmax(sim_i2t_m, 1) + (1.0 - alpha) * positives;
      out.sim_t2i_targets = alpha * at::softmax(sim_t2i_m, 1) + (1.0 - alpha) * positives;
    }
  }
  {
    AutocastOff fp32;
    out.sim_i2t = at::matmul(image_feat, text_feat_all) / model->temp;
    out.sim_t2i = at::matmul(text_feat, image_feat_all) / model->temp;
  }
  out.loss_ita = (soft_cross_entropy(out.sim_i2t, out.sim_i2t_targets) +
                  soft_cross_entropy(out.sim_t2i, out.sim_t2i_targets)) / 2;

  auto gathered = [&gather](const at::Tensor& x) { return gather ? gather(x) : x; };
  dequeue_and_enqueue(model, gathered(out.image_feat_m), gathered(out.text_feat_m),
                      ids.defined() ? gathered(ids.view({-1})) : at::Tensor());

  // ITM: the positive pairs, then one hard negative image per text and one
  // hard negative text per image, drawn from the in-batch similarities.
  const at::Tensor& fusion_text = model->fusion_input(input_ids, text_embeds);
  const at::Tensor fused_pos = model->fuse(fusion_text, attention_mask, *encoded.images);
  if (injected) {
    out.choices.neg_image_idx = injected->neg_image_idx.to(images.device());
    out.choices.neg_text_idx = injected->neg_text_idx.to(images.device());
  } else {
    at::NoGradGuard no_grad;
    // The retrieval model adds 1e-4 before the softmax; the pretraining one does not.
    const double shift = ids.defined() ? 1e-4 : 0.0;
    const at::Tensor weights_i2t = at::softmax(out.sim_i2t.slice(1, 0, batch) + shift, 1);
    const at::Tensor weights_t2i = at::softmax(out.sim_t2i.slice(1, 0, batch) + shift, 1);
    const at::Tensor same = ids.defined() ? ids.eq(ids.t()) : at::eye(batch, at::TensorOptions().dtype(at::kBool));
    weights_i2t.masked_fill_(same.to(weights_i2t.device()), 0.0);
    weights_t2i.masked_fill_(same.to(weights_t2i.device()), 0.0);
    out.choices.neg_image_idx = sample_rows(weights_t2i);
    out.choices.neg_text_idx = sample_rows(weights_i2t);
  }
  std::tie(out.itm_logits, out.loss_itm) = match_pairs(model, fusion_text, attention_mask, *encoded.images, fused_pos,
                                                      out.choices.neg_image_idx, out.choices.neg_text_idx);
  return encoded;
}

}  // namespace albef
