// `albef pretrain`: the official Pretrain.py, same flags.

#include "albef/tasks/pretrain.h"

#include "albef/core/error.h"
#include "albef/model/itm.h"
#include "albef/text/tokenizer.h"
#include "tasks/flags.h"
#include "tasks/pretrain/grit.h"
#include "tasks/pretrain/grit_group.h"
#include "tasks/pretrain/pairs.h"
#include "tasks/pretrain/simla.h"
#include "tasks/pretrain/simla_model.h"
#include "tasks/pretrain/step.h"
#include "tasks/registry.h"

#include <memory>

namespace albef {

ModelOptions pretrain_model_options(bool momentum_encoders) {
  ModelOptions options;
  options.text_encoder = TextEncoderLayout::MaskedLM;
  options.momentum_encoders = momentum_encoders;
  options.heads = {itm_head_spec()};
  return options;
}

void run_pretraining(const TrainOptions& options, bool mini_batch_shuffle_across_gpu) {
  init_runtime(options.threads);
  const Config config = load_config(options.config_path, options.text_encoder);
  if (config.pretrain_mode == "grit") return run_grit_pretraining(options, config, mini_batch_shuffle_across_gpu);
  if (mini_batch_shuffle_across_gpu)
    fail("--mini_batch_shuffle_across_gpu is GRIT's: ", options.config_path, " does not say pretrain_mode: grit");
  // GRIT's own configs/Pretrain.yaml has no pretrain_mode: do not train it as ALBEF.
  if (config.raw.contains("search_space"))
    fail(options.config_path, ": key 'search_space' is GRIT-VLP's; add 'pretrain_mode: grit' to train GRIT-VLP "
         "(configs/Pretrain_GRIT.yaml), or remove the key");
  if (config.pretrain_mode == "simla") return run_simla_pretraining(options, config);
  // SIMLA's own configs/Pretrain.yaml has no pretrain_mode: do not train it as ALBEF.
  if (config.bert.single_stream || config.raw.contains("image_tokenizer_path"))
    fail(options.config_path, ": ", config.bert.single_stream ? config.bert_config + " is SIMLA's single-stream BERT"
                                                              : std::string("key 'image_tokenizer_path' is SIMLA's"),
         "; ALBEF pretraining needs configs/config_bert.json and no image_tokenizer_path");
  auto tokenizer = std::make_shared<const text::BertTokenizer>(config.vocab);
  auto dataset = read_pretrain_pairs(config, options.config_path);

  TrainingTask task;
  task.model = pretrain_model_options();
  task.schedule = TrainingSchedule::pretrain(config);
  task.loss_names = {"loss_mlm", "loss_ita", "loss_itm"};
  const MlmTokenIds tokens{tokenizer->pad_id(), tokenizer->cls_id(), tokenizer->mask_id()};
  task.data = [&config, dataset, tokenizer, tokens](data::TrainLoaderOptions loader, c10::Device device) {
    return bind_train_data(pretrain_pairs_loader(std::move(*dataset), config, loader), [tokenizer, tokens, device](
                                                               AlbefModel& model, const data::TrainBatch& batch,
                                                               double alpha, const FeatureGather& gather) {
      // Pretrain.py: padding='longest', truncation=True, max_length=25.
      const text::BatchEncoding text = tokenizer->encode_batch(batch.captions, 25, text::Padding::Longest);
      const StepOutputs out = pretrain_forward(model, batch.images.to(device), text.input_ids.to(device),
                                               text.attention_mask.to(device), alpha, tokens, nullptr, gather);
      return std::vector<at::Tensor>{out.loss_mlm, out.loss_ita, out.loss_itm};
    });
  };
  run_training(options, config, std::move(task));
}

namespace tasks {

Task pretrain_task() {
  Task task{"pretrain",
            "Pretrain ALBEF (ITC + ITM + MLM with momentum distillation), GRIT-VLP (pretrain_mode: grit) or SIMLA "
            "(pretrain_mode: simla)",
            [](CLI::App& command) {
              auto options = std::make_shared<TrainOptions>();
              options->output_dir = "Pretrain";  // Pretrain.py's default
              auto flags = std::make_shared<TrainFlags>();
              flags->add_to(command, *options, "Pretraining config (configs/Pretrain.yaml, configs/Pretrain_GRIT.yaml, configs/Pretrain_SIMLA.yaml)");
              auto across = std::make_shared<bool>(false);
              // GRIT's Pretrain.py declares it with type=bool: `--mini_batch_shuffle_across_gpu True`.
              command
                  .add_option_function<std::string>(
                      "--mini_batch_shuffle_across_gpu",
                      [across](const std::string& value) {
                        if (value == "False" || value == "false" || value == "0")
                          fail("--mini_batch_shuffle_across_gpu ", value,
                               ": GRIT's Pretrain.py reads this as True (argparse's type=bool); leave it out");
                        *across = true;
                      },
                      "GRIT: shuffle the mini-batches of all processes together (default: each process its own)")
                  ->expected(0, 1)
                  ->default_str("True");
              return [options, flags, across] {
                flags->compute.apply_to(*options);
                run_pretraining(*options, *across);
              };
            },
            [](CLI::App& app) { add_grit_group_command(app); }};
  task.official_script = "Pretrain.py";
  task.checkpoint_model = [](const Config& config) {
    if (config.pretrain_mode == "simla") return simla_model_options();
    return pretrain_model_options(config.pretrain_mode != "grit");
  };
  return task;
}

}  // namespace tasks
}  // namespace albef
