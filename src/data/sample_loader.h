#pragma once
// The training loader of every task, whatever its sample: DistributedSampler
// order, drop_last batches, samples loaded and collated on worker threads a
// few batches ahead, unreadable samples replaced and counted, and exact
// resumption mid-epoch. A task supplies how one dataset item becomes a
// Sample (one image and a caption, two images and a sentence, an image and
// weighted answers, ...) and how Samples become its Batch.

#include "albef/core/error.h"
#include "albef/data/loader.h"
#include "albef/data/sampler.h"
#include "albef/vision/image.h"
#include "data/batch_pipeline.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

namespace albef::data {

/// Thrown by a task's Load for an item whose file cannot be read (missing,
/// truncated, not an image): the loader skips that item and counts it.
class UnreadableSample : public Error {
 public:
  UnreadableSample(std::string path, const std::string& message) : Error(message), path_(std::move(path)) {}
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// vision::read_rgb, with a failure to read turned into UnreadableSample.
inline cv::Mat read_sample_image(const std::string& path) {
  try {
    return vision::read_rgb(path);
  } catch (const UnreadableSample&) {
    throw;
  } catch (const Error& e) {
    throw UnreadableSample(path, e.what());
  }
}

/// Worker threads for `num_workers` (0: one per core).
int resolve_workers(int num_workers);

template <typename Sample, typename Batch>
class SampleLoader {
 public:
  /// Loads dataset item `index` for `epoch`; called concurrently from the
  /// workers. Throws UnreadableSample to have the item replaced.
  using Load = std::function<Sample(int64_t index, int64_t epoch)>;
  /// Builds batch `batch_index` of `epoch` from its samples, in sampler order.
  using Collate = std::function<Batch(std::vector<Sample>& samples, int64_t epoch, int64_t batch_index)>;

  /// `source` names the data in errors (the annotation files). Throws
  /// albef::Error when the dataset is empty or this rank's share does not
  /// fill one batch.
  SampleLoader(int64_t dataset_size, std::string source, Load load, Collate collate, TrainLoaderOptions options)
      : source_(std::move(source)),
        load_(std::move(load)),
        collate_(std::move(collate)),
        options_(options),
        sampler_(dataset_size, options.world_size, options.rank, options.shuffle, options.sampler_seed),
        pipeline_(resolve_workers(options.num_workers), options.prefetch_batches) {
    ALBEF_CHECK(options.batch_size > 0, "batch size must be positive, got ", options.batch_size);
    ALBEF_CHECK(options.max_bad_fraction >= 0, "max_bad_fraction must not be negative");
    if (dataset_size == 0) fail("the training set is empty: ", source_);
    if (num_batches() == 0)
      fail("the ", num_samples(), " samples per rank of ", source_, " do not fill one batch of ", options.batch_size);
  }

  /// Begins `epoch` (sampler.set_epoch), abandoning what is left of the
  /// previous one; the first `skip_batches` batches are skipped unread.
  void start_epoch(int64_t epoch, int64_t skip_batches = 0) {
    ALBEF_CHECK(skip_batches >= 0 && skip_batches <= num_batches(), "cannot skip ", skip_batches, " of ",
                num_batches(), " batches");
    sampler_.set_epoch(epoch);
    auto state = std::make_shared<Epoch>(epoch, order_.empty() ? sampler_.indices() : order_);
    epoch_ = state;
    pipeline_.start(
        num_batches() * options_.batch_size, options_.batch_size, skip_batches,
        [this, state](int64_t slot) { return load(*state, slot); },
        [this, epoch](std::vector<Sample>& samples, int64_t b) { return collate_(samples, epoch, b); });
  }

  /// This rank's order for the following epochs instead of the
  /// DistributedSampler's (GRIT's grouped order): num_batches() *
  /// batch_size dataset indices.
  void set_order(std::vector<int64_t> order) {
    if (static_cast<int64_t>(order.size()) != num_batches() * options_.batch_size)
      fail("an epoch order of ", order.size(), " samples for ", num_batches(), " batches of ", options_.batch_size,
           " per rank of ", source_);
    order_ = std::move(order);
  }

  /// The next batch of the epoch (waiting for it), or nullopt at its end.
  std::optional<Batch> next() {
    ALBEF_CHECK(epoch_ != nullptr, "call start_epoch() before next()");
    return pipeline_.next();
  }

  int64_t num_batches() const { return num_samples() / options_.batch_size; }
  int64_t num_samples() const { return sampler_.num_samples(); }
  const TrainLoaderOptions& options() const { return options_; }

  BadSampleReport bad_samples() const {
    BadSampleReport report;
    const std::shared_ptr<Epoch> state = epoch_;
    if (!state) return report;
    std::lock_guard<std::mutex> lock(state->mutex);
    report.epoch = state->epoch;
    report.count = static_cast<int64_t>(state->bad.size());
    report.first = state->reported;
    return report;
  }

 private:
  // This rank's order for one epoch and the unreadable items met in it.
  struct Epoch {
    Epoch(int64_t epoch, std::vector<int64_t> order) : epoch(epoch), order(std::move(order)) {}
    const int64_t epoch;
    const std::vector<int64_t> order;
    std::mutex mutex;
    std::unordered_set<int64_t> bad;
    std::vector<BadSample> reported;

    bool known_bad(int64_t index) {
      std::lock_guard<std::mutex> lock(mutex);
      return bad.count(index) > 0;
    }
  };

  // The item at `position` of this rank's epoch order, or the first readable
  // one after it (wrapping around), so batches stay full.
  Sample load(Epoch& state, int64_t position) {
    const auto n = static_cast<int64_t>(state.order.size());
    for (int64_t step = 0; step < n; ++step) {
      const int64_t index = state.order[static_cast<size_t>((position + step) % n)];
      if (state.known_bad(index)) continue;
      try {
        return load_(index, state.epoch);
      } catch (const UnreadableSample& e) {
        record_bad(state, index, e.path(), e.what());
      }
    }
    fail("no image of epoch ", state.epoch, " could be read; check image_root and the image paths of ", source_);
  }

  void record_bad(Epoch& state, int64_t index, const std::string& path, const std::string& message) {
    std::lock_guard<std::mutex> lock(state.mutex);
    if (!state.bad.insert(index).second) return;
    if (state.reported.size() < static_cast<size_t>(std::max(0, options_.max_reported_bad)))
      state.reported.push_back({index, path, message});
    const auto n = static_cast<double>(state.order.size());
    if (static_cast<double>(state.bad.size()) > options_.max_bad_fraction * n)
      fail("too many unreadable images: ", state.bad.size(), " of the ", state.order.size(), " samples of epoch ",
           state.epoch, " (rank ", options_.rank, ") failed to load, e.g. ", message,
           "; check image_root and the image paths of ", source_);
  }

  const std::string source_;
  const Load load_;
  const Collate collate_;
  const TrainLoaderOptions options_;
  DistributedSampler sampler_;
  std::vector<int64_t> order_;  // set_order's, else empty
  std::shared_ptr<Epoch> epoch_;
  // Last: its workers stop before the members they read are destroyed.
  detail::BatchPipeline<Sample, Batch> pipeline_;
};

}  // namespace albef::data
