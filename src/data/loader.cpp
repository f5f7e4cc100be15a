// The training and evaluation loaders on top of BatchPipeline.

#include "albef/data/loader.h"

#include "albef/core/error.h"
#include "albef/data/sampler.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/image.h"
#include "data/batch_pipeline.h"
#include "data/sample_loader.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>

#include <algorithm>
#include <iterator>
#include <thread>
#include <utility>

namespace albef::data {
namespace {

at::Tensor int64_tensor(const std::vector<int64_t>& values) {
  at::Tensor out = at::empty({static_cast<int64_t>(values.size())}, at::kLong);
  std::copy(values.begin(), values.end(), out.data_ptr<int64_t>());
  return out;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

// One loaded training sample.
struct LoadedSample {
  at::Tensor image;
  std::vector<at::Tensor> views;  // a SampleViewsTransform's tensors after the image
  std::string caption;
  int64_t index = -1;
};

}  // namespace

int resolve_workers(int num_workers) {
  ALBEF_CHECK(num_workers >= 0, "the number of workers must not be negative, got ", num_workers);
  if (num_workers > 0) return num_workers;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::string choose_caption(const TrainSample& sample, uint64_t augment_seed, int64_t epoch, int64_t index,
                           int max_words) {
  ALBEF_CHECK(!sample.captions.empty(), "sample ", index, " has no caption");
  size_t pick = 0;
  if (sample.captions.size() > 1) {
    vision::Rng rng = vision::Rng::for_sample(augment_seed ^ kCaptionStream, static_cast<uint64_t>(epoch),
                                              static_cast<uint64_t>(index));
    pick = static_cast<size_t>(rng.below(static_cast<int64_t>(sample.captions.size())));
  }
  return text::pre_caption(sample.captions[pick], max_words);
}

// ---------------------------------------------------------------------------
// TrainLoader

// One image and the caption drawn for this epoch.
struct TrainLoader::Impl {
  Impl(TrainDataset dataset_in, SampleViewsTransform transform_in, const TrainLoaderOptions& options)
      : dataset(std::move(dataset_in)),
        transform(std::move(transform_in)),
        loader(dataset.size(), join_names(dataset.annotation_files),
               [this](int64_t index, int64_t epoch) { return load(index, epoch); },
               [this](std::vector<LoadedSample>& samples, int64_t epoch, int64_t b) { return assemble(samples, epoch, b); },
               options) {}

  LoadedSample load(int64_t index, int64_t epoch) const {
    const cv::Mat rgb = read_sample_image(dataset.image_path(index));
    const TrainLoaderOptions& options = loader.options();
    vision::Rng rng =
        vision::Rng::for_sample(options.augment_seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index));
    LoadedSample sample;
    std::vector<at::Tensor> tensors = transform(rgb, rng);
    ALBEF_CHECK(!tensors.empty(), "the sample transform gave no image");
    sample.image = std::move(tensors.front());
    sample.views.assign(std::make_move_iterator(tensors.begin() + 1), std::make_move_iterator(tensors.end()));
    sample.caption = choose_caption(dataset.samples[static_cast<size_t>(index)], options.augment_seed, epoch, index,
                                    options.max_words);
    sample.index = index;
    return sample;
  }

  TrainBatch assemble(std::vector<LoadedSample>& samples, int64_t epoch, int64_t batch_index) const {
    TrainBatch batch;
    batch.epoch = epoch;
    batch.index = batch_index;
    std::vector<at::Tensor> images;
    std::vector<int64_t> indices, image_idx;
    for (LoadedSample& sample : samples) {
      images.push_back(std::move(sample.image));
      batch.captions.push_back(std::move(sample.caption));
      indices.push_back(sample.index);
      image_idx.push_back(dataset.samples[static_cast<size_t>(sample.index)].image_idx);
    }
    batch.images = at::stack(images);
    for (size_t view = 0; view < samples.front().views.size(); ++view) {
      std::vector<at::Tensor> stacked;
      for (LoadedSample& sample : samples) stacked.push_back(std::move(sample.views[view]));
      batch.views.push_back(at::stack(stacked));
    }
    batch.indices = int64_tensor(indices);
    if (dataset.num_images > 0) batch.image_idx = int64_tensor(image_idx);
    return batch;
  }

  const TrainDataset dataset;
  const SampleViewsTransform transform;
  SampleLoader<LoadedSample, TrainBatch> loader;  // last: its workers read the members above
};

TrainLoader::TrainLoader(TrainDataset dataset, SampleTransform transform, TrainLoaderOptions options) {
  ALBEF_CHECK(transform != nullptr, "no transform given");
  impl_ = std::make_unique<Impl>(
      std::move(dataset),
      [transform = std::move(transform)](const cv::Mat& rgb, vision::Rng& rng) {
        return std::vector<at::Tensor>{transform(rgb, rng)};
      },
      options);
}

TrainLoader::TrainLoader(TrainDataset dataset, SampleViewsTransform transform, TrainLoaderOptions options) {
  ALBEF_CHECK(transform != nullptr, "no transform given");
  impl_ = std::make_unique<Impl>(std::move(dataset), std::move(transform), options);
}

TrainLoader::~TrainLoader() = default;

void TrainLoader::start_epoch(int64_t epoch, int64_t skip_batches) { impl_->loader.start_epoch(epoch, skip_batches); }

void TrainLoader::set_order(std::vector<int64_t> order) { impl_->loader.set_order(std::move(order)); }

std::optional<TrainBatch> TrainLoader::next() { return impl_->loader.next(); }

int64_t TrainLoader::num_batches() const { return impl_->loader.num_batches(); }

int64_t TrainLoader::num_samples() const { return impl_->loader.num_samples(); }

const TrainDataset& TrainLoader::dataset() const { return impl_->dataset; }

const TrainLoaderOptions& TrainLoader::options() const { return impl_->loader.options(); }

BadSampleReport TrainLoader::bad_samples() const { return impl_->loader.bad_samples(); }

// ---------------------------------------------------------------------------
// EvalImageLoader

struct EvalImageLoader::Impl {
  // A decoded image, or why it could not be decoded (when skipping).
  struct Loaded {
    at::Tensor image;
    std::string error;
  };

