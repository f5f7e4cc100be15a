#pragma once
/// @file trainer.h
/// @brief The training loop the official scripts share (Pretrain.py,
/// Retrieval.py, VQA.py, ...): resume, data loading, lr schedule and alpha
/// ramp, meters, logs, checkpoints, data-parallel ranks, and per-epoch
/// evaluation with best-checkpoint selection. A `TrainingTask` supplies
/// what differs: the model's heads, the data, the forward and the evaluation.

#include "albef/config/config.h"
#include "albef/core/runtime.h"
#include "albef/data/loader.h"
#include "albef/distributed/process_group.h"
#include "albef/io/pyobject.h"
#include "albef/model/albef.h"
#include "albef/train/scheduler.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace albef {

/// Flags every training command takes (the official scripts', plus albef's own).
struct TrainOptions {
  std::string config_path;
  std::string output_dir = "output";
  std::string checkpoint;        ///< initial weights (a pretrained or official checkpoint)
  std::string text_encoder;      ///< --text_encoder: where the vocabulary comes from (see load_config)
  bool resume = false;           ///< continue from the newest checkpoint in output_dir, if there is one
  /// Start a fresh run in an output_dir that holds an earlier run's
  /// checkpoints or logs, moving its files to output_dir/previous_run_N/
  /// (without it such a run is refused: a forgotten --resume must not
  /// replace days of training).
  bool overwrite = false;
  int64_t seed = 42;
  int threads = 0;
  Precision precision = Precision::Fp32;
  std::string device = "cpu";
  int64_t save_every_steps = 0;  ///< also checkpoint every N steps inside an epoch (0 = only at epoch ends)
  int64_t print_freq = 50;       ///< plain progress line every N steps when stdout is not a terminal
  int workers = 0;               ///< data-loading threads (0 = one per core)
  int64_t epochs = -1;           ///< stop after this many epochs (-1 = schedular.epochs)
  int64_t keep_checkpoints = 0;  ///< keep only the newest N epoch checkpoints (0 = all)
  /// Data-parallel runs: how long a rank waits for the others before it
  /// gives up with an error (a peer that died is noticed at once).
  std::chrono::seconds dist_timeout{300};
};

/// Gathers the momentum features of every rank before they enter the queue
/// (identity on one process). Distributed training installs all_gather here.
using FeatureGather = std::function<at::Tensor(const at::Tensor&)>;

/// One batch of a task, bound to the task's forward: all the loop sees of it.
struct TrainStep {
  int64_t index = 0;  ///< the batch's position in its epoch
  /// The batch's losses (on the model's device, in TrainingTask::loss_names
  /// order); the loop sums them for the backward pass. Runs under the run's
  /// precision.
  std::function<std::vector<at::Tensor>(AlbefModel& model, double alpha, const FeatureGather& gather)> losses;
  /// Right after the optimizer step of this batch (GRIT's sampler collects
  /// the batch's features with the updated temperature). Optional.
  std::function<void(AlbefModel& model)> after_update = nullptr;
};

/// A task's batches, whatever its samples are (an image and a caption, two
/// images and a sentence, an image and weighted answers).
class TrainData {
 public:
  virtual ~TrainData() = default;
  /// Begins `epoch`, skipping its first `skip_batches` batches unread (resume).
  virtual void start_epoch(int64_t epoch, int64_t skip_batches) = 0;
  /// The next batch, or nullopt at the end of the epoch.
  virtual std::optional<TrainStep> next() = 0;
  virtual int64_t num_batches() const = 0;
  virtual int64_t num_samples() const = 0;
  virtual data::BadSampleReport bad_samples() const = 0;
  /// After the last batch of `epoch`, on every rank (`group`: null on one
  /// process), before its checkpoint: e.g. the next epoch's order.
  virtual void end_epoch(int64_t /*epoch*/, distributed::ProcessGroup* /*group*/) {}
  /// What an exact resume needs besides the position and the generator
  /// (GRIT's queue and order), gathered from every rank: a collective, so
  /// every rank calls it; rank 0 saves the result. Null: nothing.
  virtual io::PyObjectPtr state(distributed::ProcessGroup* /*group*/) { return nullptr; }
  /// Restores state() read from the checkpoint `source`, before start_epoch.
  virtual void restore(const io::PyObjectPtr& /*state*/, const std::string& /*source*/) {}
};

