#include "albef/train/pretrain.h"

#include "albef/core/error.h"
#include "albef/text/tokenizer.h"
#include "albef/train/pretrain_step.h"
#include "albef/vision/augment.h"

namespace albef {

void run_pretraining(const TrainOptions& options) {
  init_runtime(options.threads);
  const Config config = load_config(options.config_path);
  if (config.train_file.empty()) fail(options.config_path, ": no train_file");
  std::vector<std::string> train_files;
  for (const auto& file : config.train_file) train_files.push_back(config.resolve(file));
  const c10::Device device = parse_device(options.device);
  auto tokenizer = std::make_shared<const text::BertTokenizer>(config.vocab);

  TrainingTask task;
  task.model_kind = ModelKind::Pretrain;
  task.schedule = TrainingSchedule::pretrain(config);
  task.dataset = data::load_pretrain_dataset(train_files);
  task.crop_scale_min = vision::kPretrainScaleMin;
  task.batch_size = config.batch_size;
  task.loss_names = {"loss_mlm", "loss_ita", "loss_itm"};
  const MlmTokenIds tokens{tokenizer->pad_id(), tokenizer->cls_id(), tokenizer->mask_id()};
  task.forward = [tokenizer, tokens, device](AlbefModel& model, const data::TrainBatch& batch, double alpha,
                                             const FeatureGather& gather) {
    // Pretrain.py: padding='longest', truncation=True, max_length=25.
    const text::BatchEncoding text = tokenizer->encode_batch(batch.captions, 25, text::Padding::Longest);
    const StepOutputs out = pretrain_forward(model, batch.images.to(device), text.input_ids.to(device),
                                             text.attention_mask.to(device), alpha, tokens, nullptr, gather);
    return std::vector<at::Tensor>{out.loss_mlm, out.loss_ita, out.loss_itm};
  };
  run_training(options, config, std::move(task));
}

}  // namespace albef
