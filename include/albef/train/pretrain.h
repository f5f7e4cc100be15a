#pragma once
/// @file pretrain.h
/// @brief `albef pretrain`: the official Pretrain.py.

#include "albef/train/trainer.h"

namespace albef {

/// Runs pretraining (ITC + ITM + MLM with momentum distillation) on the
/// config's train_file: writes checkpoint_XX.pth, log.txt (one JSON line per
/// epoch, official keys), train_steps.jsonl and loss_curve.png to
/// options.output_dir.
void run_pretraining(const TrainOptions& options);

}  // namespace albef
