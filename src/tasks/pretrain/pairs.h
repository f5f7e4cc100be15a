#pragma once
// The image-caption pairs that Pretrain.py and Pretrain_nlvr.py both train
// on: config.train_file read at once, then loaded through the pretraining
// transform.

#include "albef/config/config.h"
#include "albef/data/annotations.h"
#include "albef/data/loader.h"

#include <memory>
#include <string>

namespace albef {

/// Every train_file of `config` (resolved against its folder), read before
/// anything is written, so a malformed file fails the run at once.
std::shared_ptr<data::TrainDataset> read_pretrain_pairs(const Config& config, const std::string& config_path);

/// `pairs` in batches of config.batch_size through the pretraining
/// transform (RandomResizedCrop 0.2-1, flip, RandAugment).
std::unique_ptr<data::TrainLoader> pretrain_pairs_loader(data::TrainDataset pairs, const Config& config,
                                                         data::TrainLoaderOptions loader);

/// The same batches through a transform that gives each sample several
/// tensors (SIMLA's views and mask).
std::unique_ptr<data::TrainLoader> pretrain_pairs_loader(data::TrainDataset pairs, const Config& config,
                                                         data::TrainLoaderOptions loader,
                                                         data::SampleViewsTransform transform);

}  // namespace albef
