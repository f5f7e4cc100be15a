#pragma once
// GRIT-VLP pretraining (jaeseokbyun/GRIT-VLP's Pretrain.py), the mode
// `albef pretrain` runs when the config says `pretrain_mode: grit`.

#include "albef/config/config.h"
#include "albef/train/trainer.h"

namespace albef {

/// GRIT's Pretrain.py on `config`: grit_forward on each batch; epoch 0 in
/// DistributedSampler order, every later epoch in the grouped order of the
/// one before (grit::EpochGrouper, mini-batches shuffled per process, or
/// over all processes when `shuffle_across_processes`, the official
/// --mini_batch_shuffle_across_gpu), each rank taking its contiguous share.
void run_grit_pretraining(const TrainOptions& options, const Config& config, bool shuffle_across_processes);

}  // namespace albef
