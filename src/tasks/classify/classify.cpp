// `albef classify`: zero-shot labels for images and folders of them.

#include "albef/tasks/classify.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/data/annotations.h"
#include "albef/data/loader.h"
#include "albef/distributed/process_group.h"
#include "tasks/classify/results.h"
#include "tasks/flags.h"
#include "tasks/registry.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unordered_set>
#include <unistd.h>

namespace albef {
namespace {
using nlohmann::json;
using classify::Classified;

json to_json(const Classified& result) {
  json labels = json::array();
  for (size_t i = 0; i < result.labels.size(); ++i) {
    json entry = {{"label", result.labels[i]}, {"probability", result.probabilities[i]}};
    if (!result.match.empty() && !std::isnan(result.match[i])) entry["itm_match"] = result.match[i];
    labels.push_back(std::move(entry));
  }
  return {{"image", result.image}, {"labels", labels}};
}

void print_table(const Classified& result) {
  std::printf("%s\n", result.image.c_str());
  for (size_t i = 0; i < result.labels.size(); ++i) {
    std::printf("  %-30s %6.2f%%", result.labels[i].c_str(), 100.0 * result.probabilities[i]);
    if (!result.match.empty() && !std::isnan(result.match[i])) std::printf("   ITM match %6.2f%%", 100.0 * result.match[i]);
    std::printf("\n");
  }
}

// A progress line on stderr: rewritten in place on a terminal, else one line per tenth of the work.
class Progress {
 public:
  explicit Progress(int64_t total) : total_(total), terminal_(isatty(2) != 0), start_(std::chrono::steady_clock::now()) {}
  void update(int64_t done, int64_t skipped) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = done / std::max(elapsed, 1e-9);
    const auto eta = static_cast<int64_t>(rate > 0 ? (total_ - done) / rate : 0);
    const int64_t tenth = std::max<int64_t>(1, total_ / 10);
    if (!terminal_ && done / tenth == last_ / tenth && done != total_) return;
    last_ = done;
    std::fprintf(stderr, "%sclassified %lld/%lld images, %.1f images/s, ETA %lld:%02lld, %lld unreadable%s",
                 terminal_ ? "\r" : "", static_cast<long long>(done), static_cast<long long>(total_), rate,
                 static_cast<long long>(eta / 60), static_cast<long long>(eta % 60), static_cast<long long>(skipped),
                 terminal_ ? "" : "\n");
    std::fflush(stderr);
  }
  void finish() {
    if (terminal_) std::fprintf(stderr, "\n");
  }

 private:
  int64_t total_, last_ = -1;
  bool terminal_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

nlohmann::json run_classify(const ClassifyOptions& options) {
  if (distributed::DistributedEnv::from_environment().distributed())
    fail("classify runs in one process (it is not data-parallel): run it without albef launch");
  if (options.top < 1) fail("--top must be at least 1, got ", options.top);
  if (options.rerank < 0) fail("--rerank must be 0 or more, got ", options.rerank);
  // Everything the run reads is checked before the model loads.
  const std::vector<std::string> labels = read_labels(options.labels);
  const std::vector<std::string> templates =
      options.templates.empty() ? default_templates() : read_templates(options.templates);
  std::vector<std::string> images = options.images;
  if (!options.images_dir.empty()) {
    const std::vector<std::string> listed = data::image_paths_from(options.images_dir);
    images.insert(images.end(), listed.begin(), listed.end());
  }
  if (images.empty()) fail("classify: no images (give --image or --images DIR)");
  classify::GroundTruth truth;
  if (!options.ground_truth.empty()) {
    truth = classify::read_ground_truth(options.ground_truth, labels);
    prepare_output_file(options.confusion, "--confusion");
  }
  const int64_t top = std::min<int64_t>(options.top, static_cast<int64_t>(labels.size()));
  const bool rerank = options.rerank > 0;
  // With ground truth the top-5 accuracy needs five labels per image.
  const int64_t keep = std::max<int64_t>(top, truth.entries.empty() ? 0 : 5);

  std::vector<Classified> earlier;
  std::ofstream csv;
  if (!options.csv.empty()) {
    const std::vector<std::string> header = classify::csv_header(top, rerank);
    const bool exists = std::filesystem::exists(options.csv) && std::filesystem::file_size(options.csv) > 0;
    if (exists && !options.append)
      fail("--csv ", options.csv, " already holds results: give --append to continue it (its images are skipped), "
           "or another file");
    prepare_output_file(options.csv, "--csv");
    if (exists) earlier = classify::read_csv_for_append(options.csv, header);
    csv.open(options.csv, std::ios::app | std::ios::binary);
    if (!exists) {
      std::string line;
      for (const std::string& column : header) line += (line.empty() ? "" : ",") + column;
      csv << line << "\n" << std::flush;
    }
    if (!csv) fail("--csv ", options.csv, ": cannot write");
  }
  std::unordered_set<std::string> done;
  for (const Classified& row : earlier) done.insert(row.image);
  std::vector<std::string> todo;
  for (const std::string& image : images)
    if (!done.count(image)) todo.push_back(image);
  if (!earlier.empty())
    std::fprintf(stderr, "%s: %zu images already classified, %zu to go\n", options.csv.c_str(), earlier.size(),
                 todo.size());

  AlbefInference albef(options.model);
  const auto text_start = std::chrono::steady_clock::now();
  const ZeroShotLabels label_side = embed_labels(albef, labels, templates, rerank);
  std::fprintf(stderr, "%zu labels x %zu templates embedded in %.2f s\n", labels.size(), templates.size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - text_start).count());

