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

// The random generator states of every rank, stacked [world, n] (one
// process: the state itself), so that a resume restores each rank's own.
at::Tensor generator_states(distributed::ProcessGroup* group) {
  const at::Tensor state = generator_state();
  return group ? group->all_gather(state.unsqueeze(0)) : state;
}

void restore_generator_state(const at::Tensor& saved, int rank, int world_size, int64_t seed, int64_t epoch) {
  if (saved.defined() && saved.dim() == 1 && world_size == 1) return set_generator_state(saved);
  if (saved.defined() && saved.dim() == 2 && saved.size(0) == world_size) return set_generator_state(saved[rank]);
  // Another world size: a fresh stream per rank and epoch (the data order
  // comes from the sampler, not from this generator).
  at::manual_seed(static_cast<uint64_t>(seed + rank + 1000 * epoch));
}

// Sums the epoch's meter sums and counts over the ranks, as the official
// MetricLogger.synchronize_between_processes does before logging.
void synchronize_meters(MetricLogger& meters, distributed::ProcessGroup& group) {
  MeterSums sums = meters.sums();
  std::vector<double> values;
  for (const auto& [name, sum_count] : sums) {
    values.push_back(sum_count.first);
    values.push_back(static_cast<double>(sum_count.second));
  }
  at::Tensor totals = at::tensor(values, at::kDouble);
  group.sum(totals);
  size_t i = 0;
  for (auto& [name, sum_count] : sums) {
    sum_count.first = totals[static_cast<int64_t>(i++)].item<double>();
    sum_count.second = static_cast<int64_t>(std::llround(totals[static_cast<int64_t>(i++)].item<double>()));
  }
  meters.restore(sums);
}

}  // namespace

