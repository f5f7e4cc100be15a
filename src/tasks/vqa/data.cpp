#include "tasks/vqa/data.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/data/annotations.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/augment.h"
#include "data/json_entries.h"
#include "data/sample_loader.h"

#include <ATen/ATen.h>

#include <set>
#include <utility>

namespace albef::vqa {
namespace {

using nlohmann::json;

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

// "answer" as strings: a list of them, or one (a list of one).
std::vector<std::string> answers_field(const json& entry, const std::string& file, size_t index, bool required) {
  const auto it = entry.find("answer");
  if (it == entry.end()) {
    if (required) fail(file, ": entry ", index, ": missing \"answer\"");
    return {};
  }
  if (it->is_string()) return {it->get<std::string>()};
  if (!it->is_array())
    fail(file, ": entry ", index, ": \"answer\" must be a string or a list of strings, found ", it->type_name());
  if (it->empty()) fail(file, ": entry ", index, ": \"answer\" is an empty list");
  std::vector<std::string> answers;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& answer = (*it)[i];
    if (!answer.is_string())
      fail(file, ": entry ", index, ": \"answer\"[", i, "] must be a string, found ", answer.type_name());
    answers.push_back(answer.get<std::string>());
  }
  return answers;
}

// The root of an item's image: vqa_root for "vqa", vg_root for "vg".
const std::string& image_root(const std::string& dataset, const std::string& vqa_root, const std::string& vg_root,
                              const std::string& file, size_t index) {
  if (dataset == "vqa") return vqa_root;
  if (dataset == "vg") return vg_root;
  fail(file, ": entry ", index, ": \"dataset\" must be \"vqa\" or \"vg\", found \"", dataset, "\"");
}

// One loaded training question.
struct LoadedQuestion {
  at::Tensor image;
  std::string question;
  std::vector<std::string> answers;
  std::vector<double> weights;
};

}  // namespace

std::string TrainSet::image_path(int64_t index) const {
  const TrainQuestion& question = questions[static_cast<size_t>(index)];
  return data::resolve_image_path(question.image, annotation_files[question.file]);
}

TrainSet load_train_set(const std::vector<std::string>& files, const std::string& vqa_root,
                        const std::string& vg_root) {
  TrainSet set;
  set.annotation_files = files;
  for (size_t f = 0; f < files.size(); ++f) {
    const std::string& file = files[f];
    data::for_each_entry(file, [&](size_t index, const json& entry) {
      TrainQuestion item;
      item.file = static_cast<uint32_t>(f);
      const std::string dataset = data::string_field(entry, "dataset", file, index);
      item.image = data::join_path(image_root(dataset, vqa_root, vg_root, file, index),
                                   data::string_field(entry, "image", file, index));
      item.question = data::string_field(entry, "question", file, index);
      const std::vector<std::string> answers = answers_field(entry, file, index, /*required=*/true);
      if (dataset == "vg") {
        if (answers.size() != 1) fail(file, ": entry ", index, ": a \"vg\" item has one \"answer\" string");
        item.answers = answers;
        item.weights = {0.5};
      } else {
        // vqa_dataset.py: each answer adds 1/len(answers) to its weight, in first-seen order.
        for (const std::string& answer : answers) {
          size_t at = 0;
          while (at < item.answers.size() && item.answers[at] != answer) ++at;
          if (at == item.answers.size()) {
            item.answers.push_back(answer);
            item.weights.push_back(1.0 / static_cast<double>(answers.size()));
          } else {
            item.weights[at] += 1.0 / static_cast<double>(answers.size());
          }
        }
      }
      set.questions.push_back(std::move(item));
    });
  }
  return set;
}

bool TestSet::has_answers() const {
  for (const TestQuestion& question : questions)
    if (question.answers.empty()) return false;
  return !questions.empty();
}

std::vector<std::string> TestSet::image_paths() const {
  std::vector<std::string> paths;
  for (const TestQuestion& question : questions)
    paths.push_back(data::resolve_image_path(question.image, annotation_file));
  return paths;
}

