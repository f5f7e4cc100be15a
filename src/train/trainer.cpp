#include "albef/train/trainer.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/io/checkpoint.h"
#include "albef/train/checkpointing.h"
#include "albef/train/optimizer.h"
#include "albef/train/progress.h"
#include "albef/vision/augment.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

namespace albef {
namespace fs = std::filesystem;
namespace {

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

void append_line(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  out << line << "\n";
  if (!out) fail(path, ": cannot append to the log");
}

double metric_value(const nlohmann::json& metrics, const std::string& key) {
  if (!metrics.contains(key) || !metrics[key].is_number())
    fail("the evaluation reports no number '", key, "' to select the best checkpoint by");
  return metrics[key].get<double>();
}

}  // namespace

void run_training(const TrainOptions& options, const Config& config, TrainingTask task) {
  ALBEF_CHECK(task.forward, "a training task needs a forward function");
  ALBEF_CHECK(task.best_key.empty() || task.evaluate, "best_key '", task.best_key, "' without an evaluation");
  const c10::Device device = parse_device(options.device);

  fs::create_directories(options.output_dir);
  if (fs::absolute(options.config_path) != fs::absolute(options.output_dir + "/config.yaml"))
    fs::copy_file(options.config_path, options.output_dir + "/config.yaml", fs::copy_options::overwrite_existing);
  const std::string log_path = options.output_dir + "/log.txt";
  const std::string steps_path = options.output_dir + "/train_steps.jsonl";

  at::manual_seed(options.seed);
  AlbefModel model(config, ModelOptions{task.model_kind, /*momentum_encoders=*/true});
  model->init_weights();
  model->to(device);
  AdamW optimizer = create_optimizer(*model, config.optimizer);
  CosineLRScheduler scheduler(optimizer, config.schedular);

  ResumeState state;
  // The same command line plus --resume continues a run: --checkpoint (the
  // initial weights) only matters when output_dir has no checkpoint yet.
  const std::string resume_from = options.resume ? latest_checkpoint(options.output_dir).value_or("") : "";
  if (!resume_from.empty()) {
    const ResumeState restored = load_training_checkpoint(resume_from, model, optimizer, scheduler);
    state = restored;
    if (state.rng_state.defined()) set_generator_state(state.rng_state);
    truncate_log(log_path, state.position, false);
    truncate_log(steps_path, state.position, true);
    std::cout << "resuming from " << resume_from << " at epoch " << state.position.epoch << ", step "
              << state.position.step << "\n";
  } else {
    if (options.resume) std::cout << "no checkpoint in " << options.output_dir << ", starting from scratch\n";
    if (!options.checkpoint.empty()) {
      const auto weights = io::state_dict_from(io::read_torch_file(options.checkpoint), options.checkpoint);
      const LoadReport report = load_state_dict(model, weights, options.checkpoint);
      std::cout << "loaded " << options.checkpoint << " (" << report.missing_keys.size() << " missing, "
                << report.unexpected_keys.size() << " unexpected keys)\n";
    }
    fs::remove(log_path);
    fs::remove(steps_path);
  }

  data::TrainLoaderOptions loader_options;
  loader_options.batch_size = task.batch_size;
  loader_options.num_workers = options.workers;
  loader_options.sampler_seed = static_cast<uint64_t>(options.seed);
  loader_options.augment_seed = static_cast<uint64_t>(options.seed);
  data::TrainLoader loader(std::move(task.dataset), vision::TrainTransform(config.image_res, task.crop_scale_min),
                           loader_options);
  if (loader.num_batches() == 0)
    fail(options.config_path, ": ", loader.num_samples(), " samples make no full batch of ", task.batch_size);

  const int64_t last_epoch = options.epochs > 0 ? std::min(options.epochs, config.schedular.epochs)
                                                : config.schedular.epochs;
  const int64_t batches = loader.num_batches();
  std::cout << "training on " << loader.num_samples() << " samples, " << batches << " steps per epoch, epochs "
            << state.position.epoch << ".." << last_epoch - 1 << "\n";
  MetricLogger meters;
  if (state.position.step > 0) meters.restore(state.meters);
  for (int64_t epoch = state.position.epoch; epoch < last_epoch; ++epoch) {
    const int64_t first_step = epoch == state.position.epoch ? state.position.step : 0;
    if (first_step == 0) {
      task.schedule.begin_epoch(scheduler, epoch);
      meters = MetricLogger();
    }
    model->train();
    loader.start_epoch(epoch, first_step);
    ProgressPrinter progress(batches, options.print_freq);
    std::optional<std::string> previous_mid_checkpoint;
    while (auto batch = loader.next()) {
      const int64_t step = batch->index;
      optimizer.zero_grad();
      const double alpha = task.schedule.alpha_at(epoch, step, batches);
      const double lr = optimizer.param_groups()[0].lr;
      std::vector<at::Tensor> losses;
      {
        PrecisionGuard precision(options.precision, device);
        losses = task.forward(model, *batch, alpha);
      }
      ALBEF_CHECK(losses.size() == task.loss_names.size(), losses.size(), " losses for ", task.loss_names.size(),
                  " names");
      at::Tensor total = losses[0];
      for (size_t i = 1; i < losses.size(); ++i) total = total + losses[i];
      total.backward();
      optimizer.step();
      task.schedule.after_optimizer_step(scheduler, epoch, step);

      nlohmann::json record = {{"epoch", epoch}, {"step", step}, {"lr", lr}, {"alpha", alpha}};
      meters.update("lr", lr);
      for (size_t i = 0; i < losses.size(); ++i) {
        const double value = losses[i].item<double>();
        meters.update(task.loss_names[i], value);
        record[task.loss_names[i]] = value;
      }
      append_line(steps_path, record.dump());
      progress.report(epoch, step, meters, task.loss_names, lr);

      if (options.save_every_steps > 0 && (step + 1) % options.save_every_steps == 0 && step + 1 < batches) {
        const TrainPosition here{epoch, step + 1};
        const std::string path = options.output_dir + "/" + checkpoint_name(here);
        save_training_checkpoint(path, model, optimizer, scheduler, config, epoch - 1,
                                 ResumeState{here, generator_state(), meters.sums(), state.best_score,
                                             state.best_epoch});
        if (previous_mid_checkpoint) fs::remove(*previous_mid_checkpoint);
        previous_mid_checkpoint = path;
      }
    }
    progress.finish();

    nlohmann::json stats;
    const nlohmann::json averages = meters.epoch_stats();  // items() must not outlive it
    for (const auto& item : averages.items()) stats["train_" + item.key()] = item.value();
    if (task.evaluate) {
      model->eval();
      const nlohmann::json metrics = task.evaluate(model, epoch);
      stats.update(metrics);
      if (!task.best_key.empty() && metric_value(metrics, task.best_key) > state.best_score) {
        state.best_score = metric_value(metrics, task.best_key);
        state.best_epoch = epoch;
        save_training_checkpoint(options.output_dir + "/checkpoint_best.pth", model, optimizer, scheduler, config,
                                 epoch, ResumeState{{epoch + 1, 0}, generator_state(), {}, state.best_score, epoch});
      }
    }
    stats["epoch"] = epoch;
    append_line(log_path, stats.dump());
    task.schedule.end_epoch(scheduler, epoch);

    const TrainPosition next{epoch + 1, 0};
    save_training_checkpoint(options.output_dir + "/" + checkpoint_name(next), model, optimizer, scheduler, config,
                             epoch, ResumeState{next, generator_state(), {}, state.best_score, state.best_epoch});
    if (previous_mid_checkpoint) fs::remove(*previous_mid_checkpoint);
    if (options.keep_checkpoints > 0 && epoch - options.keep_checkpoints >= 0)
      fs::remove(options.output_dir + "/" + checkpoint_name({epoch - options.keep_checkpoints + 1, 0}));
    write_loss_plot(steps_path, options.output_dir + "/loss_curve.png", task.loss_names);

    const data::BadSampleReport bad = loader.bad_samples();
    std::cout << "epoch " << epoch << ": " << stats.dump() << "\n";
    if (bad.count > 0) {
      std::cout << "epoch " << epoch << ": skipped " << bad.count << " unreadable image(s), first:";
      for (const auto& sample : bad.first) std::cout << "\n  " << sample.message;
      std::cout << "\n";
    }
  }
  if (!task.best_key.empty() && last_epoch > state.position.epoch) {
    append_line(log_path, "best epoch: " + std::to_string(state.best_epoch));
    std::cout << "best epoch: " << state.best_epoch << " (" << task.best_key << " " << state.best_score << ")\n";
  }
}

}  // namespace albef
