#include "tasks/classification/fine_tune.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/image.h"
#include "tasks/classification/classifier.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

namespace albef::classification {
namespace fs = std::filesystem;
namespace {

using nlohmann::json;

text::BatchEncoding encode(const text::BertTokenizer& tokenizer, const std::vector<std::string>& sentences,
                           const Config& config) {
  // The scripts: tokenizer(text, padding='longest'); pre_caption already kept 30 words.
  return tokenizer.encode_batch(sentences, static_cast<int>(config.bert.max_position_embeddings),
                                text::Padding::Longest);
}

std::vector<std::string> resolved(const Config& config, const std::vector<std::string>& files) {
  std::vector<std::string> out;
  for (const std::string& file : files) out.push_back(config.resolve(file));
  return out;
}

// The per-epoch evaluation of val_file and test_file.
class Evaluator {
 public:
  Evaluator(const Config& config, const ClassificationTask& task, std::shared_ptr<const text::BertTokenizer> tokenizer,
            Precision precision)
      : config_(config),
        tokenizer_(std::move(tokenizer)),
        precision_(precision),
        classes_(static_cast<int64_t>(task.class_names.size())),
        batch_size_(task.eval_batch(config)) {
    if (config.test_file.empty()) fail(config.path, ": no test_file to evaluate on");
    if (!config.val_file.empty()) splits_.emplace_back("val", task.load(resolved(config, config.val_file), config));
    splits_.emplace_back("test", task.load(resolved(config, config.test_file), config));
  }

  bool has_val() const { return splits_.front().first == "val"; }

  /// Every split's accuracy; rank 0 writes <split>_predictions.json to
  /// `output_dir`. With `group` the ranks share each split's items.
  ClassificationResult operator()(AlbefModel& model, const std::string& output_dir,
                                  distributed::ProcessGroup* group) const {
    at::NoGradGuard no_grad;
    const bool was_training = model->is_training();
    model->eval();
    const c10::Device device = model->parameters().front().device();
    const bool main_rank = !group || group->rank() == 0;
    ClassificationResult result;
    for (const auto& [split, set] : splits_) {
      const auto items = static_cast<int64_t>(set.items.size());
      const auto [begin, end] = share_of(items, group ? group->rank() : 0, group ? group->world_size() : 1);
      SplitPredictions predictions;
      predictions.logits = at::zeros({items, classes_}, at::kFloat);  // this rank's rows; summed over the ranks
      std::vector<int64_t> targets;
      for (const LabeledItem& item : set.items) targets.push_back(item.label);
      predictions.targets = at::tensor(targets, at::kLong);
      EvalLoader loader(set, begin, end, static_cast<int>(config_.image_res), batch_size_);
      while (auto batch = loader.next()) {
        const text::BatchEncoding text = encode(*tokenizer_, batch->sentences, config_);
        PrecisionGuard guard(precision_, device);
        const at::Tensor fused = fuse_items(model, false, batch->images.to(device), text.input_ids.to(device),
                                            text.attention_mask.to(device));
        const at::Tensor logits = classify(model, "cls_head", fused);
        predictions.logits.slice(0, batch->index, batch->index + logits.size(0)).copy_(logits.to(at::kCPU, at::kFloat));
      }
      if (group) group->sum(predictions.logits);
      result.accuracy[split] = predictions.accuracy();
      if (!main_rank) continue;
      fs::create_directories(output_dir);
      result.predictions_file[split] = output_dir + "/" + split + "_predictions.json";
      write_predictions(result.predictions_file[split], predictions.logits);
      std::printf("%s: accuracy %.4f on %lld items (%s)\n", split.c_str(), result.accuracy[split],
                  static_cast<long long>(items), result.predictions_file[split].c_str());
    }
    if (was_training) model->train();
    return result;
  }

