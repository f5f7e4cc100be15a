#pragma once
// The data of the classification tasks (dataset/nlvr_dataset.py,
// dataset/ve_dataset.py): items of one or two images, a sentence and a
// class, the training loader that batches them and the evaluation's.

#include "albef/config/config.h"
#include "albef/data/loader.h"

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace albef::classification {

/// One annotation item.
struct LabeledItem {
  std::vector<std::string> images;  ///< join_path(image_root, ...), resolved when opened
  std::string sentence;             ///< as written
  int64_t label = 0;                ///< the class as the official dataset numbers it
  uint32_t file = 0;
};

/// The items of a split's annotation files, in order, each with the same
/// number of images.
struct LabeledSet {
  std::vector<std::string> annotation_files;
  std::vector<LabeledItem> items;
  int64_t images_per_item = 1;
  /// The file to open for image `image` of item `index` (data::resolve_image_path).
  std::string image_path(int64_t index, int64_t image) const;
  /// The annotation files, comma-separated, for messages.
  std::string source() const;
};

/// A batch of B items: images [k * B, 3, R, R] as the official scripts lay
/// them out (all first images, then all second images: torch.cat([image0,
/// image1])), sentences after pre_caption(s, 30), targets [B].
struct Batch {
  int64_t epoch = 0, index = 0;
  at::Tensor images;
  std::vector<std::string> sentences;
  at::Tensor targets;
};

/// The training loader: this rank's DistributedSampler shard through the
/// fine-tuning transform (RandomResizedCrop 0.5-1, flip, RandAugment; each
/// image of an item drawn on its own), unreadable images skipped and counted.
class TrainLoader {
 public:
  TrainLoader(LabeledSet set, const Config& config, const data::TrainLoaderOptions& options);
  ~TrainLoader();
  void start_epoch(int64_t epoch, int64_t skip_batches = 0);
  std::optional<Batch> next();
  int64_t num_batches() const;
  int64_t num_samples() const;
  data::BadSampleReport bad_samples() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Items [begin, end) of `set` in order, `batch_size` at a time, through the
/// test transform (an unreadable image is an error naming it: an evaluation
/// needs every item).
class EvalLoader {
 public:
  EvalLoader(const LabeledSet& set, int64_t begin, int64_t end, int image_res, int64_t batch_size);
  ~EvalLoader();
  std::optional<Batch> next();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace albef::classification