TestSet load_test_set(const std::string& file, const std::string& vqa_root, const std::string& vg_root) {
  TestSet set;
  set.annotation_file = file;
  std::set<int64_t> seen;
  data::for_each_entry(file, [&](size_t index, const json& entry) {
    TestQuestion item;
    const auto id = entry.find("question_id");
    if (id == entry.end()) fail(file, ": entry ", index, ": missing \"question_id\"");
    if (!id->is_number_integer())
      fail(file, ": entry ", index, ": \"question_id\" must be an integer, found ", id->type_name());
    item.question_id = id->get<int64_t>();
    if (!seen.insert(item.question_id).second)
      fail(file, ": entry ", index, ": question_id ", item.question_id, " appears twice");
    const auto dataset = entry.find("dataset");
    const std::string& root = dataset != entry.end() && dataset->is_string()
                                  ? image_root(dataset->get<std::string>(), vqa_root, vg_root, file, index)
                                  : vqa_root;
    item.image = data::join_path(root, data::string_field(entry, "image", file, index));
    item.question = data::string_field(entry, "question", file, index);
    item.answers = answers_field(entry, file, index, /*required=*/false);
    if (const auto type = entry.find("answer_type"); type != entry.end() && type->is_string())
      item.answer_type = type->get<std::string>();
    set.questions.push_back(std::move(item));
  });
  return set;
}

std::vector<std::string> load_answer_list(const std::string& file) {
  json list;
  try {
    list = json::parse(read_file(file));
  } catch (const json::exception& e) {
    fail(file, ": invalid JSON: ", e.what());
  }
  if (!list.is_array()) fail(file, ": the answer list must be a JSON list of strings, found ", list.type_name());
  if (list.empty()) fail(file, ": the answer list is empty");
  std::vector<std::string> answers;
  std::set<std::string> seen;
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_string()) fail(file, ": answer ", i, " must be a string, found ", list[i].type_name());
    answers.push_back(list[i].get<std::string>());
    if (answers.back().empty()) fail(file, ": answer ", i, " is empty");
    if (!seen.insert(answers.back()).second) fail(file, ": answer ", i, " (\"", answers.back(), "\") appears twice");
  }
  return answers;
}

struct TrainLoader::Impl {
  Impl(TrainSet set_in, const Config& config, const data::TrainLoaderOptions& options)
      : set(std::move(set_in)),
        transform(static_cast<int>(config.image_res), vision::kFinetuneScaleMin),
        eos(config.eos),
        loader(static_cast<int64_t>(set.questions.size()), join_names(set.annotation_files),
               [this](int64_t index, int64_t epoch) { return load(index, epoch); },
               [this](std::vector<LoadedQuestion>& samples, int64_t epoch, int64_t b) {
                 return collate(samples, epoch, b);
               },
               options) {}

  LoadedQuestion load(int64_t index, int64_t epoch) const {
    const cv::Mat rgb = data::read_sample_image(set.image_path(index));
    const data::TrainLoaderOptions& options = loader.options();
    vision::Rng rng =
        vision::Rng::for_sample(options.augment_seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index));
    const TrainQuestion& item = set.questions[static_cast<size_t>(index)];
    return {transform(rgb, rng), text::pre_question(item.question, 30), item.answers, item.weights};
  }

  // vqa_collate_fn: answers (with eos) and weights of all questions in order, n per question.
  TrainBatch collate(std::vector<LoadedQuestion>& samples, int64_t epoch, int64_t b) const {
    TrainBatch batch;
    batch.epoch = epoch;
    batch.index = b;
    std::vector<at::Tensor> images;
    std::vector<float> weights;
    std::vector<int64_t> counts;
    for (LoadedQuestion& sample : samples) {
      images.push_back(std::move(sample.image));
      batch.questions.push_back(std::move(sample.question));
      for (size_t i = 0; i < sample.answers.size(); ++i) {
        batch.answers.push_back(sample.answers[i] + eos);
        weights.push_back(static_cast<float>(sample.weights[i]));
      }
      counts.push_back(static_cast<int64_t>(sample.answers.size()));
    }
    batch.images = at::stack(images);
    batch.weights = at::tensor(weights, at::kFloat);
    batch.answers_per_question = at::tensor(counts, at::kLong);
    return batch;
  }

  const TrainSet set;
  const vision::TrainTransform transform;
  const std::string eos;
  data::SampleLoader<LoadedQuestion, TrainBatch> loader;  // last: its workers read the members above
};

TrainLoader::TrainLoader(TrainSet train_set, const Config& config, const data::TrainLoaderOptions& options)
    : impl_(std::make_unique<Impl>(std::move(train_set), config, options)) {}
TrainLoader::~TrainLoader() = default;
void TrainLoader::start_epoch(int64_t epoch, int64_t skip_batches) { impl_->loader.start_epoch(epoch, skip_batches); }
std::optional<TrainBatch> TrainLoader::next() { return impl_->loader.next(); }
int64_t TrainLoader::num_batches() const { return impl_->loader.num_batches(); }
int64_t TrainLoader::num_samples() const { return impl_->loader.num_samples(); }
data::BadSampleReport TrainLoader::bad_samples() const { return impl_->loader.bad_samples(); }

}  // namespace albef::vqa
