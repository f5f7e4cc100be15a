#pragma once
// What NLVR2 and SNLI-VE share (models/model_nlvr.py, models/model_ve.py):
// the classifier on the fused [CLS] state, its loss with momentum
// distillation, and evaluation that reports accuracy and keeps every
// prediction.

#include "albef/model/albef.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace albef::classification {

/// `cls_head` (with `cls_head_m` when the model has momentum encoders):
/// nn.Sequential(Linear(H, H), ReLU, Linear(H, classes)), so its entries are
/// `cls_head.0.*` and `cls_head.2.*`; PyTorch's default Linear init.
HeadSpec classifier_head(int64_t classes);

/// The head's logits [B, classes] from fused states [B, L, H] (their [CLS]
/// token); `head` is "cls_head" or "cls_head_m".
at::Tensor classify(AlbefModel& model, const std::string& head, const at::Tensor& fused_states);

/// The official loss: with `prediction_m` (the momentum model's logits),
/// (1 - alpha) * CE(prediction, targets) - alpha * mean_b sum_c
/// log_softmax(prediction) * softmax(prediction_m); without it, CE alone.
at::Tensor distilled_loss(const at::Tensor& prediction, const at::Tensor& prediction_m, const at::Tensor& targets,
                          double alpha);

/// The logits of one evaluated split and the labels they are scored against.
struct SplitPredictions {
  at::Tensor logits;   ///< [N, classes] float32, in annotation-file order
  at::Tensor targets;  ///< [N] int64
  /// The official metric: the fraction of argmax(logits) == targets (the
  /// scripts average per-batch accuracies weighted by batch size: the same).
  double accuracy() const;
};

/// `<split>_predictions.json`: a list in file order of {"prediction": argmax
/// class (the dataset's numbering), "probabilities": softmax(logits)},
/// written atomically.
void write_predictions(const std::string& path, const at::Tensor& logits);

/// The rows of `rows` that rank `rank` of `world_size` evaluates (contiguous
/// shares, so their logits add up to the whole split).
std::pair<int64_t, int64_t> share_of(int64_t rows, int rank, int world_size);

}  // namespace albef::classification

namespace albef::classification {

/// The fused states [B, L, H] of B texts over their images through the
/// online (or momentum) encoders: `images` [k * B, 3, R, R] holds k =
/// images_per_text images per text as the scripts concatenate them (all
/// first images, then all second ones); text_encoder runs in xbert's
/// multi_modal mode, fusion layer i reading image chunk (i - fusion_layer) % k.
at::Tensor fuse_items(AlbefModel& model, bool momentum, const at::Tensor& images, const at::Tensor& input_ids,
                      const at::Tensor& attention_mask);

/// One training forward of model_nlvr.py / model_ve.py.
struct TrainOutputs {
  at::Tensor loss;               ///< distilled_loss
  at::Tensor prediction;         ///< [B, classes]
  at::Tensor prediction_m;       ///< [B, classes] with distillation, else undefined
  at::Tensor last_hidden_state;  ///< [B, L, H]
};

/// With `distill` the momentum encoders are updated first (inside the
/// forward, after the online pass, as the official code) and their logits
/// are the soft targets (weight alpha).
TrainOutputs train_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                           const at::Tensor& attention_mask, const at::Tensor& targets, double alpha, bool distill);

}  // namespace albef::classification
