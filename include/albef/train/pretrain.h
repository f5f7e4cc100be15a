#pragma once
/// @file pretrain.h
/// @brief `albef pretrain`: the official Pretrain.py loop.

#include "albef/core/runtime.h"

#include <cstdint>
#include <string>

namespace albef {

/// Flags of a pretraining run (the official script's, plus albef's own).
struct PretrainOptions {
  std::string config_path;
  std::string output_dir = "Pretrain";
  std::string checkpoint;        ///< initial weights, or with `resume` the checkpoint to resume
  bool resume = false;           ///< continue from `checkpoint` or the newest one in output_dir
  int64_t seed = 42;
  int threads = 0;
  Precision precision = Precision::Fp32;
  std::string device = "cpu";
  int64_t save_every_steps = 0;  ///< also checkpoint every N steps inside an epoch (0 = only at epoch ends)
  int64_t print_freq = 50;       ///< plain progress line every N steps when stdout is not a terminal
  int workers = 0;               ///< data-loading threads (0 = one per core)
  int64_t epochs = -1;           ///< stop after this many epochs (-1 = schedular.epochs)
  int64_t keep_checkpoints = 0;  ///< keep only the newest N epoch checkpoints (0 = all, as the official script)
};

/// Runs pretraining: writes checkpoint_XX.pth, log.txt (one JSON line per
/// epoch, official keys), train_steps.jsonl (one line per step) and
/// loss_curve.png to output_dir.
void run_pretraining(const PretrainOptions& options);

}  // namespace albef