  std::vector<Classified> results;
  std::vector<data::BadSample> unreadable;
  data::EvalImageLoader loader(todo, static_cast<int>(albef.config().image_res), options.model.batch_size,
                               options.workers, 3, /*skip_unreadable=*/true);
  Progress progress(static_cast<int64_t>(todo.size()));
  int64_t seen = 0;
  while (auto batch = loader.next()) {
    unreadable.insert(unreadable.end(), batch->unreadable.begin(), batch->unreadable.end());
    seen += batch->indices.size(0) + static_cast<int64_t>(batch->unreadable.size());
    if (batch->indices.size(0) > 0) {
      const ZeroShotScores scores = classify_images(albef.model(), label_side, batch->images, keep, options.rerank,
                                                       options.model.precision);
      std::string rows;
      for (int64_t b = 0; b < batch->indices.size(0); ++b) {
        Classified result;
        result.image = todo[static_cast<size_t>(batch->indices[b].item<int64_t>())];
        for (int64_t i = 0; i < scores.ranking.size(1); ++i) {
          result.labels.push_back(labels[static_cast<size_t>(scores.ranking[b][i].item<int64_t>())]);
          result.probabilities.push_back(scores.ranked_probabilities[b][i].item<double>());
          if (rerank) result.match.push_back(scores.ranked_match[b][i].item<double>());
        }
        rows += classify::csv_row(result, top, rerank);
        results.push_back(std::move(result));
      }
      // One write per batch, flushed: a kill loses at most the line being written.
      if (csv.is_open()) csv << rows << std::flush;
    }
    progress.update(seen, static_cast<int64_t>(unreadable.size()));
  }
  progress.finish();
  if (csv.is_open() && !csv) fail("--csv ", options.csv, ": write failed");

  json out = json::array();
  for (const Classified& result : results) {
    Classified shown = result;
    shown.labels.resize(static_cast<size_t>(std::min<int64_t>(top, static_cast<int64_t>(shown.labels.size()))));
    shown.probabilities.resize(shown.labels.size());
    if (rerank) shown.match.resize(shown.labels.size());
    out.push_back(to_json(shown));
    if (!options.json && options.csv.empty()) print_table(shown);
  }
  if (options.json) std::cout << out.dump(1) << "\n";
  if (!unreadable.empty()) {
    std::fprintf(stderr, "skipped %zu unreadable image(s):\n", unreadable.size());
    for (const data::BadSample& bad : unreadable) std::fprintf(stderr, "  %s (%s)\n", bad.path.c_str(), bad.message.c_str());
  }
  if (!options.csv.empty())
    std::fprintf(stderr, "wrote %zu rows to %s\n", results.size(), options.csv.c_str());

  json report = {{"results", out}, {"unreadable", unreadable.size()}};
  if (!truth.entries.empty()) {
    std::vector<Classified> all = earlier;
    all.insert(all.end(), results.begin(), results.end());
    const json scores = classify::accuracy(all, truth, labels, options.confusion);
    FILE* stream = options.json ? stderr : stdout;
    std::fprintf(stream, "accuracy on %lld labelled images: top-1 %.2f%%, top-5 %.2f%%\n",
                 scores["images"].get<long long>(), 100.0 * scores["top1"].get<double>(),
                 100.0 * scores["top5"].get<double>());
    for (const auto& [label, entry] : scores["per_label"].items())
      std::fprintf(stream, "  %-30s %6.2f%% of %lld\n", label.c_str(), 100.0 * entry["top1"].get<double>(),
                   entry["images"].get<long long>());
    std::fprintf(stream, "confusion matrix: %s\n", options.confusion.c_str());
    report["accuracy"] = scores;
  }
  return report;
}

namespace tasks {

Task classify_task() {
  Task task{"classify",
          "Zero-shot image classification: label images or whole folders with any words (ITC with prompt "
          "ensembling, optionally ITM re-ranking), as a table, JSON or CSV, with accuracy against ground truth",
          [](CLI::App& command) {
            auto options = std::make_shared<ClassifyOptions>();
            auto model = std::make_shared<ModelFlags>();
            model->add_to(command);
            command.add_option("--labels", options->labels, "\"cat,dog,horse\", or a file with one label per line")
                ->required();
            command.add_option("--templates", options->templates,
                               "A file of caption templates, one per line, {} where the label goes (default: "
                               "\"a photo of a {}.\" and 7 more)");
            command.add_option("--image", options->images, "An image file (repeatable)");
            command.add_option("--images", options->images_dir, "A folder of images, or a file listing them");
            command.add_option("--top", options->top, "Labels shown per image")->capture_default_str();
            command.add_option("--rerank", options->rerank,
                               "Re-score each image's best K labels with the ITM head (caption: the first template)")
                ->capture_default_str();
            command.add_option("--workers", options->workers, "Image-decoding threads (0 = one per core)");
            command.add_flag("--json", options->json, "Print JSON instead of a table");
            command.add_option("--csv", options->csv, "Write one row per image as it goes (path, labels, probabilities)");
            command.add_flag("--append", options->append,
                             "Continue an interrupted --csv: its images are skipped, a cut-off last line is redone");
            command.add_option("--ground_truth,--ground-truth", options->ground_truth,
                               "JSON of image -> true label: top-1/top-5 and per-label accuracy, confusion matrix");
            command.add_option("--confusion", options->confusion, "Where the confusion matrix PNG goes")
                ->capture_default_str();
            return std::function<void()>([options, model] {
              options->model = model->options();
              run_classify(*options);
            });
          },
          {}};
  task.data_parallel = false;
  return task;
}

}  // namespace tasks
}  // namespace albef
