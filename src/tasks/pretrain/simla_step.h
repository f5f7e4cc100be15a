#pragma once
// One SIMLA pretraining forward pass (models/simla/pretrain.py of
// codezakh/SIMLA) on the single-stream BERT: ALBEF's ITC and ITM (the ITM
// pairs fused from their words), MLM with distillation, masked image
// modelling (MIM: the masked ViT's tokens run through the text BERT against
// the words' embeddings, predicting the dVAE's visual tokens) and
// pseudo-keyword prediction (PSL: keywords the momentum model's [CLS]
// attends to, predicted from the image feature).
//
// Official quirks kept (docs/simla.md): MLM distillation's log-softmax runs
// over the sequence axis; the keywords are read from the last layer (the
// official hard-codes 11, BERT-base's last); CPU topk decides ties in the
// keyword vote.

#include "tasks/pretrain/step.h"

namespace albef {

/// What MIM needs of a batch's images: which patches are masked and the
/// dVAE's token of every patch (row-major, the ViT's patch order).
struct SimlaImageTargets {
  at::Tensor masked_patches;    ///< [B, P] bool (or uint8), 1 = masked
  at::Tensor visual_token_ids;  ///< [B, P] int64 in [0, 8192)
};

/// Keywords per caption (pretrain.py's topk(5)) and picks per attention
/// head (num_concepts_per_head).
constexpr int64_t kSimlaKeywords = 5;
constexpr int64_t kSimlaPicksPerHead = 4;

/// Losses, their parts and what was chosen.
struct SimlaStepOutputs {
  StepOutputs step;  ///< ITC, ITM, MLM (loss_ita, loss_itm, loss_mlm) and ALBEF's intermediates
  at::Tensor loss_mim;     ///< undefined when MIM is off (no targets given)
  at::Tensor loss_pseudo;  ///< PSL
  /// loss_mlm = (1 - alpha) mlm_ce + alpha mlm_distill; likewise MIM and PSL.
  at::Tensor mlm_ce, mlm_distill, mim_ce, mim_distill, pseudo_hard, pseudo_soft;
  at::Tensor keyword_counts;     ///< [B, L] votes per position (heads x picks)
  at::Tensor keyword_positions;  ///< [B, 5] chosen (or injected) positions
  at::Tensor keyword_targets;    ///< [B, vocab] multi-hot, [CLS] column zeroed
};

/// Test seam: the official run's random and tie-broken choices.
struct SimlaChoices {
  StepChoices step;              ///< MLM masks and ITM negatives
  at::Tensor keyword_positions;  ///< [B, 5]; undefined: chosen here
};

/// The official SIMLA forward on one batch. `targets` undefined (both
/// tensors) turns MIM off. Updates the momentum encoders and heads and the
/// queues. The model must be simla_model_options()'s.
SimlaStepOutputs simla_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                               const at::Tensor& attention_mask, const SimlaImageTargets& targets, double alpha,
                               const MlmTokenIds& tokens, const SimlaChoices* injected = nullptr,
                               const FeatureGather& gather = {});

}  // namespace albef
