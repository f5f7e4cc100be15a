#include "tasks/pretrain/simla.h"

#include "albef/core/error.h"
#include "albef/data/simla_views.h"
#include "albef/model/dvae.h"
#include "albef/text/tokenizer.h"
#include "tasks/pretrain/pairs.h"
#include "tasks/pretrain/simla_model.h"
#include "tasks/pretrain/simla_step.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <memory>

namespace albef {
namespace {

data::SimlaViewOptions view_options(const Config& config) {
  data::SimlaViewOptions options;
  options.image_res = static_cast<int>(config.image_res);
  options.independent_views = config.independent_views;
  const SimlaMaskingConfig& m = config.masking_generator;
  options.masking.num_masking_patches = m.num_masking_patches;
  options.masking.min_num_patches = m.min_num_patches;
  options.masking.max_num_patches = m.max_num_patches;
  options.masking.min_aspect = m.min_aspect;
  options.masking.max_aspect = m.max_aspect;
  return options;
}

// Pretrain.py's loop body: the batch's visual tokens from the tokenizer's
// view, then the step; the five losses in the official log order.
std::unique_ptr<TrainData> simla_train_data(std::unique_ptr<data::TrainLoader> loader,
                                            std::shared_ptr<const text::BertTokenizer> tokenizer,
                                            std::shared_ptr<DvaeEncoder> tokenizer_model, c10::Device device) {
  const MlmTokenIds tokens{tokenizer->pad_id(), tokenizer->cls_id(), tokenizer->mask_id()};
  return bind_train_data(std::move(loader), [tokenizer, tokenizer_model, tokens, device](
                                                AlbefModel& model, const data::TrainBatch& batch, double alpha,
                                                const FeatureGather& gather) {
    // Pretrain.py: padding='longest', truncation=True, max_length=25.
    const text::BatchEncoding text = tokenizer->encode_batch(batch.captions, 25, text::Padding::Longest);
    SimlaImageTargets targets;
    if (tokenizer_model) {
      at::NoGradGuard no_grad;
      targets.visual_token_ids = (*tokenizer_model)->codes(batch.views.at(0).to(device));
      targets.masked_patches = batch.views.at(1).flatten(1).to(device);
    }
    const SimlaStepOutputs out = simla_forward(model, batch.images.to(device), text.input_ids.to(device),
                                               text.attention_mask.to(device), targets, alpha, tokens, nullptr, gather);
    std::vector<at::Tensor> losses{out.step.loss_mlm, out.step.loss_ita, out.step.loss_itm};
    if (out.loss_mim.defined()) losses.push_back(out.loss_mim);
    losses.push_back(out.loss_pseudo);
    return losses;
  });
}

}  // namespace

std::string simla_tokenizer_file(const Config& config) {
  if (config.image_tokenizer_path.empty())
    fail(config.path, ": key 'image_tokenizer_path' is not set: SIMLA's masked image modelling needs the DALL-E "
         "tokenizer (the folder of encoder.pkl); set it, or set 'mim: false' to pretrain without MIM");
  const std::string path = config.resolve(config.image_tokenizer_path);
  const std::string file = std::filesystem::is_directory(path) ? path + "/encoder.pkl" : path;
  if (!std::filesystem::is_regular_file(file))
    fail(config.path, ": image_tokenizer_path '", config.image_tokenizer_path, "': no DALL-E encoder at ", file,
         " (give the folder of DALL-E's encoder.pkl, or the file)");
  return file;
}

void run_simla_pretraining(const TrainOptions& options, const Config& config) {
  const std::string tokenizer_file = config.mim ? simla_tokenizer_file(config) : std::string();
  auto tokenizer = std::make_shared<const text::BertTokenizer>(config.vocab);
  auto dataset = read_pretrain_pairs(config, options.config_path);
  // Checked now, not in the first batch: a grid the masking cannot fill fails here.
  const data::SimlaViewOptions views = view_options(config);
  std::shared_ptr<const data::SimlaViewTransform> transform;
  if (config.mim) transform = std::make_shared<const data::SimlaViewTransform>(views);

  TrainingTask task;
  task.model = simla_model_options();
  task.schedule = TrainingSchedule::pretrain(config);
  task.loss_names = {"loss_mlm", "loss_ita", "loss_itm"};
  if (config.mim) task.loss_names.push_back("loss_mim");
  task.loss_names.push_back("loss_pseudo");
  task.data = [&config, dataset, tokenizer, transform, tokenizer_file](data::TrainLoaderOptions loader,
                                                                       c10::Device device) {
    if (!transform)
      return simla_train_data(pretrain_pairs_loader(std::move(*dataset), config, loader), tokenizer, nullptr, device);
    auto encoder = std::make_shared<DvaeEncoder>(load_dvae_encoder(tokenizer_file));
    (*encoder)->to(device);
    auto pairs = pretrain_pairs_loader(std::move(*dataset), config, loader, [transform](const cv::Mat& rgb,
                                                                                           vision::Rng& rng) {
      data::SimlaViews views = (*transform)(rgb, rng);
      return std::vector<at::Tensor>{views.image, views.image_for_tokenization, views.masks};
    });
    return simla_train_data(std::move(pairs), tokenizer, encoder, device);
  };
  run_training(options, config, std::move(task));
}

}  // namespace albef
