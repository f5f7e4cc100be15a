#pragma once
/// @file ve.h
/// @brief `albef ve`: VE.py, visual entailment on SNLI-VE (src/tasks/ve/).

#include "albef/model/albef.h"
#include "albef/tasks/classification.h"

namespace albef {

/// models/model_ve.py: a plain BertModel text encoder and `cls_head` (3
/// classes: contradiction 0, neutral 1, entailment 2, the dataset's
/// numbering), with momentum copies when `momentum_encoders`. A pretraining
/// checkpoint's `bert.` is dropped, as VE.py does when it trains.
ModelOptions ve_model_options(bool momentum_encoders = true);

/// VE.py: fine-tunes on SNLI-VE (or with `evaluate` only evaluates) and
/// returns the last evaluation. Unlike VE.py's --evaluate, which loads the
/// keys unconverted and so leaves a pretraining checkpoint's text encoder
/// random, every key is converted, and a checkpoint without the classifier
/// is refused naming the missing key.
ClassificationResult run_ve(const FineTuneOptions& options);

/// A fine-tuned VE checkpoint ready to classify an image and sentences (VE.py's model).
SentenceClassifier load_ve_classifier(const std::string& config_path, const std::string& checkpoint,
                                      const std::string& text_encoder = "", const std::string& device = "cpu",
                                      Precision precision = Precision::Fp32);

}  // namespace albef
