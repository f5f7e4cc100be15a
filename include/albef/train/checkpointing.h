#pragma once
/// @file checkpointing.h
/// @brief Training checkpoints in the official format, plus what an exact
/// resume needs.
///
/// A checkpoint is `{'model', 'optimizer', 'lr_scheduler', 'config',
/// 'epoch'}` exactly as Pretrain.py / Retrieval.py save it (so the official
/// code resumes from it), plus one extra key, `albef_resume`, holding the
/// position inside the epoch, the random generator state and the running
/// loss sums, so that an interrupted run continues where it stopped.

#include "albef/config/config.h"
#include "albef/io/pyobject.h"
#include "albef/model/albef.h"
#include "albef/train/optimizer.h"
#include "albef/train/scheduler.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace albef {

/// Where training stands.
struct TrainPosition {
  int64_t epoch = 0;  ///< the epoch to run (or continue)
  int64_t step = 0;   ///< batches of that epoch already done
};

/// Running sums of the logged meters over the current epoch.
using MeterSums = std::map<std::string, std::pair<double, int64_t>>;

/// Everything a resume restores besides the model, optimizer and scheduler.
struct ResumeState {
  TrainPosition position;
  at::Tensor rng_state;  ///< the default CPU generator's state
  MeterSums meters;
  /// Best-checkpoint selection so far (Retrieval.py's `best`, `best_epoch`).
  double best_score = 0.0;
  int64_t best_epoch = 0;
  /// The task's data state (TrainData::state), if any.
  io::PyObjectPtr data;
};

/// Converts a config's JSON to a checkpoint value (dicts, lists, numbers, strings).
io::PyObjectPtr json_to_pyobject(const nlohmann::json& value);

/// Writes a training checkpoint atomically. `completed_epoch` is the
/// official 'epoch' field: the last fully trained epoch (-1 inside epoch 0).
void save_training_checkpoint(const std::string& path, AlbefModel& model, const AdamW& optimizer,
                              const CosineLRScheduler& scheduler, const Config& config, int64_t completed_epoch,
                              const ResumeState& resume);

/// Restores model, optimizer and scheduler from `path`; returns where to go
/// on. An official checkpoint (no `albef_resume`) resumes at the next epoch.
ResumeState load_training_checkpoint(const std::string& path, AlbefModel& model, AdamW& optimizer,
                                     CosineLRScheduler& scheduler);

/// The file name of a checkpoint taken at `position`: `checkpoint_XX.pth`
/// after epoch XX (the official name), `checkpoint_XX_stepNNNNNN.pth` inside
/// epoch XX after NNNNNN batches.
std::string checkpoint_name(const TrainPosition& position);

/// The training checkpoints in `output_dir`, oldest first by training
/// position (read from the file names); --resume continues from the last.
std::vector<std::string> training_checkpoints(const std::string& output_dir);

/// Removes the checkpoints in `output_dir` that a run killed while writing
/// them left half written (`checkpoint_*.pth.tmp.PID`, write_atomically's
/// temporaries, whose process PID is gone: several GB each at full size) and
/// returns their paths. --resume calls it; the complete checkpoints stay.
std::vector<std::string> remove_partial_checkpoints(const std::string& output_dir);

}  // namespace albef
