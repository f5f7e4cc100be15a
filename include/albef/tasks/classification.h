#pragma once
/// @file classification.h
/// @brief `albef nlvr` and `albef ve`: NLVR.py and VE.py, which fine-tune a
/// classifier on the fused [CLS] state with momentum distillation and
/// report val / test accuracy every epoch (src/tasks/classification/).

#include "albef/config/config.h"
#include "albef/train/trainer.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

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

/// A fine-tuned NLVR2 or SNLI-VE model ready to classify sentences about
/// images (`--predict`, the Python module): load_nlvr_classifier or
/// load_ve_classifier makes one.
class SentenceClassifier {
 public:
  struct Impl;
  explicit SentenceClassifier(std::unique_ptr<Impl> impl);
  ~SentenceClassifier();
  SentenceClassifier(SentenceClassifier&&) noexcept;
  SentenceClassifier& operator=(SentenceClassifier&&) noexcept;

  /// Softmax probabilities [T, classes] (float64, CPU) of each of the T
  /// sentences (pre_caption'd, 30 words) about the same images:
  /// images_per_item() of them, each [3, R, R] (the test transform).
  at::Tensor probabilities(const std::vector<at::Tensor>& images, const std::vector<std::string>& sentences) const;
  /// The dataset's classes in logit order (VE: contradiction, neutral, entailment).
  const std::vector<std::string>& class_names() const;
  int64_t images_per_item() const;  ///< NLVR2: 2, SNLI-VE: 1
  const Config& config() const;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace albef
