// `albef ve`: the official VE.py (visual entailment on SNLI-VE).

#include "albef/tasks/ve.h"

#include "tasks/classification/classifier.h"
#include "tasks/classification/fine_tune.h"
#include "tasks/registry.h"
#include "tasks/ve/data.h"

namespace albef {
namespace {

classification::ClassificationTask ve_classification() {
  classification::ClassificationTask task;
  task.name = "ve";
  task.model = [](const Config&, bool momentum_encoders) { return ve_model_options(momentum_encoders); };
  task.load = [](const std::vector<std::string>& files, const Config& config) {
    return ve::load_pairs(files, config.image_root);
  };
  task.class_names = ve::class_names();
  task.train_batch = [](const Config& config) { return config.batch_size_train; };
  task.eval_batch = [](const Config& config) { return config.batch_size_test; };
  task.images_per_item = 1;
  return task;
}

}  // namespace

ModelOptions ve_model_options(bool momentum_encoders) {
  ModelOptions options;
  options.text_encoder = TextEncoderLayout::Plain;  // its default key map drops `bert.`, as VE.py
  options.contrastive = false;
  options.momentum_encoders = momentum_encoders;
  options.heads = {classification::classifier_head(3)};
  return options;
}

ClassificationResult run_ve(const FineTuneOptions& options) {
  return classification::run_fine_tuning(options, ve_classification());
}

SentenceClassifier load_ve_classifier(const std::string& config_path, const std::string& checkpoint,
                                      const std::string& text_encoder, const std::string& device, Precision precision) {
  return classification::make_sentence_classifier(ve_classification(), config_path, checkpoint, text_encoder, device, precision);
}

namespace tasks {

Task ve_task() {
  Task task{"ve",
          "Visual entailment (SNLI-VE): fine-tune a pretrained checkpoint to tell whether an image entails, "
          "contradicts or is neutral to a sentence, --evaluate one, or --predict",
          [](CLI::App& command) {
            return classification::add_classification_command(command, ve_classification(), "output/VE",
                                                              "VE config (configs/VE.yaml)",
                                                              /*momentum_flag=*/false);
          },
          {}};
  task.official_script = "VE.py";
  task.checkpoint_model = [](const Config&) { return ve_model_options(); };
  return task;
}

}  // namespace tasks
}  // namespace albef