/// TrainData over any loader whose next() gives batches with an `index`
/// (data::TrainLoader, a data::SampleLoader of the task's own samples), each
/// handed to `forward(model, batch, alpha, gather)`.
template <typename Loader, typename Forward>
std::unique_ptr<TrainData> bind_train_data(std::unique_ptr<Loader> loader, Forward forward) {
  class Bound : public TrainData {
   public:
    Bound(std::unique_ptr<Loader> loader, Forward forward) : loader_(std::move(loader)), forward_(std::move(forward)) {}
    void start_epoch(int64_t epoch, int64_t skip_batches) override { loader_->start_epoch(epoch, skip_batches); }
    std::optional<TrainStep> next() override {
      auto batch = loader_->next();
      if (!batch) return std::nullopt;
      const int64_t index = batch->index;
      auto shared = std::make_shared<std::decay_t<decltype(*batch)>>(std::move(*batch));
      return TrainStep{index, [this, shared](AlbefModel& model, double alpha, const FeatureGather& gather) {
                         return forward_(model, *shared, alpha, gather);
                       }};
    }
    int64_t num_batches() const override { return loader_->num_batches(); }
    int64_t num_samples() const override { return loader_->num_samples(); }
    data::BadSampleReport bad_samples() const override { return loader_->bad_samples(); }

   private:
    std::unique_ptr<Loader> loader_;
    Forward forward_;
  };
  return std::make_unique<Bound>(std::move(loader), std::move(forward));
}

/// What one training script does inside the shared loop.
struct TrainingTask {
  /// The model: the backbone's parts (momentum encoders as the task trains
  /// with them), the task's heads and how checkpoint keys reach them.
  ModelOptions model;
  TrainingSchedule schedule;
  /// Logged per step and averaged per epoch, in the order the losses come.
  std::vector<std::string> loss_names;
  /// This process's batches. `loader` comes with the loop's settings filled
  /// in (workers, rank, world size, seeds); the task sets batch_size and its
  /// own, and picks its transform.
  std::function<std::unique_ptr<TrainData>(data::TrainLoaderOptions loader, c10::Device device)> data;
  /// After each epoch's training (model in eval mode), on every rank:
  /// metrics to add to the epoch's log line, keys prefixed ("val_r_mean",
  /// ...). `group` is null on one process; with several, the ranks share the
  /// work and only rank 0 should print or write. Optional.
  std::function<nlohmann::json(AlbefModel& model, int64_t epoch, distributed::ProcessGroup* group)> evaluate;
  /// Right after --checkpoint is loaded into a fresh run (not on resume),
  /// e.g. to start the momentum encoders from the loaded weights. Optional.
  std::function<void(AlbefModel& model)> after_checkpoint_load;
  /// A key of `evaluate`'s result: whenever it beats every earlier epoch
  /// (and 0), the model is saved as checkpoint_best.pth (Retrieval.py's
  /// rule, on "val_r_mean"). Empty: no best checkpoint.
  std::string best_key;
};

/// Trains `task` as the official scripts do, data-parallel when the
/// torchrun variables say so (DistributedEnv): each rank trains on its
/// DistributedSampler shard with seed + rank, gradients are averaged over
/// the ranks every step (bucketed, float32), momentum features are
/// all-gathered into every rank's queues, epoch meters are averaged over
/// the ranks, and only rank 0 prints and writes. Writes to output_dir:
/// checkpoint_XX.pth after every epoch (official format plus resume state),
/// log.txt (one JSON line per epoch: "train_<meter>" averages, the
/// evaluation's keys, "epoch"; with `best_key`, a final "best epoch: N"
/// line as Retrieval.py), train_steps.jsonl (one line per step) and
/// loss_curve.png. Initial weights come from `options.checkpoint`, loaded as
/// the official scripts load a pretrained model (strict=False).
void run_training(const TrainOptions& options, const Config& config, TrainingTask task);

}  // namespace albef
