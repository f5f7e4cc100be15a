#pragma once
// One retrieval fine-tuning forward pass (models/model_retrieval.py): ITC and
// ITM as train/contrastive_step, with every pair of the same image a positive.

#include "train/contrastive_step.h"

namespace albef {

/// Runs the official retrieval fine-tuning forward (a model from
/// retrieval_model_options with momentum encoders): `image_ids` [B] (the
/// contiguous image index of each pair) makes every pair of the same image a
/// positive in ITC (also against the id queue) and excludes it from
/// hard-negative sampling. `distill` mixes in the momentum model's
/// similarities with weight alpha.
StepOutputs retrieval_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                              const at::Tensor& attention_mask, double alpha, const at::Tensor& image_ids,
                              bool distill, const StepChoices* injected = nullptr, const FeatureGather& gather = {});

}  // namespace albef
