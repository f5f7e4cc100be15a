// `albef retrieval`: the official Retrieval.py, same flags.

#include "albef/tasks/retrieval.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/data/annotations.h"
#include "albef/io/npy.h"
#include "albef/model/itm.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/augment.h"
#include "tasks/flags.h"
#include "tasks/registry.h"
#include "tasks/retrieval/evaluation.h"
#include "tasks/retrieval/step.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

namespace albef {
namespace fs = std::filesystem;
namespace {

void print_metrics(const char* stage, const nlohmann::json& values) {
  std::printf("  %-17s image->text R@1 %5.1f R@5 %5.1f R@10 %5.1f | text->image R@1 %5.1f R@5 %5.1f R@10 %5.1f\n",
              stage, values["txt_r1"].get<double>(), values["txt_r5"].get<double>(), values["txt_r10"].get<double>(),
              values["img_r1"].get<double>(), values["img_r5"].get<double>(), values["img_r10"].get<double>());
}

// The evaluation of Retrieval.py's epoch loop on val_file and test_file:
// returns the metrics as "val_<key>" / "test_<key>" (plus the ITC-only
// ranking as "val_itc_<key>", which shows what the ITM re-ranking adds) and
// writes the test score matrices to output_dir.
class SplitEvaluator {
 public:
  SplitEvaluator(const Config& config, std::shared_ptr<const text::BertTokenizer> tokenizer, Precision precision,
                 std::string output_dir)
      : tokenizer_(std::move(tokenizer)), output_dir_(std::move(output_dir)) {
    if (config.test_file.empty()) fail(config.path, ": no test_file to evaluate on");
    if (!config.val_file.empty())
      splits_.emplace_back("val", data::load_retrieval_eval_dataset(config.resolve(config.val_file[0]), config.image_root));
    splits_.emplace_back("test", data::load_retrieval_eval_dataset(config.resolve(config.test_file[0]), config.image_root));
    options_.k_test = config.k_test;
    options_.image_batch = config.batch_size_test;
    options_.precision = precision;
  }

  /// With `group`, the ranks share the queries (the official split) and
  /// sum their score matrices; only rank 0 prints and writes.
  nlohmann::json operator()(AlbefModel& model, distributed::ProcessGroup* group = nullptr) const {
    RetrievalEvalOptions options = options_;
    if (group) {
      options.rank = group->rank();
      options.world_size = group->world_size();
    }
    const bool main_rank = options.rank == 0;
    nlohmann::json log = nlohmann::json::object();
    for (const auto& [split, dataset] : splits_) {
      RetrievalScores scores = evaluate_retrieval(model, *tokenizer_, dataset.image_paths(), dataset.text, options);
      if (group) {
        // A rank's unscored entries hold -100, so the shifted sum gives
        // every entry its one rank's value (the official all_reduce sums
        // the -100s too, shifting every score by the same amount). Every
        // rank has all the ITC similarities.
        for (at::Tensor* matrix : {&scores.i2t, &scores.t2i}) {
          *matrix += 100;
          group->sum(*matrix);
          *matrix -= 100;
        }
      }
      const nlohmann::json metrics = itm_eval(scores.i2t, scores.t2i, dataset.txt2img, dataset.img2txt);
      const nlohmann::json itc_metrics = itm_eval(scores.itc, scores.itc.t(), dataset.txt2img, dataset.img2txt);
      for (const auto& [key, value] : metrics.items()) log[split + "_" + key] = value;
      for (const auto& [key, value] : itc_metrics.items()) log[split + "_itc_" + key] = value;
      if (!main_rank) continue;
      // By chance, R@1 is 1/images in both directions (an image's own
      // captions are its share of the texts).
      std::printf("%s: %lld images, %lld texts (R@1 by chance: %.1f)\n", split.c_str(),
                  static_cast<long long>(dataset.num_images()), static_cast<long long>(dataset.num_texts()),
                  100.0 / dataset.num_images());
      print_metrics("ITC + ITM re-rank", metrics);
      print_metrics("ITC only", itc_metrics);
      if (split == "test") {
        io::write_npy(output_dir_ + "/score_i2t.npy", scores.i2t);
        io::write_npy(output_dir_ + "/score_t2i.npy", scores.t2i);
      }
    }
    std::fflush(stdout);
    return log;
  }