  Impl(std::vector<std::string> paths_in, int image_res, int64_t batch_size, int num_workers, int prefetch,
       bool skip_unreadable)
      : paths(std::move(paths_in)), batch_size(batch_size), pipeline(resolve_workers(num_workers), prefetch) {
    pipeline.start(
        static_cast<int64_t>(paths.size()), batch_size, 0,
        [this, image_res, skip_unreadable](int64_t slot) {
          const std::string& path = paths[static_cast<size_t>(slot)];
          if (!skip_unreadable) return Loaded{vision::load_test_pixels(path, image_res), {}};
          try {
            return Loaded{vision::load_test_pixels(path, image_res), {}};
          } catch (const std::exception& e) {
            return Loaded{at::Tensor(), e.what()};
          }
        },
        [this, image_res](std::vector<Loaded>& loaded, int64_t b) {
          EvalBatch batch;
          std::vector<at::Tensor> images;
          std::vector<int64_t> indices;
          for (size_t i = 0; i < loaded.size(); ++i) {
            const int64_t index = b * this->batch_size + static_cast<int64_t>(i);
            if (loaded[i].image.defined()) {
              images.push_back(loaded[i].image);
              indices.push_back(index);
            } else {
              batch.unreadable.push_back({index, paths[static_cast<size_t>(index)], loaded[i].error});
            }
          }
          batch.images = images.empty() ? at::empty({0, 3, image_res, image_res}, at::kByte) : at::stack(images);
          batch.indices = int64_tensor(indices);
          return batch;
        });
  }

  const std::vector<std::string> paths;
  const int64_t batch_size;
  detail::BatchPipeline<Loaded, EvalBatch> pipeline;  // last: see TrainLoader::Impl
};

EvalImageLoader::EvalImageLoader(std::vector<std::string> image_paths, int image_res, int64_t batch_size,
                                 int num_workers, int prefetch_batches, bool skip_unreadable) {
  ALBEF_CHECK(image_res > 0, "image_res must be positive, got ", image_res);
  ALBEF_CHECK(batch_size > 0, "batch size must be positive, got ", batch_size);
  impl_ = std::make_unique<Impl>(std::move(image_paths), image_res, batch_size, num_workers, prefetch_batches,
                                 skip_unreadable);
}

EvalImageLoader::~EvalImageLoader() = default;

std::optional<EvalBatch> EvalImageLoader::next() { return impl_->pipeline.next(); }

int64_t EvalImageLoader::num_batches() const { return (size() + impl_->batch_size - 1) / impl_->batch_size; }

int64_t EvalImageLoader::size() const { return static_cast<int64_t>(impl_->paths.size()); }

}  // namespace albef::data
