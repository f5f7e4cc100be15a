// `albef grounding`: the official Grounding.py, same flags.

#include "albef/tasks/grounding.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/data/loader.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/augment.h"
#include "albef/vision/image.h"
#include "tasks/flags.h"
#include "tasks/grounding/gradcam_command.h"
#include "tasks/grounding/refer.h"
#include "tasks/registry.h"
#include "tasks/retrieval/step.h"

#include <ATen/ATen.h>
#include <opencv2/core.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <unordered_map>

namespace albef {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string config_path_key(const Config& config, const char* key) {
  const auto found = config.raw.find(key);
  if (found == config.raw.end() || !found->is_string())
    fail(config.path, ": grounding needs '", key, "' (", key == std::string("refcoco_data")
                                                            ? "REFER's data folder, holding refcoco+/refs(unc).p"
                                                            : "the detections file, dets.json",
         ")");
  return config.resolve(found->get<std::string>());
}

// Grounding.py's train_transform: Resize((res, res), BICUBIC), a horizontal
// flip, RandomAugment(2, 7) with ALBEF's ten ops, ToTensor, Normalize (no
// random crop: the boxes of a referring expression must stay in the picture).
data::SampleTransform grounding_train_transform(int image_res) {
  auto augment = std::make_shared<const vision::RandomAugment>();
  return [augment, image_res](const cv::Mat& rgb, vision::Rng& rng) {
    cv::Mat image = vision::resize_bicubic_pil(rgb, image_res, image_res);
    if (rng.uniform() < 0.5) cv::flip(image, image, 1);
    return vision::to_normalized_tensor((*augment)(image, rng));
  };
}

// grounding_dataset(mode='train'): one sample per expression, the image id
// numbered by file name in order of first appearance.
data::TrainDataset grounding_train_dataset(const std::vector<std::string>& files, const std::string& image_root) {
  data::TrainDataset dataset;
  dataset.annotation_files = files;
  std::unordered_map<std::string, int64_t> image_ids;
  std::unordered_map<std::string, uint32_t> file_index;
  for (size_t i = 0; i < files.size(); ++i) file_index[files[i]] = static_cast<uint32_t>(i);
  for (grounding::Expression& e : grounding::load_expressions(files, image_root, /*with_ref_id=*/false)) {
    const std::string name = fs::path(e.image).filename().string();
    const auto id = image_ids.emplace(name, static_cast<int64_t>(image_ids.size())).first->second;
    dataset.samples.push_back({std::move(e.image), {std::move(e.text)}, id, file_index.at(e.file)});
  }
  dataset.num_images = static_cast<int64_t>(image_ids.size());
  return dataset;
}

json results_json(const grounding::GroundingEvaluation& evaluation, const at::Tensor& maps) {
  json out = json::array();
  const at::Tensor cpu = maps.to(at::kCPU, at::kFloat).contiguous();
  const auto values = cpu.accessor<float, 3>();
  for (size_t i = 0; i < evaluation.results.size(); ++i) {
    const grounding::RefResult& r = evaluation.results[i];
    json map = json::array();
    for (int64_t y = 0; y < values.size(1); ++y) {
      json row = json::array();
      for (int64_t x = 0; x < values.size(2); ++x) row.push_back(values[static_cast<int64_t>(i)][y][x]);
      map.push_back(std::move(row));
    }
    json entry = {{"ref_id", r.ref_id}, {"split", r.split}, {"box", r.box ? json(*r.box) : json(nullptr)},
                  {"iou", r.iou},       {"hit", r.hit},     {"box_scores", r.box_scores}};
    if (r.reused_previous) entry["box_reused_from_previous"] = true;
    entry["gradcam"] = std::move(map);
    out.push_back(std::move(entry));
  }
  return out;
}

// Grounding.py's val() + grounding_eval on test_file, in the script's batches.
class GroundingEvaluator {
 public:
  GroundingEvaluator(const Config& config, std::shared_ptr<const text::BertTokenizer> tokenizer, Precision precision,
                     GradcamOptions gradcam, std::string output_dir)
      : tokenizer_(std::move(tokenizer)),
        precision_(precision),
        gradcam_(gradcam),
        output_dir_(std::move(output_dir)),
        image_res_(static_cast<int>(config.image_res)),
        batch_size_(config.batch_size),
        max_tokens_(static_cast<int>(config.bert.max_position_embeddings)) {
    if (config.test_file.empty()) fail(config.path, ": no test_file to evaluate on");
    std::vector<std::string> files;
    for (const std::string& file : config.test_file) files.push_back(config.resolve(file));
    expressions_ = grounding::load_expressions(files, config.image_root, /*with_ref_id=*/true);
    refer_ = grounding::load_refer(config_path_key(config, "refcoco_data"));
    det_file_ = config_path_key(config, "det_file");
    detections_ = grounding::load_detections(det_file_, refer_);
    // Everything an expression needs is checked now, not after an epoch of training.
    for (const grounding::Expression& e : expressions_) {
      const auto ref = refer_.refs.find(e.ref_id);
      if (ref == refer_.refs.end())
        fail(e.file, ": entry ", e.index, ": ref_id ", e.ref_id, " is not in ", refer_.refs_file);
      const auto boxes = detections_.find(ref->second.image_id);
      if (boxes == detections_.end() || boxes->second.empty())
        fail(e.file, ": entry ", e.index, " (ref_id ", e.ref_id, "): ", det_file_, " has no boxes for image ",
             ref->second.image_id);
    }
  }