 private:
  const Config& config_;
  std::shared_ptr<const text::BertTokenizer> tokenizer_;
  Precision precision_;
  int64_t classes_, batch_size_;
  std::vector<std::pair<std::string, LabeledSet>> splits_;
};

json metrics_of(const ClassificationResult& result) {
  json metrics = json::object();
  for (const auto& [split, accuracy] : result.accuracy) metrics[split + "_acc"] = accuracy;
  return metrics;
}

struct PredictFlags {
  bool on = false;
  std::vector<std::string> images, texts;
  bool as_json = false;
};

// --predict: the classes of each --text about the --image(s).
void run_predict(const FineTuneOptions& options, const ClassificationTask& task, const PredictFlags& flags) {
  init_runtime(options.threads);
  if (options.checkpoint.empty()) fail("--predict needs --checkpoint (a fine-tuned ", task.name, " checkpoint)");
  if (static_cast<int64_t>(flags.images.size()) != task.images_per_item)
    fail("--predict for ", task.name, " takes ", task.images_per_item, " --image, got ", flags.images.size());
  if (flags.texts.empty()) fail("--predict needs at least one --text");
  const SentenceClassifier classifier = make_sentence_classifier(task, options.config_path, options.checkpoint,
                                                                 options.text_encoder, options.device,
                                                                 options.precision);
  std::vector<at::Tensor> images;
  for (const std::string& path : flags.images)
    images.push_back(vision::load_test_image(path, static_cast<int>(classifier.config().image_res)));
  const at::Tensor probabilities = classifier.probabilities(images, flags.texts);
  const auto texts = static_cast<int64_t>(flags.texts.size());
  json out = json::array();
  for (int64_t t = 0; t < texts; ++t) {
    json by_class = json::object();
    for (size_t c = 0; c < task.class_names.size(); ++c)
      by_class[task.class_names[c]] = probabilities[t][static_cast<int64_t>(c)].item<double>();
    const int64_t best = probabilities[t].argmax().item<int64_t>();
    out.push_back({{"text", flags.texts[static_cast<size_t>(t)]},
                   {"prediction", task.class_names[static_cast<size_t>(best)]},
                   {"class", best},
                   {"probabilities", by_class}});
  }
  if (flags.as_json) {
    std::cout << out.dump(1) << "\n";
    return;
  }
  for (const json& entry : out) {
    std::printf("%s\n  -> %s", entry["text"].get<std::string>().c_str(), entry["prediction"].get<std::string>().c_str());
    for (const auto& [name, p] : entry["probabilities"].items()) std::printf("  %s %.2f%%", name.c_str(), 100.0 * p.get<double>());
    std::printf("\n");
  }
}

void append_log(const std::string& output_dir, const json& line) {
  fs::create_directories(output_dir);
  std::ofstream out(output_dir + "/log.txt", std::ios::app);
  out << line.dump() << "\n";
  if (!out) fail(output_dir, "/log.txt: cannot append");
}

}  // namespace

ClassificationResult run_fine_tuning(const FineTuneOptions& options, const ClassificationTask& task) {
  init_runtime(options.threads);
  const Config config = load_config(options.config_path, options.text_encoder);
  auto tokenizer = std::make_shared<const text::BertTokenizer>(config.vocab);
  // Read before anything is written: a malformed val or test file fails at once.
  const Evaluator evaluate(config, task, tokenizer, options.precision);

  if (options.evaluate) {
    if (options.checkpoint.empty()) fail("--evaluate needs --checkpoint");
    prepare_output_dir(options.output_dir, "--output_dir");  // before the work, not after it
    AlbefModel model = load_inference_model(config, task.model(config, false), options.checkpoint,
                                            parse_device(options.device), options.precision);
    const std::unique_ptr<distributed::ProcessGroup> group = distributed::join_process_group(
        parse_device(options.device), std::chrono::duration_cast<std::chrono::milliseconds>(options.dist_timeout));
    const ClassificationResult result = evaluate(model, options.output_dir, group.get());
    if (!group || group->rank() == 0) {
      json line = metrics_of(result);
      line["epoch"] = 0;
      append_log(options.output_dir, line);
    }
    return result;
  }

  if (config.train_file.empty()) fail(options.config_path, ": no train_file to fine-tune on");
  auto train_set = std::make_shared<LabeledSet>(task.load(resolved(config, config.train_file), config));
  TrainingTask training;
  training.model = task.model(config, config.distill);
  training.schedule = TrainingSchedule::retrieval(config);  // NLVR.py and VE.py step as Retrieval.py
  training.loss_names = {"loss"};
  const bool distill = config.distill;
  const int64_t batch_size = task.train_batch(config);
  training.data = [&config, train_set, tokenizer, distill, batch_size](data::TrainLoaderOptions loader,
                                                                        c10::Device device) {
    loader.batch_size = batch_size;
    auto items = std::make_unique<TrainLoader>(std::move(*train_set), config, loader);
    return bind_train_data(std::move(items), [tokenizer, device, distill](AlbefModel& model, const Batch& batch,
                                                                         double alpha, const FeatureGather&) {
      const text::BatchEncoding text = encode(*tokenizer, batch.sentences, model->config());
      const TrainOutputs out = train_forward(model, batch.images.to(device), text.input_ids.to(device),
                                             text.attention_mask.to(device), batch.targets.to(device), alpha, distill);
      return std::vector<at::Tensor>{out.loss};
    });
  };
  auto last = std::make_shared<ClassificationResult>();
  const std::string output_dir = options.output_dir;
  training.evaluate = [&evaluate, last, output_dir](AlbefModel& model, int64_t, distributed::ProcessGroup* group) {
    *last = evaluate(model, output_dir, group);
    return metrics_of(*last);
  };
  if (evaluate.has_val()) training.best_key = "val_acc";  // the scripts keep the best val accuracy
  if (options.momentum_from_checkpoint)
    training.after_checkpoint_load = [](AlbefModel& model) { model->copy_params(); };
  run_training(options, config, std::move(training));
  return *last;
}

std::function<void()> add_classification_command(CLI::App& command, const ClassificationTask& task,
                                                 const std::string& output_dir, const std::string& config_help,
                                                 bool momentum_flag) {
  auto options = std::make_shared<FineTuneOptions>();
  options->output_dir = output_dir;
  auto flags = std::make_shared<tasks::TrainFlags>();
  flags->add_to(command, *options, config_help);
  command.add_flag("--evaluate", options->evaluate, "Only evaluate --checkpoint on val_file and test_file");
  if (momentum_flag)
    command.add_flag("--momentum-from-checkpoint", options->momentum_from_checkpoint,
                     "Start the momentum encoders from the loaded checkpoint (NLVR.py starts them from the random "
                     "init; see README)");
  auto predict = std::make_shared<PredictFlags>();
  command.add_flag("--predict", predict->on,
                   "Classify each --text about the --image(s) with --checkpoint; print classes and probabilities");
  command.add_option("--image", predict->images, "--predict: an image (repeatable)");
  command.add_option("--text", predict->texts, "--predict: a sentence (repeatable)");
  command.add_flag("--json", predict->as_json, "--predict: print JSON");
  return [options, flags, predict, task] {
    flags->compute.apply_to(*options);
    if (predict->on)
      run_predict(*options, task, *predict);
    else
      run_fine_tuning(*options, task);
  };
}

}  // namespace albef::classification