 private:
  std::shared_ptr<const text::BertTokenizer> tokenizer_;
  std::string output_dir_;
  std::vector<std::pair<std::string, data::RetrievalEvalDataset>> splits_;
  RetrievalEvalOptions options_;
};

nlohmann::json test_metrics_of(const nlohmann::json& log) {
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [key, value] : log.items())
    if (key.rfind("test_", 0) == 0 && key.rfind("test_itc_", 0) != 0) metrics[key.substr(5)] = value;
  return metrics;
}

nlohmann::json evaluate_only(const RetrievalOptions& options, const Config& config,
                             std::shared_ptr<const text::BertTokenizer> tokenizer) {
  if (options.checkpoint.empty()) fail("--evaluate needs --checkpoint");
  prepare_output_dir(options.output_dir, "--output_dir");  // before the work, not after it
  // Evaluation needs neither the momentum encoders nor the queues.
  AlbefModel model = load_inference_model(config, retrieval_model_options(false), options.checkpoint,
                                          parse_device(options.device), options.precision);

  // Started by albef launch / torchrun: the ranks share the re-ranking.
  const std::unique_ptr<distributed::ProcessGroup> group = distributed::join_process_group(
      parse_device(options.device), std::chrono::duration_cast<std::chrono::milliseconds>(options.dist_timeout));
  const bool main_rank = !group || group->rank() == 0;
  if (main_rank) fs::create_directories(options.output_dir);
  const SplitEvaluator evaluate(config, std::move(tokenizer), options.precision, options.output_dir);
  nlohmann::json log = evaluate(model, group.get());
  log["epoch"] = 0;
  if (main_rank) {
    std::ofstream out(options.output_dir + "/log.txt", std::ios::app);
    out << log.dump() << "\n";
    if (!out) fail(options.output_dir, "/log.txt: cannot append");
  }
  return test_metrics_of(log);
}

}  // namespace

ModelOptions retrieval_model_options(bool momentum_encoders) {
  ModelOptions options;
  options.text_encoder = TextEncoderLayout::Plain;
  options.id_queue = true;
  options.momentum_encoders = momentum_encoders;
  options.heads = {itm_head_spec()};
  return options;
}

nlohmann::json run_retrieval(const RetrievalOptions& options) {
  init_runtime(options.threads);
  const Config config = load_config(options.config_path, options.text_encoder);
  auto tokenizer = std::make_shared<const text::BertTokenizer>(config.vocab);
  if (options.evaluate) return evaluate_only(options, config, tokenizer);

  if (config.train_file.empty()) fail(options.config_path, ": no train_file to fine-tune on");
  if (config.val_file.empty()) fail(options.config_path, ": fine-tuning needs a val_file (the best epoch is chosen on it)");
  std::vector<std::string> train_files;
  for (const auto& file : config.train_file) train_files.push_back(config.resolve(file));
  // Read before anything is written: a malformed file fails the run at once.
  auto dataset =
      std::make_shared<data::TrainDataset>(data::load_retrieval_train_dataset(train_files, config.image_root));

  TrainingTask task;
  task.model = retrieval_model_options();
  task.schedule = TrainingSchedule::retrieval(config);
  task.loss_names = {"loss_ita", "loss_itm"};
  task.data = retrieval_train_data(dataset, vision::TrainTransform(config.image_res, vision::kFinetuneScaleMin),
                                   config.batch_size_train, tokenizer, config);
  auto evaluate = std::make_shared<SplitEvaluator>(config, tokenizer, options.precision, options.output_dir);
  auto last_log = std::make_shared<nlohmann::json>();
  task.evaluate = [evaluate, last_log](AlbefModel& model, int64_t, distributed::ProcessGroup* group) {
    *last_log = (*evaluate)(model, group);
    return *last_log;
  };
  task.best_key = "val_r_mean";
  run_training(options, config, std::move(task));
  return test_metrics_of(*last_log);
}

namespace tasks {

Task retrieval_task() {
  Task task{"retrieval",
          "Image-text retrieval: fine-tune a pretrained checkpoint, or --evaluate one (ITC top-k, ITM re-ranking, "
          "the official recall metrics)",
          [](CLI::App& command) {
            return add_fine_tuning_flags<RetrievalOptions>(
                command, "output/Retrieval",  // Retrieval.py's default
                "Retrieval config (configs/Retrieval_coco.yaml, Retrieval_flickr.yaml)",
                "Only evaluate --checkpoint on val_file and test_file",
                [](const RetrievalOptions& options) { run_retrieval(options); });
          },
          {}};
  task.official_script = "Retrieval.py";
  task.checkpoint_model = [](const Config&) { return retrieval_model_options(); };
  return task;
}

}  // namespace tasks

}  // namespace albef