  json operator()(AlbefModel& model, distributed::ProcessGroup* group, const std::string& results_name) const {
    const int64_t rank = group ? group->rank() : 0, world = group ? group->world_size() : 1;
    const auto count = static_cast<int64_t>(expressions_.size());
    const c10::Device device = model->temp.device();
    // The official loader's batches, in order; rank r takes batches r, r + world, ...
    std::vector<int64_t> rows;
    for (int64_t start = rank * batch_size_; start < count; start += world * batch_size_)
      for (int64_t i = start; i < std::min(count, start + batch_size_); ++i) rows.push_back(i);
    std::vector<std::string> paths;
    for (int64_t i : rows) paths.push_back(expressions_[static_cast<size_t>(i)].image);
    data::EvalImageLoader images(paths, image_res_, batch_size_);

    at::Tensor maps;
    size_t next_row = 0;
    while (auto batch = images.next()) {
      const int64_t size = batch->images.size(0);
      std::vector<std::string> texts;
      for (int64_t k = 0; k < size; ++k)
        texts.push_back(text::pre_caption(expressions_[static_cast<size_t>(rows[next_row + k])].text, 30));
      const text::BatchEncoding encoding = tokenizer_->encode_batch(texts, max_tokens_, text::Padding::Longest);
      Gradcam cam;
      {
        PrecisionGuard guard(precision_, device);
        cam = compute_gradcam(model, batch->images.to(device), encoding.input_ids.to(device),
                              encoding.attention_mask.to(device), gradcam_);
      }
      if (!maps.defined()) maps = at::zeros({count, cam.maps.size(1), cam.maps.size(2)});
      const at::Tensor index = at::tensor(std::vector<int64_t>(rows.begin() + static_cast<int64_t>(next_row),
                                                               rows.begin() + static_cast<int64_t>(next_row) + size));
      maps.index_copy_(0, index, cam.maps.to(at::kCPU, at::kFloat));
      next_row += static_cast<size_t>(size);
    }
    if (!maps.defined()) {  // a rank without batches still takes part in the sum
      const int64_t side = static_cast<int64_t>(std::lround(std::sqrt(model->visual_encoder->num_patches())));
      maps = at::zeros({count, side, side});
    }
    if (group) group->sum(maps);

    const grounding::GroundingEvaluation evaluation =
        grounding::grounding_eval(expressions_, maps, refer_, detections_, det_file_);
    if (rank == 0) {
      for (const auto& [split, accuracy] : evaluation.accuracies.items())
        std::printf("%s: %.3f\n", split.c_str(), accuracy.get<double>());
      if (evaluation.reused_boxes > 0)
        std::printf("%lld expression(s) had no box scoring above 0: each kept the previous expression's box, as "
                    "grounding_eval does\n",
                    static_cast<long long>(evaluation.reused_boxes));
      std::fflush(stdout);
      const json results = results_json(evaluation, maps);
      write_atomically(output_dir_ + "/" + results_name,
                       [&results](const std::string& path) { std::ofstream(path) << results.dump() << "\n"; });
    }
    return evaluation.accuracies;
  }

