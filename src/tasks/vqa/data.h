#pragma once
// VQA's data (dataset/vqa_dataset.py): training questions with weighted
// answers (VQA v2 and Visual Genome items), test questions, the candidate
// answer list, and the loader that batches them as vqa_collate_fn.

#include "albef/config/config.h"
#include "albef/data/loader.h"
#include "albef/train/trainer.h"

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace albef::vqa {

/// One training question: `answers` with their weights (VQA v2: each
/// distinct answer accumulates 1/len(answers) in first-seen order; VG: its
/// one answer with weight 0.5), the `[SEP]` not yet appended.
struct TrainQuestion {
  std::string image;  ///< join_path(vqa_root or vg_root, image), resolved when opened
  std::string question;
  std::vector<std::string> answers;
  std::vector<double> weights;
  uint32_t file = 0;
};

struct TrainSet {
  std::vector<std::string> annotation_files;
  std::vector<TrainQuestion> questions;
  /// The file to open for question `index` (data::resolve_image_path).
  std::string image_path(int64_t index) const;
};

/// Every item of every `train_file`, in order. Items: {"image", "question",
/// "answer" (a list, or one string), "dataset": "vqa" | "vg"}. Malformed
/// entries are an error naming the file, the entry and the key.
TrainSet load_train_set(const std::vector<std::string>& files, const std::string& vqa_root,
                        const std::string& vg_root);

/// One test question; `answers` (and `answer_type`) when the file has them
/// (the VQA v2 val split), for the local accuracy.
struct TestQuestion {
  int64_t question_id = 0;
  std::string image;
  std::string question;  ///< as written
  std::vector<std::string> answers;
  std::string answer_type;
};

struct TestSet {
  std::string annotation_file;
  std::vector<TestQuestion> questions;
  bool has_answers() const;
  std::vector<std::string> image_paths() const;
};

/// The `test_file` items: {"question_id", "image", "question", ["answer",
/// "answer_type"]}, each image under vqa_root (or vg_root for "dataset": "vg").
TestSet load_test_set(const std::string& file, const std::string& vqa_root, const std::string& vg_root);

/// `answer_list.json`: a non-empty JSON list of distinct strings.
std::vector<std::string> load_answer_list(const std::string& file);

/// One training batch (vqa_collate_fn): B images and questions, the A
/// answers of them all (with `eos`), their weights and n (answers per question).
struct TrainBatch {
  int64_t epoch = 0, index = 0;
  at::Tensor images;                   ///< [B, 3, R, R]
  std::vector<std::string> questions;  ///< pre_question(q, 30)
  std::vector<std::string> answers;    ///< answer + eos, question by question
  at::Tensor weights;                  ///< [A] float32
  at::Tensor answers_per_question;     ///< [B] int64
};

/// The training data of a VQA run: this rank's DistributedSampler shard of
/// `train_set` through the fine-tuning transform (RandomResizedCrop 0.5-1,
/// flip, RandAugment), unreadable images skipped and counted.
class TrainLoader {
 public:
  TrainLoader(TrainSet train_set, const Config& config, const data::TrainLoaderOptions& options);
  ~TrainLoader();
  void start_epoch(int64_t epoch, int64_t skip_batches = 0);
  std::optional<TrainBatch> next();
  int64_t num_batches() const;
  int64_t num_samples() const;
  data::BadSampleReport bad_samples() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace albef::vqa
