#pragma once
/// @file classification.h
/// @brief `albef nlvr` and `albef ve`: NLVR.py and VE.py, which fine-tune a
/// classifier on the fused [CLS] state with momentum distillation and
/// report val / test accuracy every epoch (src/tasks/classification/).

#include "albef/train/trainer.h"

#include <map>
#include <string>

namespace albef {

/// Flags of NLVR.py / VE.py (plus albef's training flags).
struct FineTuneOptions : TrainOptions {
  bool evaluate = false;  ///< only evaluate `checkpoint` on val and test
  /// Copy the online weights into the momentum encoders after `checkpoint`
  /// is loaded. NLVR.py copies them before (its momentum model starts from
  /// the random init: the published numbers come from that); VE.py's
  /// checkpoint carries its own momentum weights.
  bool momentum_from_checkpoint = false;
};

/// What the run measured on its last evaluation.
struct ClassificationResult {
  std::map<std::string, double> accuracy;      ///< "val" / "test" -> fraction correct
  std::map<std::string, std::string> predictions_file;  ///< split -> <split>_predictions.json
};

}  // namespace albef