 private:
  std::shared_ptr<const text::BertTokenizer> tokenizer_;
  Precision precision_;
  GradcamOptions gradcam_;
  std::string output_dir_;
  int image_res_;
  int64_t batch_size_;
  int max_tokens_;
  std::vector<grounding::Expression> expressions_;
  grounding::Refer refer_;
  std::string det_file_;
  grounding::Detections detections_;
};

json evaluate_only(const GroundingOptions& options, const Config& config,
                   std::shared_ptr<const text::BertTokenizer> tokenizer) {
  if (options.checkpoint.empty()) fail("--evaluate needs --checkpoint");
  check_gradcam_block(config, options.gradcam);
  prepare_output_dir(options.output_dir, "--output_dir");
  const GroundingEvaluator evaluate(config, std::move(tokenizer), options.precision, options.gradcam,
                                    options.output_dir);
  AlbefModel model = load_inference_model(config, grounding_model_options(false), options.checkpoint,
                                          parse_device(options.device), options.precision);
  const std::unique_ptr<distributed::ProcessGroup> group = distributed::join_process_group(
      parse_device(options.device), std::chrono::duration_cast<std::chrono::milliseconds>(options.dist_timeout));
  json log = evaluate(model, group.get(), "grounding_results.json");
  log["epoch"] = 0;
  if (!group || group->rank() == 0) {
    std::ofstream out(options.output_dir + "/log.txt", std::ios::app);
    out << log.dump() << "\n";
    if (!out) fail(options.output_dir, "/log.txt: cannot append");
  }
  log.erase("epoch");
  return log;
}

}  // namespace

nlohmann::json run_grounding(const GroundingOptions& options) {
  init_runtime(options.threads);
  const Config config = load_config(options.config_path, options.text_encoder);
  auto tokenizer = std::make_shared<const text::BertTokenizer>(config.vocab);
  if (options.evaluate) return evaluate_only(options, config, tokenizer);

  if (config.train_file.empty()) fail(options.config_path, ": no train_file to fine-tune on");
  std::vector<std::string> train_files;
  for (const auto& file : config.train_file) train_files.push_back(config.resolve(file));
  // Read before anything is written: a malformed file fails the run at once.
  auto dataset = std::make_shared<data::TrainDataset>(grounding_train_dataset(train_files, config.image_root));
  check_gradcam_block(config, options.gradcam);
  auto evaluate =
      std::make_shared<GroundingEvaluator>(config, tokenizer, options.precision, options.gradcam, options.output_dir);

  TrainingTask task;
  task.model = grounding_model_options();
  task.schedule = TrainingSchedule::retrieval(config);  // Grounding.py steps its schedule as Retrieval.py
  task.loss_names = {"loss_ita", "loss_itm"};
  task.data = retrieval_train_data(dataset, grounding_train_transform(static_cast<int>(config.image_res)),
                                   config.batch_size, tokenizer, config);
  auto last = std::make_shared<json>();
  task.evaluate = [evaluate, last](AlbefModel& model, int64_t, distributed::ProcessGroup* group) {
    *last = (*evaluate)(model, group, "grounding_results.json");
    return *last;
  };
  task.best_key = "val_d";  // Grounding.py keeps checkpoint_best.pth on val_d
  run_training(options, config, std::move(task));
  return *last;
}

namespace tasks {

Task grounding_task() {
  Task task{"grounding",
            "Weakly supervised visual grounding (RefCOCO+): fine-tune a pretrained checkpoint, or --evaluate one "
            "(Grad-CAM ranks the detector boxes of every referring expression; val_d / testA_d / testB_d)",
            [](CLI::App& command) {
              auto options = std::make_shared<GroundingOptions>();
              options->output_dir = "output/RefCOCO";  // Grounding.py's default
              auto flags = std::make_shared<TrainFlags>();
              flags->add_to(command, *options, "Grounding config (configs/Grounding.yaml)");
              command.add_flag("--evaluate", options->evaluate, "Only evaluate --checkpoint on test_file");
              auto mode = std::make_shared<std::string>("itm");
              command.add_option("--gradcam_mode", *mode, "itm: the ITM score through a fusion layer's "
                                 "cross-attention; itc: the ITC similarity through a ViT block")
                  ->check(CLI::IsMember({"itm", "itc"}));
              command.add_option("--block_num", options->gradcam.block_num,
                                 "The layer Grad-CAM reads (itm: a BERT fusion layer; itc: a ViT block)")
                  ->capture_default_str();
              return std::function<void()>([options, flags, mode] {
                flags->compute.apply_to(*options);
                options->gradcam.mode = parse_gradcam_mode(*mode);
                run_grounding(*options);
              });
            },
            {}};
  task.official_script = "Grounding.py";
  task.checkpoint_model = [](const Config&) { return grounding_model_options(); };
  task.add_tools = grounding::add_gradcam_command;
  return task;
}

}  // namespace tasks
}  // namespace albef
