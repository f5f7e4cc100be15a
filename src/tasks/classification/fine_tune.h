#pragma once
// The script NLVR.py and VE.py share: fine-tune with distillation, evaluate
// val and test after every epoch (accuracy and every prediction), keep the
// best checkpoint by val accuracy; --evaluate only evaluates; --predict
// classifies sentences about images given on the command line.

#include "albef/tasks/classification.h"
#include "tasks/classification/data.h"
#include "tasks/flags.h"

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace albef::classification {

/// What a task supplies to the shared script.
struct ClassificationTask {
  std::string name;  ///< the command (`albef <name>`), for messages
  /// The model (its momentum encoders are set from `distill`).
  std::function<ModelOptions(const Config& config, bool momentum_encoders)> model;
  /// Reads the task's annotation files (an error names the file and item).
  std::function<LabeledSet(const std::vector<std::string>& files, const Config& config)> load;
  std::vector<std::string> class_names;  ///< the dataset's class numbers, in order
  /// Batch sizes: NLVR.py uses batch_size for both, VE.py batch_size_train / batch_size_test.
  std::function<int64_t(const Config& config)> train_batch, eval_batch;
  /// Texts per --predict item take this many --image's.
  int64_t images_per_item = 1;
};

/// The task's fine-tuned model from `checkpoint`, for predictions.
SentenceClassifier make_sentence_classifier(const ClassificationTask& task, const std::string& config_path,
                                            const std::string& checkpoint, const std::string& text_encoder,
                                            const std::string& device, Precision precision);

/// Runs the script (see albef/tasks/classification.h).
ClassificationResult run_fine_tuning(const FineTuneOptions& options, const ClassificationTask& task);

/// The command of such a task: the training flags, --evaluate, and
/// --predict with --image / --text / --json; with `momentum_flag`,
/// --momentum-from-checkpoint too.
std::function<void()> add_classification_command(CLI::App& command, const ClassificationTask& task,
                                                 const std::string& output_dir, const std::string& config_help,
                                                 bool momentum_flag);

}  // namespace albef::classification
