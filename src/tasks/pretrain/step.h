#pragma once
// One pretraining forward pass (models/model_pretrain.py): ITC and ITM as
// train/contrastive_step, then MLM with distillation from the momentum model.

#include "train/contrastive_step.h"

#include <utility>

namespace albef {

/// Special token ids the MLM masking needs (from the tokenizer).
struct MlmTokenIds {
  int64_t pad = 0, cls = 101, mask = 103;
};

/// Runs the official pretraining forward on a batch and updates the momentum
/// encoders and the queues. `alpha` is the distillation weight of this step.
/// `injected` overrides the random choices (test seam). The model must have
/// the MaskedLM text encoder and momentum encoders (pretrain_model_options).
StepOutputs pretrain_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                             const at::Tensor& attention_mask, double alpha, const MlmTokenIds& tokens,
                             const StepChoices* injected = nullptr, const FeatureGather& gather = {});

/// The official MLM masking: 15% of tokens (never [PAD]=0 or [CLS]), of which
/// 80% become [MASK], 10% a random token, 10% stay. Returns {ids, labels}.
std::pair<at::Tensor, at::Tensor> mask_tokens(const at::Tensor& input_ids, double probability, int64_t vocab_size,
                                              const MlmTokenIds& tokens);

/// The step's MLM masks into `choices`: `injected`'s when given, else
/// mask_tokens at `probability` (drawn on the CPU); on input_ids' device.
void choose_mlm_masks(const at::Tensor& input_ids, double probability, int64_t vocab_size, const MlmTokenIds& tokens,
                      const StepChoices* injected, StepChoices& choices);

}  // namespace albef
