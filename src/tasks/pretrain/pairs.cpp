#include "tasks/pretrain/pairs.h"

#include "albef/core/error.h"
#include "albef/vision/augment.h"

#include <vector>

namespace albef {

std::shared_ptr<data::TrainDataset> read_pretrain_pairs(const Config& config, const std::string& config_path) {
  if (config.train_file.empty()) fail(config_path, ": no train_file");
  std::vector<std::string> train_files;
  for (const auto& file : config.train_file) train_files.push_back(config.resolve(file));
  return std::make_shared<data::TrainDataset>(data::load_pretrain_dataset(train_files));
}

std::unique_ptr<data::TrainLoader> pretrain_pairs_loader(data::TrainDataset pairs, const Config& config,
                                                         data::TrainLoaderOptions loader) {
  loader.batch_size = config.batch_size;
  return std::make_unique<data::TrainLoader>(
      std::move(pairs), vision::TrainTransform(config.image_res, vision::kPretrainScaleMin), loader);
}

std::unique_ptr<data::TrainLoader> pretrain_pairs_loader(data::TrainDataset pairs, const Config& config,
                                                         data::TrainLoaderOptions loader,
                                                         data::SampleViewsTransform transform) {
  loader.batch_size = config.batch_size;
  return std::make_unique<data::TrainLoader>(std::move(pairs), std::move(transform), loader);
}

}  // namespace albef
