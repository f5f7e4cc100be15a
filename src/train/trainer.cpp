#include "albef/train/trainer.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/io/checkpoint.h"
#include "albef/train/checkpointing.h"
#include "albef/train/optimizer.h"
#include "train/progress.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
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

// One training run, step by step: run_training calls these in order.
class TrainingRun {
 public:
  TrainingRun(const TrainOptions& options, const Config& config, TrainingTask task)
      : options_(options),
        config_(config),
        task_(std::move(task)),
        device_(parse_device(options.device)),
        env_(distributed::DistributedEnv::from_environment()),
        out_(env_.rank == 0 ? std::cout.rdbuf() : nullptr),
        log_path_(options.output_dir + "/log.txt"),
        steps_path_(options.output_dir + "/train_steps.jsonl") {
    ALBEF_CHECK(task_.data, "a training task needs its data");
    ALBEF_CHECK(task_.best_key.empty() || task_.evaluate, "best_key '", task_.best_key, "' without an evaluation");
  }

  /// Joins the other ranks (if any) and readies output_dir.
  void set_up() {
    protect_earlier_run();
    group_ = distributed::join_process_group(
        device_, std::chrono::duration_cast<std::chrono::milliseconds>(options_.dist_timeout));
    if (group_) out_ << "data-parallel over " << env_.world_size << " processes (Gloo)\n";
    if (!main_rank()) return;
    prepare_output_dir(options_.output_dir, "--output_dir");
    if (fs::absolute(options_.config_path) != fs::absolute(options_.output_dir + "/config.yaml"))
      fs::copy_file(options_.config_path, options_.output_dir + "/config.yaml", fs::copy_options::overwrite_existing);
  }

