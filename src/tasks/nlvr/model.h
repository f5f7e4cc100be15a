#pragma once
// The text-assignment forward of models/model_pretrain_nlvr.py.

#include "albef/model/albef.h"

namespace albef {

/// One text-assignment step and what it drew.
struct TextAssignmentOutputs {
  at::Tensor loss;    ///< CE(ta_head(fused [CLS]), labels)
  at::Tensor logits;  ///< [B, 3]
  at::Tensor labels;  ///< [B]: 0 = the text's own image first, 1 = second, 2 = neither
};

/// model_pretrain_nlvr.py's forward on a batch of pretraining pairs: for
/// each text b, with probability 2/3 its own image is put first (label 0)
/// or second (label 1, each half of those) beside an image drawn by ITC
/// similarity (softmax(sim / 0.07), itself excluded), else two such images
/// neither of which is its own (label 2). The draws use the default
/// generator in the official order (rand, multinomial, rand per text).
/// Needs a batch of at least 3.
TextAssignmentOutputs text_assignment_forward(AlbefModel& model, const at::Tensor& images,
                                              const at::Tensor& input_ids, const at::Tensor& attention_mask);

}  // namespace albef
