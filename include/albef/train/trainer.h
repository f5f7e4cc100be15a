#pragma once
/// @file trainer.h
/// @brief The training loop the official scripts share (Pretrain.py,
/// Retrieval.py): resume, data loading, lr schedule and alpha ramp, meters,
/// logs, checkpoints, and per-epoch evaluation with best-checkpoint
/// selection. A `TrainingTask` supplies what differs.

#include "albef/config/config.h"
#include "albef/core/runtime.h"
#include "albef/data/annotations.h"
#include "albef/data/loader.h"
#include "albef/distributed/process_group.h"
#include "albef/model/albef.h"
#include "albef/train/pretrain_step.h"
#include "albef/train/scheduler.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace albef {

/// Flags every training command takes (the official scripts', plus albef's own).
struct TrainOptions {
  std::string config_path;
  std::string output_dir = "output";
  std::string checkpoint;        ///< initial weights (a pretrained or official checkpoint)
  bool resume = false;           ///< continue from the newest checkpoint in output_dir, if there is one
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

/// What one training script does inside the shared loop.
struct TrainingTask {
  ModelKind model_kind = ModelKind::Pretrain;
  TrainingSchedule schedule;
  data::TrainDataset dataset;
  double crop_scale_min = 0.2;  ///< RandomResizedCrop's lower scale
  int64_t batch_size = 0;
  /// Logged per step and averaged per epoch, in the order `forward` returns them.
  std::vector<std::string> loss_names;
  /// The losses of one batch (on the model's device); the loop sums them
  /// for the backward pass. Runs under the run's precision. `gather`
  /// all-gathers the momentum features before they enter the queues
  /// (identity on one process).
  std::function<std::vector<at::Tensor>(AlbefModel& model, const data::TrainBatch& batch, double alpha,
                                        const FeatureGather& gather)>
      forward;
  /// After each epoch's training (model in eval mode), on every rank:
  /// metrics to add to the epoch's log line, keys prefixed ("val_r_mean",
  /// ...). `group` is null on one process; with several, the ranks share the
  /// work and only rank 0 should print or write. Optional.
  std::function<nlohmann::json(AlbefModel& model, int64_t epoch, distributed::ProcessGroup* group)> evaluate;
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
