#pragma once
/// @file pretrain.h
/// @brief `albef pretrain`: the official Pretrain.py (src/tasks/pretrain/).

#include "albef/model/albef.h"
#include "albef/train/trainer.h"

namespace albef {

/// models/model_pretrain.py: a BertForMaskedLM text encoder (MLM head
/// `text_encoder.cls`), the contrastive projections, `itm_head`, and with
/// momentum encoders the queues.
ModelOptions pretrain_model_options(bool momentum_encoders = true);

/// Runs pretraining (ITC + ITM + MLM with momentum distillation) on the
/// config's train_file: writes checkpoint_XX.pth, log.txt (one JSON line per
/// epoch, official keys), train_steps.jsonl and loss_curve.png to
/// options.output_dir. A config with `pretrain_mode: grit` trains GRIT-VLP
/// instead (no momentum model, grouped mini-batches; docs/grit.md), its
/// mini-batches shuffled over all processes with
/// `mini_batch_shuffle_across_gpu`.
void run_pretraining(const TrainOptions& options, bool mini_batch_shuffle_across_gpu = false);

}  // namespace albef
