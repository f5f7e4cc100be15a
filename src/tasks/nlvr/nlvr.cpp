// `albef pretrain_nlvr` (Pretrain_nlvr.py) and `albef nlvr` (NLVR.py).

#include "albef/tasks/nlvr.h"

#include "albef/core/error.h"
#include "albef/text/tokenizer.h"
#include "tasks/classification/fine_tune.h"
#include "tasks/flags.h"
#include "tasks/pretrain/pairs.h"
#include "tasks/nlvr/data.h"
#include "tasks/nlvr/model.h"
#include "tasks/registry.h"

#include <memory>

namespace albef {
namespace {

classification::ClassificationTask nlvr_classification() {
  classification::ClassificationTask task;
  task.name = "nlvr";
  task.model = [](const Config& config, bool momentum_encoders) { return nlvr_model_options(config, momentum_encoders); };
  task.load = [](const std::vector<std::string>& files, const Config& config) {
    return nlvr::load_pairs(files, config.image_root);
  };
  task.class_names = {"False", "True"};
  task.train_batch = [](const Config& config) { return config.batch_size; };  // NLVR.py: batch_size everywhere
  task.eval_batch = [](const Config& config) { return config.batch_size; };
  task.images_per_item = 2;
  return task;
}

}  // namespace

void run_pretrain_nlvr(const TrainOptions& options) {
  init_runtime(options.threads);
  const Config config = load_config(options.config_path, options.text_encoder);
  auto tokenizer = std::make_shared<const text::BertTokenizer>(config.vocab);
  auto dataset = read_pretrain_pairs(config, options.config_path);

  TrainingTask task;
  task.model = text_assignment_model_options(config);
  task.schedule = TrainingSchedule::pretrain(config);  // Pretrain_nlvr.py steps its schedule as Pretrain.py
  task.loss_names = {"loss"};
  task.data = [&config, dataset, tokenizer](data::TrainLoaderOptions loader, c10::Device device) {
    return bind_train_data(pretrain_pairs_loader(std::move(*dataset), config, loader), [tokenizer, device](AlbefModel& model,
                                                                                const data::TrainBatch& batch, double,
                                                                                const FeatureGather&) {
      // Pretrain_nlvr.py: padding='longest', truncation=True, max_length=25.
      const text::BatchEncoding text = tokenizer->encode_batch(batch.captions, 25, text::Padding::Longest);
      const TextAssignmentOutputs out = text_assignment_forward(model, batch.images.to(device),
                                                                text.input_ids.to(device), text.attention_mask.to(device));
      return std::vector<at::Tensor>{out.loss};
    });
  };
  run_training(options, config, std::move(task));
}

ClassificationResult run_nlvr(const FineTuneOptions& options) {
  return classification::run_fine_tuning(options, nlvr_classification());
}

SentenceClassifier load_nlvr_classifier(const std::string& config_path, const std::string& checkpoint,
                                        const std::string& text_encoder, const std::string& device, Precision precision) {
  return classification::make_sentence_classifier(nlvr_classification(), config_path, checkpoint, text_encoder, device, precision);
}

namespace tasks {

Task pretrain_nlvr_task() {
  Task task{"pretrain_nlvr",
          "NLVR2's text-assignment pretraining (Pretrain_nlvr.py): converts a pretraining checkpoint to the two-image "
          "model and trains it on image-caption pairs",
          [](CLI::App& command) {
            auto options = std::make_shared<TrainOptions>();
            options->output_dir = "output/NLVR_pretrain";  // Pretrain_nlvr.py's default
            auto flags = std::make_shared<TrainFlags>();
            flags->add_to(command, *options, "Text-assignment config (configs/NLVR_pretrain.yaml)");
            return [options, flags] {
              flags->compute.apply_to(*options);
              run_pretrain_nlvr(*options);
            };
          },
          {}};
  task.official_script = "Pretrain_nlvr.py";
  task.checkpoint_model = [](const Config& config) { return text_assignment_model_options(config); };
  return task;
}

Task nlvr_task() {
  Task task{"nlvr",
          "NLVR2: fine-tune a text-assignment checkpoint to judge a sentence about two images, --evaluate one, or "
          "--predict",
          [](CLI::App& command) {
            return classification::add_classification_command(command, nlvr_classification(), "output/NLVR",
                                                              "NLVR config (configs/NLVR.yaml)",
                                                              /*momentum_flag=*/true);
          },
          {}};
  task.official_script = "NLVR.py";
  task.checkpoint_model = [](const Config& config) { return nlvr_model_options(config); };
  return task;
}

}  // namespace tasks
}  // namespace albef