  /// A fresh run refuses an output_dir holding an earlier run's checkpoints
  /// or logs; with --overwrite rank 0 moves every file directly in it to
  /// output_dir/previous_run_N/ first. --resume continues the earlier run.
  void protect_earlier_run() {
    if (options_.resume || !fs::is_directory(options_.output_dir)) return;
    std::vector<std::string> earlier;
    for (const auto& entry : fs::directory_iterator(options_.output_dir)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_regular_file() && (name == "log.txt" || name == "train_steps.jsonl" ||
                                      (name.rfind("checkpoint_", 0) == 0 && entry.path().extension() == ".pth")))
        earlier.push_back(name);
    }
    if (earlier.empty()) return;
    std::sort(earlier.begin(), earlier.end());
    std::string shown;
    for (size_t i = 0; i < std::min<size_t>(3, earlier.size()); ++i) shown += (i ? ", " : "") + earlier[i];
    if (earlier.size() > 3) shown += " and " + std::to_string(earlier.size() - 3) + " more";
    if (!options_.overwrite)
      fail(options_.output_dir, " already holds a run (", shown, "): --resume continues it, --overwrite moves its files to ",
           options_.output_dir, "/previous_run_N/ and starts over");
    if (!main_rank()) return;
    fs::path aside;
    for (int n = 1; fs::exists(aside = fs::path(options_.output_dir) / ("previous_run_" + std::to_string(n))); ++n) {
    }
    fs::create_directories(aside);
    for (const auto& entry : fs::directory_iterator(options_.output_dir))
      if (entry.is_regular_file()) fs::rename(entry.path(), aside / entry.path().filename());
    out_ << "--overwrite: moved the earlier run's files to " << aside.string() << "\n";
  }

  /// The task's model, initialised as the official
  /// constructors do (seed + rank, as Pretrain.py / Retrieval.py), and its
  /// optimiser and schedule.
  void build_model() {
    at::manual_seed(static_cast<uint64_t>(options_.seed + env_.rank));
    model_ = AlbefModel(config_, task_.model);
    model_->init_weights();
    model_->to(device_);
    optimizer_ = std::make_unique<AdamW>(create_optimizer(*model_, config_.optimizer));
    scheduler_ = std::make_unique<CosineLRScheduler>(*optimizer_, config_.schedular);
  }

  /// Continues from the newest checkpoint in output_dir with --resume, else
  /// starts from --checkpoint's weights (or the random ones).
  void resume_or_start() {
    // The same command line plus --resume continues a run: --checkpoint (the
    // initial weights) only matters when output_dir has no checkpoint yet.
    if (options_.resume && main_rank())
      for (const std::string& partial : remove_partial_checkpoints(options_.output_dir))
        out_ << "removed " << partial << ", a checkpoint an interrupted run left half written\n";
    const std::vector<std::string> saved = options_.resume ? training_checkpoints(options_.output_dir)
                                                            : std::vector<std::string>{};
    if (!saved.empty()) {
      const std::string& resume_from = saved.back();
      try {
        state_ = load_training_checkpoint(resume_from, model_, *optimizer_, *scheduler_);
      } catch (const Error& e) {
        // Never a silent restart: the user decides whether to fall back.
        if (saved.size() == 1)
          fail(e.what(), "; --resume: this is the only checkpoint in ", options_.output_dir,
               "; move it aside to start the run over");
        fail(e.what(), "; --resume: cannot continue from the newest checkpoint; to continue from the one before it (",
             saved[saved.size() - 2], "), move ", resume_from, " aside and run again with --resume");
      }
      resumed_from_ = resume_from;
      restore_generator_state(state_.rng_state, env_.rank, env_.world_size, options_.seed, state_.position.epoch);
      if (main_rank()) {
        truncate_log(log_path_, state_.position, false);
        truncate_log(steps_path_, state_.position, true);
      }
      out_ << "resuming from " << resume_from << " at epoch " << state_.position.epoch << ", step "
           << state_.position.step << "\n";
      return;
    }
    if (options_.resume) out_ << "no checkpoint in " << options_.output_dir << ", starting from scratch\n";
    if (!options_.checkpoint.empty()) {
      const LoadReport report = load_checkpoint(model_, options_.checkpoint);
      out_ << "loaded " << options_.checkpoint << " (" << report.missing_keys.size() << " missing, "
           << report.unexpected_keys.size() << " unexpected keys)\n";
      if (task_.after_checkpoint_load) task_.after_checkpoint_load(model_);
    }
    if (main_rank()) {
      fs::remove(log_path_);
      fs::remove(steps_path_);
    }
  }

  /// Data-parallel: every rank continues from the same place with rank 0's
  /// weights, and gathers its momentum features into every rank's queues.
  void synchronize_ranks() {
    for (const auto& parameter : model_->parameters())
      if (parameter.requires_grad()) gradients_of_.push_back(parameter);
    if (!group_) return;
    const at::Tensor here = at::tensor({state_.position.epoch, state_.position.step}, at::kLong).unsqueeze(0);
    const at::Tensor everywhere = group_->all_gather(here);
    if (!everywhere.eq(here).all().item<bool>())
      fail("rank ", env_.rank, " resumes at a different position than rank 0 (", options_.output_dir,
           " must be one folder shared by every machine)");
    std::vector<at::Tensor> tensors = model_->parameters();
    for (const auto& buffer : model_->buffers()) tensors.push_back(buffer);
    at::NoGradGuard no_grad;
    group_->broadcast(tensors);
    gather_ = [this](const at::Tensor& x) { return group_->all_gather(x); };
  }

  /// This rank's shard of the task's data.
  void open_data() {
    data::TrainLoaderOptions loader;
    loader.num_workers = options_.workers;
    loader.world_size = env_.world_size;
    loader.rank = env_.rank;
    loader.sampler_seed = static_cast<uint64_t>(options_.seed);
    loader.augment_seed = static_cast<uint64_t>(options_.seed);
    data_ = task_.data(loader, device_);
    if (state_.data) data_->restore(state_.data, resumed_from_);
    if (data_->num_batches() == 0)
      fail(options_.config_path, ": ", data_->num_samples(), " samples", group_ ? " per rank" : "",
           " make no full batch");
  }

  /// Every remaining epoch: train, evaluate, log, checkpoint.
  void train() {
    const int64_t end_epoch = last_epoch();
    out_ << "training on " << data_->num_samples() << " samples" << (group_ ? " per rank" : "") << ", "
         << data_->num_batches() << " steps per epoch, epochs " << state_.position.epoch << ".." << end_epoch - 1
         << "\n";
    if (state_.position.step > 0) meters_.restore(state_.meters);
    for (int64_t epoch = state_.position.epoch; epoch < end_epoch; ++epoch) {
      train_epoch(epoch);
      nlohmann::json stats = epoch_stats();
      evaluate_epoch(epoch, stats);
      finish_epoch(epoch, stats);
    }
  }

  /// Retrieval.py's closing line, and a barrier so nobody leaves while rank 0 still writes.
  void finish() {
    if (main_rank() && !task_.best_key.empty() && last_epoch() > state_.position.epoch) {
      append_line(log_path_, "best epoch: " + std::to_string(state_.best_epoch));
      std::cout << "best epoch: " << state_.best_epoch << " (" << task_.best_key << " " << state_.best_score << ")\n";
    }
    if (group_) group_->barrier();
  }

 private:
  bool main_rank() const { return env_.rank == 0; }

  int64_t last_epoch() const {
    // GRIT's Pretrain.py stops after train_epochs; the others run the schedule's epochs.
    const int64_t configured = config_.train_epochs > 0 ? config_.train_epochs : config_.schedular.epochs;
    return options_.epochs > 0 ? std::min(options_.epochs, configured) : configured;
  }

  void train_epoch(int64_t epoch) {
    const int64_t first_step = epoch == state_.position.epoch ? state_.position.step : 0;
    if (first_step == 0) {
      task_.schedule.begin_epoch(*scheduler_, epoch);
      meters_ = MetricLogger();
    }
    model_->train();
    data_->start_epoch(epoch, first_step);
    ProgressPrinter progress(data_->num_batches(), options_.print_freq);
    previous_mid_checkpoint_.reset();
    while (auto step = data_->next()) {
      train_step(epoch, *step, progress);
      save_mid_epoch(epoch, step->index);
    }
    data_->end_epoch(epoch, group_.get());
    if (main_rank()) progress.finish();
    if (group_) synchronize_meters(meters_, *group_);
  }

  void train_step(int64_t epoch, const TrainStep& step, ProgressPrinter& progress) {
    optimizer_->zero_grad();
    const double alpha = task_.schedule.alpha_at(epoch, step.index, data_->num_batches());
    const double lr = optimizer_->param_groups()[0].lr;
    std::vector<at::Tensor> losses;
    {
      PrecisionGuard precision(options_.precision, device_);
      losses = step.losses(model_, alpha, gather_);
    }
    ALBEF_CHECK(losses.size() == task_.loss_names.size(), losses.size(), " losses for ", task_.loss_names.size(),
                " names");
    at::Tensor total = losses[0];
    for (size_t i = 1; i < losses.size(); ++i) total = total + losses[i];
    total.backward();
    if (group_) {
      std::vector<at::Tensor> gradients;
      for (const auto& parameter : gradients_of_) gradients.push_back(parameter.grad());
      group_->average(gradients);
    }
    optimizer_->step();
    if (step.after_update) step.after_update(model_);
    task_.schedule.after_optimizer_step(*scheduler_, epoch, step.index);

    nlohmann::json record = {{"epoch", epoch}, {"step", step.index}, {"lr", lr}, {"alpha", alpha}};
    meters_.update("lr", lr);
    for (size_t i = 0; i < losses.size(); ++i) {
      const double value = losses[i].item<double>();
      meters_.update(task_.loss_names[i], value);
      record[task_.loss_names[i]] = value;
    }
    if (main_rank()) {
      append_line(steps_path_, record.dump());
      progress.report(epoch, step.index, meters_, task_.loss_names, lr);
    }
  }

  // --save_every_steps: a checkpoint inside the epoch, replacing the previous one.
  void save_mid_epoch(int64_t epoch, int64_t step) {
    if (options_.save_every_steps <= 0 || (step + 1) % options_.save_every_steps != 0 ||
        step + 1 >= data_->num_batches())
      return;
    const TrainPosition here{epoch, step + 1};
    const at::Tensor rng = generator_states(group_.get());
    const io::PyObjectPtr data = data_->state(group_.get());
    if (!main_rank()) return;
    const std::string path = options_.output_dir + "/" + checkpoint_name(here);
    save_training_checkpoint(path, model_, *optimizer_, *scheduler_, config_, epoch - 1,
                             ResumeState{here, rng, meters_.sums(), state_.best_score, state_.best_epoch, data});
    if (previous_mid_checkpoint_) fs::remove(*previous_mid_checkpoint_);
    previous_mid_checkpoint_ = path;
  }

  nlohmann::json epoch_stats() const {
    nlohmann::json stats;
    const nlohmann::json averages = meters_.epoch_stats();  // items() must not outlive it
    for (const auto& item : averages.items()) stats["train_" + item.key()] = item.value();
    return stats;
  }

  // The task's evaluation, and checkpoint_best.pth when its best_key improved.
  void evaluate_epoch(int64_t epoch, nlohmann::json& stats) {
    if (!task_.evaluate) return;
    model_->eval();
    const nlohmann::json metrics = task_.evaluate(model_, epoch, group_.get());
    stats.update(metrics);
    if (task_.best_key.empty() || metric_value(metrics, task_.best_key) <= state_.best_score) return;
    state_.best_score = metric_value(metrics, task_.best_key);
    state_.best_epoch = epoch;
    const at::Tensor rng = generator_states(group_.get());
    const io::PyObjectPtr data = data_->state(group_.get());
    if (main_rank())
      save_training_checkpoint(options_.output_dir + "/checkpoint_best.pth", model_, *optimizer_, *scheduler_,
                               config_, epoch, ResumeState{{epoch + 1, 0}, rng, {}, state_.best_score, epoch, data});
  }

  // The epoch's log line, checkpoint, loss plot and bad-image report.
  void finish_epoch(int64_t epoch, nlohmann::json& stats) {
    stats["epoch"] = epoch;
    task_.schedule.end_epoch(*scheduler_, epoch);
    const TrainPosition next{epoch + 1, 0};
    const at::Tensor rng = generator_states(group_.get());
    const io::PyObjectPtr data = data_->state(group_.get());
    if (main_rank()) {
      append_line(log_path_, stats.dump());
      save_training_checkpoint(options_.output_dir + "/" + checkpoint_name(next), model_, *optimizer_, *scheduler_,
                               config_, epoch, ResumeState{next, rng, {}, state_.best_score, state_.best_epoch, data});
      if (previous_mid_checkpoint_) fs::remove(*previous_mid_checkpoint_);
      if (options_.keep_checkpoints > 0 && epoch - options_.keep_checkpoints >= 0)
        fs::remove(options_.output_dir + "/" + checkpoint_name({epoch - options_.keep_checkpoints + 1, 0}));
      write_loss_plot(steps_path_, options_.output_dir + "/loss_curve.png", task_.loss_names);
      std::cout << "epoch " << epoch << ": " << stats.dump() << "\n";
    }
    const data::BadSampleReport bad = data_->bad_samples();
    if (bad.count > 0) {
      std::cout << (group_ ? "rank " + std::to_string(env_.rank) + ", " : std::string()) << "epoch " << epoch
                << ": skipped " << bad.count << " unreadable image(s), first:";
      for (const auto& sample : bad.first) std::cout << "\n  " << sample.message;
      std::cout << "\n";
    }
  }

  const TrainOptions& options_;
  const Config& config_;
  TrainingTask task_;
  const c10::Device device_;
  const distributed::DistributedEnv env_;
  std::ostream out_;  // stdout on rank 0, nowhere elsewhere
  const std::string log_path_, steps_path_;
  std::unique_ptr<distributed::ProcessGroup> group_;
  AlbefModel model_{nullptr};
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<CosineLRScheduler> scheduler_;
  ResumeState state_;
  std::string resumed_from_;  // the checkpoint resumed from, if any
  std::vector<at::Tensor> gradients_of_;  // parameters whose gradients are averaged
  FeatureGather gather_;
  std::unique_ptr<TrainData> data_;
  MetricLogger meters_;
  std::optional<std::string> previous_mid_checkpoint_;
};

}  // namespace

void run_training(const TrainOptions& options, const Config& config, TrainingTask task) {
  if (options.precision == Precision::Int8)
    fail("--precision int8 is for inference (embed, score, index, search, serve, --evaluate, --predict): train in fp32 "
         "or bf16");
  TrainingRun run(options, config, std::move(task));
  run.set_up();
  run.build_model();
  run.resume_or_start();
  run.synchronize_ranks();
  run.open_data();
  run.train();
  run.finish();
}

}  // namespace albef
