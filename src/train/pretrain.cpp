#include "albef/train/pretrain.h"

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/data/annotations.h"
#include "albef/data/loader.h"
#include "albef/io/checkpoint.h"
#include "albef/text/tokenizer.h"
#include "albef/train/checkpointing.h"
#include "albef/train/pretrain_step.h"
#include "albef/train/progress.h"
#include "albef/vision/augment.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>
#include <iostream>

namespace albef {
namespace fs = std::filesystem;
namespace {

const std::vector<std::string> kLossNames = {"loss_mlm", "loss_ita", "loss_itm"};

at::Tensor generator_state() { return at::detail::getDefaultCPUGenerator().get_state(); }

void set_generator_state(const at::Tensor& state) {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

// Keeps the JSON lines of `path` that come before `position`, so that a
// resumed run does not log the redone steps twice.
void truncate_log(const std::string& path, const TrainPosition& position, bool per_step) {
  if (!fs::exists(path)) return;
  std::istringstream in(read_file(path));
  std::string kept, line;
  while (std::getline(in, line)) {
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_discarded()) continue;
    const int64_t epoch = record.value("epoch", int64_t{0});
    const bool before = per_step ? std::make_pair(epoch, record.value("step", int64_t{0})) <
                                       std::make_pair(position.epoch, position.step)
                                 : epoch < position.epoch;
    if (before) kept += line + "\n";
  }
  write_atomically(path, [&](const std::string& tmp) { std::ofstream(tmp) << kept; });
}

void append_line(const std::string& path, const nlohmann::json& record) {
  std::ofstream out(path, std::ios::app);
  out << record.dump() << "\n";
  if (!out) fail(path, ": cannot append to the log");
}

}  // namespace

void run_pretraining(const PretrainOptions& options) {
  init_runtime(options.threads);
  const Config config = load_config(options.config_path);
  const text::BertTokenizer tokenizer(config.vocab);
  const c10::Device device = parse_device(options.device);
  if (config.train_file.empty()) fail(options.config_path, ": no train_file");
  std::vector<std::string> train_files;
  for (const auto& file : config.train_file) train_files.push_back(config.resolve(file));

  fs::create_directories(options.output_dir);
  fs::copy_file(options.config_path, options.output_dir + "/config.yaml", fs::copy_options::overwrite_existing);
  const std::string log_path = options.output_dir + "/log.txt";
  const std::string steps_path = options.output_dir + "/train_steps.jsonl";

  at::manual_seed(options.seed);
  AlbefModel model(config, ModelOptions{ModelKind::Pretrain, true});
  model->init_weights();
  model->to(device);
  AdamW optimizer = create_optimizer(*model, config.optimizer);
  CosineLRScheduler scheduler(optimizer, config.schedular);
  const TrainingSchedule schedule = TrainingSchedule::pretrain(config);

  TrainPosition position;
  MetricLogger meters;
  std::string resume_from = options.checkpoint;
  if (options.resume && resume_from.empty()) resume_from = latest_checkpoint(options.output_dir).value_or("");
  if (options.resume && !resume_from.empty()) {
    const ResumeState state = load_training_checkpoint(resume_from, model, optimizer, scheduler);
    position = state.position;
    if (state.rng_state.defined()) set_generator_state(state.rng_state);
    if (position.step > 0) meters.restore(state.meters);
    truncate_log(log_path, position, false);
    truncate_log(steps_path, position, true);
    std::cout << "resuming from " << resume_from << " at epoch " << position.epoch << ", step " << position.step
              << "\n";
  } else {
    if (options.resume) std::cout << "no checkpoint in " << options.output_dir << ", starting from scratch\n";
    if (!options.checkpoint.empty()) {
      const auto state = io::state_dict_from(io::read_torch_file(options.checkpoint), options.checkpoint);
      const LoadReport report = load_state_dict(model, state, options.checkpoint);
      std::cout << "loaded " << options.checkpoint << " (" << report.missing_keys.size() << " missing, "
                << report.unexpected_keys.size() << " unexpected keys)\n";
    }
    fs::remove(log_path);
    fs::remove(steps_path);
  }

  data::TrainLoaderOptions loader_options;
  loader_options.batch_size = config.batch_size;
  loader_options.num_workers = options.workers;
  loader_options.sampler_seed = static_cast<uint64_t>(options.seed);
  loader_options.augment_seed = static_cast<uint64_t>(options.seed);
  data::TrainLoader loader(data::load_pretrain_dataset(train_files),
                           vision::TrainTransform(config.image_res, vision::kPretrainScaleMin), loader_options);
  if (loader.num_batches() == 0)
    fail(options.config_path, ": ", loader.num_samples(), " samples make no full batch of ", config.batch_size);

  const MlmTokenIds tokens{tokenizer.pad_id(), tokenizer.cls_id(), tokenizer.mask_id()};
  const int64_t last_epoch = options.epochs > 0 ? std::min(options.epochs, config.schedular.epochs)
                                                : config.schedular.epochs;
  const int64_t batches = loader.num_batches();
  std::cout << "pretraining on " << loader.num_samples() << " samples, " << batches << " steps per epoch, epochs "
            << position.epoch << ".." << last_epoch - 1 << "\n";
  model->train();
  for (int64_t epoch = position.epoch; epoch < last_epoch; ++epoch) {
    const int64_t first_step = epoch == position.epoch ? position.step : 0;
    if (first_step == 0) {
      schedule.begin_epoch(scheduler, epoch);
      meters = MetricLogger();
    }
    loader.start_epoch(epoch, first_step);
    ProgressPrinter progress(batches, options.print_freq);
    std::optional<std::string> previous_mid_checkpoint;
    while (auto batch = loader.next()) {
      const int64_t step = batch->index;
      optimizer.zero_grad();
      const text::BatchEncoding text = tokenizer.encode_batch(batch->captions, 25, text::Padding::Longest);
      const double alpha = schedule.alpha_at(epoch, step, batches);
      const double lr = optimizer.param_groups()[0].lr;
      StepOutputs out;
      {
        PrecisionGuard precision(options.precision, device);
        out = pretrain_forward(model, batch->images.to(device), text.input_ids.to(device),
                               text.attention_mask.to(device), alpha, tokens);
      }
      (out.loss_mlm + out.loss_ita + out.loss_itm).backward();
      optimizer.step();
      const double loss_mlm = out.loss_mlm.item<double>(), loss_ita = out.loss_ita.item<double>(),
                   loss_itm = out.loss_itm.item<double>();
      meters.update("lr", lr);
      meters.update("loss_mlm", loss_mlm);
      meters.update("loss_ita", loss_ita);
      meters.update("loss_itm", loss_itm);
      schedule.after_optimizer_step(scheduler, epoch, step);
      append_line(steps_path, {{"epoch", epoch}, {"step", step}, {"lr", lr}, {"alpha", alpha},
                               {"loss_mlm", loss_mlm}, {"loss_ita", loss_ita}, {"loss_itm", loss_itm}});
      progress.report(epoch, step, meters, kLossNames, lr);

      if (options.save_every_steps > 0 && (step + 1) % options.save_every_steps == 0 && step + 1 < batches) {
        const TrainPosition here{epoch, step + 1};
        const std::string path = options.output_dir + "/" + checkpoint_name(here);
        save_training_checkpoint(path, model, optimizer, scheduler, config, epoch - 1,
                                 ResumeState{here, generator_state(), meters.sums()});
        if (previous_mid_checkpoint) fs::remove(*previous_mid_checkpoint);
        previous_mid_checkpoint = path;
      }
    }
    progress.finish();

    nlohmann::json stats;
    const nlohmann::json averages = meters.epoch_stats();
    for (const auto& item : averages.items()) stats["train_" + item.key()] = item.value();
    stats["epoch"] = epoch;
    append_line(log_path, stats);
    const TrainPosition next{epoch + 1, 0};
    save_training_checkpoint(options.output_dir + "/" + checkpoint_name(next), model, optimizer, scheduler, config,
                             epoch, ResumeState{next, generator_state(), {}});
    if (previous_mid_checkpoint) fs::remove(*previous_mid_checkpoint);
    if (options.keep_checkpoints > 0 && epoch - options.keep_checkpoints >= 0)
      fs::remove(options.output_dir + "/" + checkpoint_name({epoch - options.keep_checkpoints + 1, 0}));
    write_loss_plot(steps_path, options.output_dir + "/loss_curve.png", kLossNames);

    const data::BadSampleReport bad = loader.bad_samples();
    std::cout << "epoch " << epoch << ": " << stats.dump() << "\n";
    if (bad.count > 0) {
      std::cout << "epoch " << epoch << ": skipped " << bad.count << " unreadable image(s), first:";
      for (const auto& sample : bad.first) std::cout << "\n  " << sample.message;
      std::cout << "\n";
    }
  }
}

}  // namespace albef
