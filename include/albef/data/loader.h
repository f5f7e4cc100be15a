#pragma once
/// @file loader.h
/// @brief Threaded data loaders: the training loader (DistributedSampler
/// order, train transform, bad images skipped) and the evaluation image
/// loader (test transform, in order).
///
/// Both decode and transform samples on worker threads, a few batches ahead
/// of the consumer, and hand out batches strictly in sampler order: the
/// contents of every batch depend only on the dataset, the options, the
/// epoch and the files, never on the number of threads or their timing.
/// `next()` and `start_epoch()` are meant for one consumer thread.

#include "albef/data/annotations.h"
#include "albef/vision/augment.h"

#include <ATen/core/Tensor.h>
#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace albef::data {

/// Turns a decoded RGB image (CV_8UC3) into a float32 [3, R, R] tensor using
/// only `rng` for its random decisions. Called concurrently from the worker
/// threads, so it must be thread-safe; vision::TrainTransform is.
using SampleTransform = std::function<at::Tensor(const cv::Mat& rgb, vision::Rng& rng)>;

/// The same for a sample that gives several tensors: the first is the image
/// [3, R, R], the others land in TrainBatch::views (SIMLA's tokenizer view
/// and patch mask). Same rules: thread-safe, `rng` its only randomness.
using SampleViewsTransform = std::function<std::vector<at::Tensor>(const cv::Mat& rgb, vision::Rng& rng)>;

/// Separates the caption draw's stream from the transform's ("captions").
constexpr uint64_t kCaptionStream = 0x63617074696f6e73ULL;

/// The caption of `sample` in `epoch`: its only caption, or, when it has
/// several, the one drawn (Rng::below) from
/// `Rng::for_sample(augment_seed ^ kCaptionStream, epoch, index)` — a stream
/// apart from the image transform's — then pre_caption(c, max_words).
std::string choose_caption(const TrainSample& sample, uint64_t augment_seed, int64_t epoch, int64_t index,
                           int max_words);

/// Settings of a TrainLoader.
struct TrainLoaderOptions {
  int64_t batch_size = 64;
  /// pre_caption's word limit (the official datasets use 30).
  int max_words = 30;
  /// Decoding threads; 0 means one per core.
  int num_workers = 0;
  /// How many batches the workers may prepare ahead of the consumer.
  int prefetch_batches = 3;
  int64_t world_size = 1;
  int64_t rank = 0;
  bool shuffle = true;
  /// The DistributedSampler seed (torch's default is 0).
  uint64_t sampler_seed = 0;
  /// Seeds the per-sample streams: sample i of epoch e is transformed with
  /// `Rng::for_sample(augment_seed, e, i)`.
  uint64_t augment_seed = 0;
  /// An epoch fails once more than this fraction of this rank's samples
  /// turned out unreadable.
  double max_bad_fraction = 0.5;
  /// How many unreadable files bad_samples() lists per epoch.
  int max_reported_bad = 5;
};

/// One training batch, in the official collate layout.
struct TrainBatch {
  int64_t epoch = 0;
  /// Position of the batch in its epoch (counting skipped batches).
  int64_t index = 0;
  /// float32 [B, 3, R, R].
  at::Tensor images;
  /// The pre_caption'ed captions.
  std::vector<std::string> captions;
  /// int64 [B]: the dataset index of each sample (the replacement's, when
  /// the sampler's sample was unreadable).
  at::Tensor indices;
  /// int64 [B]: TrainSample::image_idx of each sample (retrieval); undefined
  /// for pretraining.
  at::Tensor image_idx;
  /// The further tensors of a SampleViewsTransform, view k stacked over the
  /// batch as views[k - 1]; empty for a SampleTransform.
  std::vector<at::Tensor> views;
};

/// An image that failed to load.
struct BadSample {
  int64_t index = -1;    ///< dataset index
  std::string path;      ///< the file tried
  std::string message;   ///< read_rgb's error
};