void run_training(const TrainOptions& options, const Config& config, TrainingTask task) {
  ALBEF_CHECK(task.forward, "a training task needs a forward function");
  ALBEF_CHECK(task.best_key.empty() || task.evaluate, "best_key '", task.best_key, "' without an evaluation");
  const c10::Device device = parse_device(options.device);
  const distributed::DistributedEnv env = distributed::DistributedEnv::from_environment();
  std::unique_ptr<distributed::ProcessGroup> group;
  if (env.distributed())
    group = std::make_unique<distributed::ProcessGroup>(
        env, device, std::chrono::duration_cast<std::chrono::milliseconds>(options.dist_timeout));
  const bool main_rank = env.rank == 0;
  std::ostream quiet(nullptr);
  std::ostream& out = main_rank ? std::cout : quiet;
  if (group) out << "data-parallel over " << env.world_size << " processes (Gloo)\n";

  const std::string log_path = options.output_dir + "/log.txt";
  const std::string steps_path = options.output_dir + "/train_steps.jsonl";
  if (main_rank) {
    fs::create_directories(options.output_dir);
    if (fs::absolute(options.config_path) != fs::absolute(options.output_dir + "/config.yaml"))
      fs::copy_file(options.config_path, options.output_dir + "/config.yaml", fs::copy_options::overwrite_existing);
  }

  // Pretrain.py / Retrieval.py: seed + rank.
  at::manual_seed(static_cast<uint64_t>(options.seed + env.rank));
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
    state = load_training_checkpoint(resume_from, model, optimizer, scheduler);
    restore_generator_state(state.rng_state, env.rank, env.world_size, options.seed, state.position.epoch);
    if (main_rank) {
      truncate_log(log_path, state.position, false);
      truncate_log(steps_path, state.position, true);
    }
    out << "resuming from " << resume_from << " at epoch " << state.position.epoch << ", step "
        << state.position.step << "\n";
  } else {
    if (options.resume) out << "no checkpoint in " << options.output_dir << ", starting from scratch\n";
    if (!options.checkpoint.empty()) {
      const LoadReport report = load_checkpoint(model, options.checkpoint);
      out << "loaded " << options.checkpoint << " (" << report.missing_keys.size() << " missing, "
          << report.unexpected_keys.size() << " unexpected keys)\n";
    }
    if (main_rank) {
      fs::remove(log_path);
      fs::remove(steps_path);
    }
  }
  std::vector<at::Tensor> gradients_of;  // parameters whose gradients are averaged
  for (const auto& parameter : model->parameters())
    if (parameter.requires_grad()) gradients_of.push_back(parameter);
  FeatureGather gather;
  if (group) {
    // Every rank must continue from the same place with rank 0's weights.
    const at::Tensor here = at::tensor({state.position.epoch, state.position.step}, at::kLong).unsqueeze(0);
    const at::Tensor everywhere = group->all_gather(here);
    if (!everywhere.eq(here).all().item<bool>())
      fail("rank ", env.rank, " resumes at a different position than rank 0 (", options.output_dir,
           " must be one folder shared by every machine)");
    std::vector<at::Tensor> tensors = model->parameters();
    for (const auto& buffer : model->buffers()) tensors.push_back(buffer);
    at::NoGradGuard no_grad;
    group->broadcast(tensors);
    gather = [&group](const at::Tensor& x) { return group->all_gather(x); };
  }

  data::TrainLoaderOptions loader_options;
  loader_options.batch_size = task.batch_size;
  loader_options.num_workers = options.workers;
  loader_options.world_size = env.world_size;
  loader_options.rank = env.rank;
  loader_options.sampler_seed = static_cast<uint64_t>(options.seed);
  loader_options.augment_seed = static_cast<uint64_t>(options.seed);
  data::TrainLoader loader(std::move(task.dataset), vision::TrainTransform(config.image_res, task.crop_scale_min),
                           loader_options);
  if (loader.num_batches() == 0)
    fail(options.config_path, ": ", loader.num_samples(), " samples", group ? " per rank" : "",
         " make no full batch of ", task.batch_size);

  const int64_t last_epoch = options.epochs > 0 ? std::min(options.epochs, config.schedular.epochs)
                                                : config.schedular.epochs;
  const int64_t batches = loader.num_batches();
  out << "training on " << loader.num_samples() << " samples" << (group ? " per rank" : "") << ", " << batches
      << " steps per epoch, epochs " << state.position.epoch << ".." << last_epoch - 1 << "\n";
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
        losses = task.forward(model, *batch, alpha, gather);
      }
      ALBEF_CHECK(losses.size() == task.loss_names.size(), losses.size(), " losses for ", task.loss_names.size(),
                  " names");
      at::Tensor total = losses[0];
      for (size_t i = 1; i < losses.size(); ++i) total = total + losses[i];
      total.backward();
      if (group) {
        std::vector<at::Tensor> gradients;
        for (const auto& parameter : gradients_of) gradients.push_back(parameter.grad());
        group->average(gradients);
      }
      optimizer.step();
      task.schedule.after_optimizer_step(scheduler, epoch, step);

      nlohmann::json record = {{"epoch", epoch}, {"step", step}, {"lr", lr}, {"alpha", alpha}};
      meters.update("lr", lr);
      for (size_t i = 0; i < losses.size(); ++i) {
        const double value = losses[i].item<double>();
        meters.update(task.loss_names[i], value);
        record[task.loss_names[i]] = value;
      }
      if (main_rank) {
        append_line(steps_path, record.dump());
        progress.report(epoch, step, meters, task.loss_names, lr);
      }

      if (options.save_every_steps > 0 && (step + 1) % options.save_every_steps == 0 && step + 1 < batches) {
        const TrainPosition here{epoch, step + 1};
        const at::Tensor rng = generator_states(group.get());
        if (main_rank) {
          const std::string path = options.output_dir + "/" + checkpoint_name(here);
          save_training_checkpoint(path, model, optimizer, scheduler, config, epoch - 1,
                                   ResumeState{here, rng, meters.sums(), state.best_score, state.best_epoch});
          if (previous_mid_checkpoint) fs::remove(*previous_mid_checkpoint);
          previous_mid_checkpoint = path;
        }
      }
    }
    if (main_rank) progress.finish();
    if (group) synchronize_meters(meters, *group);

    nlohmann::json stats;
    const nlohmann::json averages = meters.epoch_stats();  // items() must not outlive it
    for (const auto& item : averages.items()) stats["train_" + item.key()] = item.value();
    if (task.evaluate) {
      model->eval();
      const nlohmann::json metrics = task.evaluate(model, epoch, group.get());
      stats.update(metrics);
      if (!task.best_key.empty() && metric_value(metrics, task.best_key) > state.best_score) {
        state.best_score = metric_value(metrics, task.best_key);
        state.best_epoch = epoch;
        const at::Tensor rng = generator_states(group.get());
        if (main_rank)
          save_training_checkpoint(options.output_dir + "/checkpoint_best.pth", model, optimizer, scheduler, config,
                                   epoch, ResumeState{{epoch + 1, 0}, rng, {}, state.best_score, epoch});
      }
    }
    stats["epoch"] = epoch;
    task.schedule.end_epoch(scheduler, epoch);

    const TrainPosition next{epoch + 1, 0};
    const at::Tensor rng = generator_states(group.get());
    if (main_rank) {
      append_line(log_path, stats.dump());
      save_training_checkpoint(options.output_dir + "/" + checkpoint_name(next), model, optimizer, scheduler, config,
                               epoch, ResumeState{next, rng, {}, state.best_score, state.best_epoch});
      if (previous_mid_checkpoint) fs::remove(*previous_mid_checkpoint);
      if (options.keep_checkpoints > 0 && epoch - options.keep_checkpoints >= 0)
        fs::remove(options.output_dir + "/" + checkpoint_name({epoch - options.keep_checkpoints + 1, 0}));
      write_loss_plot(steps_path, options.output_dir + "/loss_curve.png", task.loss_names);
      std::cout << "epoch " << epoch << ": " << stats.dump() << "\n";
    }

    const data::BadSampleReport bad = loader.bad_samples();
    if (bad.count > 0) {
      std::cout << (group ? "rank " + std::to_string(env.rank) + ", " : std::string()) << "epoch " << epoch
                << ": skipped " << bad.count << " unreadable image(s), first:";
      for (const auto& sample : bad.first) std::cout << "\n  " << sample.message;
      std::cout << "\n";
    }
  }
  if (main_rank && !task.best_key.empty() && last_epoch > state.position.epoch) {
    append_line(log_path, "best epoch: " + std::to_string(state.best_epoch));
    std::cout << "best epoch: " << state.best_epoch << " (" << task.best_key << " " << state.best_score << ")\n";
  }
  // Rank 0 may still be writing its last checkpoint; nobody leaves before it is done.
  if (group) group->barrier();
}

}  // namespace albef
