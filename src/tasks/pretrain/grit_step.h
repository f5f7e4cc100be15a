#pragma once
// One GRIT-VLP pretraining forward pass (models/model_pretrain_GRIT_VLP.py
// of jaeseokbyun/GRIT-VLP): ALBEF's online model without momentum encoders
// or queues. ITC within the batch against detached features, plus the
// 0.2-weighted consistency term; ITM with the most similar in-batch pair as
// the negative (argmax, no sampling); MLM without distillation.

#include "tasks/pretrain/step.h"

namespace albef {

/// Losses and the intermediates tests, logs and the grouped sampler read.
struct GritStepOutputs {
  at::Tensor loss_mlm, loss_ita, loss_itm;
  /// loss_ita = (loss_i2t + loss_t2i) / 2 + 0.2 * (loss_c_i2t + loss_c_t2i) / 2.
  at::Tensor loss_i2t, loss_t2i, loss_c_i2t, loss_c_t2i;
  at::Tensor image_feat, text_feat;  ///< [B, embed_dim], detached: what the grouped sampler collects
  at::Tensor sim_i2t, sim_t2i;       ///< [B, B] / temp
  at::Tensor itm_logits;             ///< [3B, 2]
  StepChoices choices;               ///< the MLM masks drawn (or injected) and the argmax negatives
};

/// GRIT's consistency weight in loss_ita (model_pretrain_GRIT_VLP.py:85).
constexpr double kGritConsistencyWeight = 0.2;

/// The official GRIT forward on one batch; the MLM masking probability is
/// config.mlm_probability (0.5 in GRIT's Pretrain.yaml). `injected` gives
/// the MLM masks (its negatives are ignored: they are argmax picks, not
/// draws). The model must have the MaskedLM text encoder, the contrastive
/// projections and itm_head, and no momentum encoders
/// (pretrain_model_options(false)).
GritStepOutputs grit_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                             const at::Tensor& attention_mask, const MlmTokenIds& tokens,
                             const StepChoices* injected = nullptr);

}  // namespace albef
