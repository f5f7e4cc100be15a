#pragma once
/// @file contrastive_step.h
/// @brief The part of a training step that pretraining and retrieval
/// fine-tuning share (models/model_pretrain.py, model_retrieval.py): ITC
/// against the momentum features and the queues with optional distillation,
/// the queue update, and ITM with in-batch hard negatives; the momentum
/// update in the official order. Each task adds its own losses
/// (tasks/pretrain: MLM).

#include "albef/model/albef.h"
#include "albef/train/trainer.h"

#include <memory>
#include <utility>

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
  StepChoices choices;                       ///< what was drawn (or injected)
};

/// What ITC and ITM hand on to a task's further losses: the online images'
/// cross-attention keys and values (pretraining's MLM pass reuses them) and
/// the momentum image tokens.
struct ContrastiveEncoding {
  std::unique_ptr<FusionImages> images;
  at::Tensor image_feat;  ///< the online image features (SIMLA's keyword head reads them)
  at::Tensor image_embeds_m;
};

/// ITC (momentum features, queues, distillation when `distill`), the queue
/// update and ITM with one hard negative image per text and one hard
/// negative text per image, filling out.loss_ita, out.loss_itm and the
/// intermediates. `image_ids` undefined: pretraining (each pair its own
/// positive); defined ([B], the contiguous image index of each pair):
/// retrieval (pairs of one image are all positives, also against the id
/// queue, and never each other's negatives). `injected` overrides the
/// random choices (test seam). The model needs momentum encoders, the
/// contrastive projections and the ITM head.
ContrastiveEncoding contrast_and_match(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                                       const at::Tensor& attention_mask, double alpha, const at::Tensor& image_ids,
                                       bool distill, const StepChoices* injected, const FeatureGather& gather,
                                       StepOutputs& out);

/// ITM on the batch's positives (`fused_pos`, the fusion of each text with
/// its image), then the official negatives: (text b, image neg_image_idx[b])
/// and (text neg_text_idx[b], image b). `fusion_text` is what the model's
/// `fuse` reads (AlbefModelImpl::fusion_input). Returns {logits [3B, 2], the
/// cross-entropy against [1]*B + [0]*2B}.
std::pair<at::Tensor, at::Tensor> match_pairs(AlbefModel& model, const at::Tensor& fusion_text,
                                              const at::Tensor& attention_mask, FusionImages& images,
                                              const at::Tensor& fused_pos, const at::Tensor& neg_image_idx,
                                              const at::Tensor& neg_text_idx);

/// `param_m = param_m * m + param * (1 - m)` for every momentum pair.
void momentum_update(AlbefModel& model, double momentum);

/// Writes the batch's (gathered) momentum features at queue_ptr and advances
/// it, as `_dequeue_and_enqueue`; `ids` also fills idx_queue when given.
void dequeue_and_enqueue(AlbefModel& model, const at::Tensor& image_feat, const at::Tensor& text_feat,
                         const at::Tensor& ids = {});

}  // namespace albef
