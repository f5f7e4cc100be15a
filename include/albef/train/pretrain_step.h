#pragma once
/// @file pretrain_step.h
/// @brief One training forward pass of ALBEF: pretraining
/// (models/model_pretrain.py: ITC with momentum distillation and feature
/// queues, ITM with hard negatives, MLM with distillation) and retrieval
/// fine-tuning (models/model_retrieval.py: the same ITC and ITM, with pairs
/// sharing an image id all positive); momentum update and queue update in
/// the official order.

#include "albef/model/albef.h"

#include <functional>
#include <optional>

namespace albef {

/// Random choices of one step, drawn from the generator unless given
/// (tests inject the official run's choices here).
struct StepChoices {
  at::Tensor masked_input_ids;  ///< [B, L] ids after MLM masking
  at::Tensor mlm_labels;        ///< [B, L] original ids at masked positions, -100 elsewhere
  at::Tensor neg_image_idx;     ///< [B] hard-negative image per text
  at::Tensor neg_text_idx;      ///< [B] hard-negative text per image
};

/// Losses and the intermediates tests and logs look at.
struct StepOutputs {
  at::Tensor loss_ita, loss_itm, loss_mlm;  ///< loss_mlm: pretraining only
  at::Tensor image_feat_m, text_feat_m;      ///< momentum features of the batch (enqueued)
  at::Tensor sim_i2t, sim_t2i;               ///< [B, B + queue] online similarities / temp
  at::Tensor sim_i2t_targets, sim_t2i_targets;
  at::Tensor itm_logits;                     ///< [3B, 2]
  StepChoices choices;                   ///< what was drawn (or injected)
};

/// Special token ids the MLM masking needs (from the tokenizer).
struct MlmTokenIds {
  int64_t pad = 0, cls = 101, mask = 103;
};

/// Gathers the momentum features of every rank before they enter the queue
/// (identity on one process). Distributed training installs all_gather here.
using FeatureGather = std::function<at::Tensor(const at::Tensor&)>;

/// Runs the official pretraining forward on a batch and updates the momentum
/// encoders and the queues. `alpha` is the distillation weight of this step.
/// `injected` overrides the random choices (test seam). The model must be a
/// Pretrain-kind model with momentum encoders.
StepOutputs pretrain_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                                 const at::Tensor& attention_mask, double alpha, const MlmTokenIds& tokens,
                                 const StepChoices* injected = nullptr, const FeatureGather& gather = {});

/// Runs the official retrieval fine-tuning forward (Retrieval model kind
/// with momentum encoders): `image_ids` [B] (the contiguous image index of
/// each pair) makes every pair of the same image a positive in ITC (also
/// against the id queue) and excludes it from hard-negative sampling.
/// `distill` mixes in the momentum model's similarities with weight alpha.
StepOutputs retrieval_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                              const at::Tensor& attention_mask, double alpha, const at::Tensor& image_ids,
                              bool distill, const StepChoices* injected = nullptr, const FeatureGather& gather = {});

/// The official MLM masking: 15% of tokens (never [PAD]=0 or [CLS]), of which
/// 80% become [MASK], 10% a random token, 10% stay. Returns {ids, labels}.
std::pair<at::Tensor, at::Tensor> mask_tokens(const at::Tensor& input_ids, double probability, int64_t vocab_size,
                                              const MlmTokenIds& tokens);

/// `param_m = param_m * m + param * (1 - m)` for every momentum pair.
void momentum_update(AlbefModel& model, double momentum);

/// Writes the batch's (gathered) momentum features at queue_ptr and advances
/// it, as `_dequeue_and_enqueue`; `ids` also fills idx_queue when given.
void dequeue_and_enqueue(AlbefModel& model, const at::Tensor& image_feat, const at::Tensor& text_feat,
                         const at::Tensor& ids = {});

}  // namespace albef