/// The unreadable images met so far in the current epoch (by the workers,
/// which run a few batches ahead of the consumer).
struct BadSampleReport {
  int64_t epoch = 0;
  /// Distinct unreadable samples.
  int64_t count = 0;
  /// The first ones met (at most TrainLoaderOptions::max_reported_bad).
  std::vector<BadSample> first;
};

/// The training loader of Pretrain.py / Retrieval.py: DistributedSampler
/// order with `set_epoch`, batches with drop_last, each sample decoded,
/// transformed with its own `Rng::for_sample(augment_seed, epoch, index)`
/// and given a caption (choose_caption).
///
/// An unreadable image (missing, truncated, not an image: read_rgb throws
/// albef::Error) is never fatal: the sample is replaced by the next sample
/// of this rank's epoch order (wrapping around) that loads, so batches stay
/// full, and it is counted in bad_samples(). More than max_bad_fraction of
/// an epoch's samples unreadable fails with an albef::Error naming the
/// annotation files (the image paths or image_root are wrong). Any other
/// exception of a worker (including the transform's) is rethrown by next().
class TrainLoader {
 public:
  /// Starts the workers; call start_epoch() before next(). Throws
  /// albef::Error when this rank's share of an epoch does not fill one batch.
  TrainLoader(TrainDataset dataset, SampleTransform transform, TrainLoaderOptions options = {});
  TrainLoader(TrainDataset dataset, SampleViewsTransform transform, TrainLoaderOptions options = {});
  /// Joins the workers (each finishes the sample it is decoding).
  ~TrainLoader();
  TrainLoader(const TrainLoader&) = delete;
  TrainLoader& operator=(const TrainLoader&) = delete;

  /// Begins `epoch` (sampler.set_epoch), abandoning what is left of the
  /// previous one, and resets the bad-sample report. The first
  /// `skip_batches` batches are skipped without being decoded, so a run
  /// resumed mid-epoch gets exactly the batches it had not seen.
  void start_epoch(int64_t epoch, int64_t skip_batches = 0);

  /// Replaces the DistributedSampler's order from the next start_epoch on
  /// with this rank's `order` (num_batches() * batch_size dataset indices):
  /// GRIT's grouped order.
  void set_order(std::vector<int64_t> order);

  /// The next batch of the epoch (waiting for it), or nullopt at its end.
  std::optional<TrainBatch> next();

  /// Batches per epoch: num_samples() / batch_size (drop_last).
  int64_t num_batches() const;
  /// Samples of this rank per epoch (DistributedSampler::num_samples).
  int64_t num_samples() const;
  const TrainDataset& dataset() const;
  const TrainLoaderOptions& options() const;
  BadSampleReport bad_samples() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// An evaluation batch.
struct EvalBatch {
  /// uint8 [b, 3, R, R] (the last batch may be short): the test transform's
  /// 8-bit pixels, which the image encoder normalises a pass at a time.
  at::Tensor images;
  /// int64 [b]: positions in the image list.
  at::Tensor indices;
  /// With skip_unreadable: the batch's images that could not be read (not
  /// in `images`).
  std::vector<BadSample> unreadable;
};

/// Images in list order through the official test transform up to its
/// 8-bit pixels (vision::load_test_pixels), batched, decoded on worker threads: the
/// `data_loader` of Retrieval.py's evaluation (no sampler, no drop_last).
/// Decoding starts on construction. An unreadable image is an albef::Error
/// naming the file (an evaluation needs every image) unless
/// `skip_unreadable`, which leaves it out of its batch and reports it in
/// EvalBatch::unreadable (indexing a large gallery).
class EvalImageLoader {
 public:
  EvalImageLoader(std::vector<std::string> image_paths, int image_res, int64_t batch_size, int num_workers = 0,
                  int prefetch_batches = 3, bool skip_unreadable = false);
  ~EvalImageLoader();
  EvalImageLoader(const EvalImageLoader&) = delete;
  EvalImageLoader& operator=(const EvalImageLoader&) = delete;

  /// The next batch, or nullopt after the last.
  std::optional<EvalBatch> next();
  int64_t num_batches() const;
  int64_t size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace albef::data
