#include "tasks/classification/data.h"

#include "albef/core/error.h"
#include "albef/data/annotations.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/augment.h"
#include "albef/vision/image.h"
#include "data/sample_loader.h"

#include <ATen/ATen.h>

#include <utility>

namespace albef::classification {
namespace {

// One loaded training item.
struct LoadedItem {
  std::vector<at::Tensor> images;
  std::string sentence;
  int64_t label = 0;
};

// The official collate, then torch.cat([image0, image1]) of the scripts.
at::Tensor stack_images(std::vector<std::vector<at::Tensor>>& per_item, int64_t images_per_item) {
  std::vector<at::Tensor> ordered;
  for (int64_t k = 0; k < images_per_item; ++k)
    for (auto& images : per_item) ordered.push_back(std::move(images[static_cast<size_t>(k)]));
  return at::stack(ordered);
}

}  // namespace

std::string LabeledSet::image_path(int64_t index, int64_t image) const {
  const LabeledItem& item = items[static_cast<size_t>(index)];
  return data::resolve_image_path(item.images[static_cast<size_t>(image)], annotation_files[item.file]);
}

std::string LabeledSet::source() const {
  std::string out;
  for (const std::string& name : annotation_files) out += (out.empty() ? "" : ", ") + name;
  return out;
}

struct TrainLoader::Impl {
  Impl(LabeledSet set_in, const Config& config, const data::TrainLoaderOptions& options)
      : set(std::move(set_in)),
        transform(static_cast<int>(config.image_res), vision::kFinetuneScaleMin),
        loader(static_cast<int64_t>(set.items.size()), set.source(),
               [this](int64_t index, int64_t epoch) { return load(index, epoch); },
               [this](std::vector<LoadedItem>& samples, int64_t epoch, int64_t b) { return collate(samples, epoch, b); },
               options) {}

  LoadedItem load(int64_t index, int64_t epoch) const {
    const data::TrainLoaderOptions& options = loader.options();
    vision::Rng rng =
        vision::Rng::for_sample(options.augment_seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index));
    const LabeledItem& item = set.items[static_cast<size_t>(index)];
    LoadedItem loaded;
    for (int64_t k = 0; k < set.images_per_item; ++k)
      loaded.images.push_back(transform(data::read_sample_image(set.image_path(index, k)), rng));
    loaded.sentence = text::pre_caption(item.sentence, 30);
    loaded.label = item.label;
    return loaded;
  }

  Batch collate(std::vector<LoadedItem>& samples, int64_t epoch, int64_t b) const {
    Batch batch;
    batch.epoch = epoch;
    batch.index = b;
    std::vector<std::vector<at::Tensor>> images;
    std::vector<int64_t> labels;
    for (LoadedItem& sample : samples) {
      images.push_back(std::move(sample.images));
      batch.sentences.push_back(std::move(sample.sentence));
      labels.push_back(sample.label);
    }
    batch.images = stack_images(images, set.images_per_item);
    batch.targets = at::tensor(labels, at::kLong);
    return batch;
  }

  const LabeledSet set;
  const vision::TrainTransform transform;
  data::SampleLoader<LoadedItem, Batch> loader;  // last: its workers read the members above
};

TrainLoader::TrainLoader(LabeledSet set, const Config& config, const data::TrainLoaderOptions& options)
    : impl_(std::make_unique<Impl>(std::move(set), config, options)) {}
TrainLoader::~TrainLoader() = default;
void TrainLoader::start_epoch(int64_t epoch, int64_t skip_batches) { impl_->loader.start_epoch(epoch, skip_batches); }
std::optional<Batch> TrainLoader::next() { return impl_->loader.next(); }
int64_t TrainLoader::num_batches() const { return impl_->loader.num_batches(); }
int64_t TrainLoader::num_samples() const { return impl_->loader.num_samples(); }
data::BadSampleReport TrainLoader::bad_samples() const { return impl_->loader.bad_samples(); }

struct EvalLoader::Impl {
  // Item i's images are consecutive in the image list; a batch of B items is 2B images.
  static std::vector<std::string> paths_of(const LabeledSet& set, int64_t begin, int64_t end) {
    std::vector<std::string> paths;
    for (int64_t i = begin; i < end; ++i)
      for (int64_t k = 0; k < set.images_per_item; ++k) paths.push_back(set.image_path(i, k));
    return paths;
  }

  Impl(const LabeledSet& set, int64_t begin, int64_t end, int image_res, int64_t batch_size)
      : set(set),
        next_item(begin),
        images(paths_of(set, begin, end), image_res, batch_size * set.images_per_item) {}

  const LabeledSet& set;
  int64_t next_item;
  data::EvalImageLoader images;
};

EvalLoader::EvalLoader(const LabeledSet& set, int64_t begin, int64_t end, int image_res, int64_t batch_size)
    : impl_(std::make_unique<Impl>(set, begin, end, image_res, batch_size)) {}
EvalLoader::~EvalLoader() = default;

std::optional<Batch> EvalLoader::next() {
  std::optional<data::EvalBatch> loaded = impl_->images.next();
  if (!loaded) return std::nullopt;
  const int64_t k = impl_->set.images_per_item, count = loaded->images.size(0) / k;
  Batch batch;
  batch.index = impl_->next_item;
  // [i0a, i0b, i1a, i1b, ...] -> [i0a, i1a, ..., i0b, i1b, ...]
  batch.images = loaded->images.view({count, k, loaded->images.size(1), loaded->images.size(2),
                                      loaded->images.size(3)})
                     .transpose(0, 1)
                     .reshape({count * k, loaded->images.size(1), loaded->images.size(2), loaded->images.size(3)});
  std::vector<int64_t> labels;
  for (int64_t i = impl_->next_item; i < impl_->next_item + count; ++i) {
    const LabeledItem& item = impl_->set.items[static_cast<size_t>(i)];
    batch.sentences.push_back(text::pre_caption(item.sentence, 30));
    labels.push_back(item.label);
  }
  batch.targets = at::tensor(labels, at::kLong);
  impl_->next_item += count;
  return batch;
}

}  // namespace albef::classification
