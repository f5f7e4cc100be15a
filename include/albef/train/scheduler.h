#pragma once
/// @file scheduler.h
/// @brief ALBEF's learning-rate schedule: the timm-style `CosineLRScheduler`
/// (scheduler/cosine_lr.py, built by scheduler_factory.py's
/// `create_scheduler` with `sched: cosine`) and the rules by which the
/// official training scripts drive it and the distillation weight alpha.
///
/// Time `t` is counted in epochs, but the official scripts also step it
/// every 100 iterations of epoch 0 (t = 0, 1, 2, ...) for the warm-up. See
/// `TrainingSchedule` for where each script calls `step`.

#include "albef/config/config.h"
#include "albef/io/pyobject.h"
#include "albef/train/optimizer.h"

#include <cstdint>
#include <string>
#include <vector>

namespace albef {

/// Cosine decay with linear warm-up, as ALBEF's CosineLRScheduler with the
/// arguments `create_scheduler` passes: t_initial = epochs, lr_min = min_lr,
/// decay_rate, warmup_lr_init = warmup_lr, warmup_t = warmup_epochs,
/// t_mul 1, cycle_limit 1, warmup_prefix, t in epochs, no noise.
///
/// Each group's base lr is its `initial_lr` (set to the group's lr when the
/// scheduler is built, as PyTorch's `setdefault`): the optimizer's lr, not
/// the `schedular.lr` key (which the official code never reads).
/// For group base `b`: `lr(t) = warmup_lr + t*(b - warmup_lr)/warmup_t` for
/// `t < warmup_t`; else with `u = t - warmup_t`, cycle `i = u / t_initial`:
/// `min_lr + 0.5*(b - min_lr)*(1 + cos(pi*(u - i*t_initial)/t_initial))`
/// while `i < cycle_limit`, and `min_lr` after.
class CosineLRScheduler {
 public:
  /// Sets every group's `initial_lr` (if unset) and then its lr to
  /// `warmup_lr` (to the base lr when warmup_epochs is 0), as the official
  /// constructor does. Keeps a reference to `optimizer`, which must outlive
  /// the scheduler. Throws albef::Error unless `sched` is "cosine",
  /// epochs > 0, min_lr >= 0 and warmup_epochs >= 0.
  CosineLRScheduler(AdamW& optimizer, const SchedulerConfig& config);

  /// Sets every group's lr to `lr_at(t)` (`scheduler.step(t)`).
  void step(int64_t t);

  /// The lr of each group at time `t`, without changing anything.
  std::vector<double> lr_at(int64_t t) const;

  const std::vector<double>& base_values() const { return base_values_; }

  /// The official `state_dict()` (its `__dict__` minus the optimizer), with
  /// the same keys, order and Python types: `param_group_field`,
  /// `_initial_param_group_field`, `base_values`, `metric`, the noise
  /// settings, `t_initial`, `t_mul`, `lr_min`, `decay_rate` (an int when
  /// integral, as the official YAML's `decay_rate: 1` loads), `cycle_limit`,
  /// `warmup_t`, `warmup_lr_init`, `warmup_prefix`, `t_in_epochs`,
  /// `warmup_steps`.
  io::PyObjectPtr state_dict() const;

  /// Restores every field from a `state_dict()` (the official
  /// `__dict__.update`: the saved schedule replaces the configured one). Does
  /// not touch the optimizer's lr, which the next `step` sets. Errors name a
  /// missing, unknown or mistyped key, a base_values count that differs from
  /// the optimizer's group count, and what ALBEF's factory never sets and
  /// this class does not implement (LR noise, t_mul != 1, per-update
  /// stepping); nothing changes on error.
  void load_state_dict(const io::PyObjectPtr& state);

 private:
  AdamW* optimizer_;
  std::vector<double> base_values_;
  int64_t t_initial_ = 1;
  double lr_min_ = 0.0;
  double decay_rate_ = 1.0;
  int64_t cycle_limit_ = 1;
  int64_t warmup_t_ = 0;
  double warmup_lr_init_ = 0.0;
  bool warmup_prefix_ = true;
  std::vector<double> warmup_steps_;
  /// Noise settings are saved for a faithful state dict; noise itself is
  /// never enabled by ALBEF's configs (noise_range_t stays None).
  double noise_pct_ = 0.67;
  std::string noise_type_ = "normal";
  double noise_std_ = 1.0;
  int64_t noise_seed_ = 42;

  void set_lrs(const std::vector<double>& values);
};

/// How an official training script moves the schedule and alpha; the
/// trainer calls these hooks at the matching points of its loop:
///
///     for epoch: begin_epoch; for i: alpha_at(...); forward/backward;
///                optimizer.step(); after_optimizer_step(...);
///                [evaluate]; end_epoch
///
/// In epoch 0 both scripts call `step(i / 100)` after the optimizer step of
/// every iteration `i` with `i % 100 == 0` and `i <= warmup_epochs * 100`,
/// so a new lr takes effect from iteration i + 1 (step_size = 100,
/// warmup_iterations = warmup_epochs * 100).
struct TrainingSchedule {
  /// Iterations per warm-up step of epoch 0 (`step_size` in the scripts).
  static constexpr int64_t kWarmupStepSize = 100;

  /// When the per-epoch `scheduler.step` happens.
  enum class EpochStep {
    /// Pretrain.py (and VQA.py): `step(epoch + warmup_epochs)` at the start
    /// of every epoch >= 1 (also after resuming).
    AtStart,
    /// Retrieval.py (and NLVR.py, VE.py, Grounding.py):
    /// `step(epoch + warmup_epochs + 1)` after every epoch, after evaluation.
    AtEnd,
  };

  EpochStep epoch_step = EpochStep::AtStart;
  int64_t warmup_epochs = 0;
  double alpha = 0.4;
  /// Ramp alpha over epoch 0: Pretrain.py always does; Retrieval.py only
  /// with `warm_up: True`.
  bool alpha_warm_up = true;

  /// The rules of Pretrain.py for `config`.
  static TrainingSchedule pretrain(const Config& config);
  /// The rules of Retrieval.py for `config`.
  static TrainingSchedule retrieval(const Config& config);

  /// Before the first iteration of `epoch`.
  void begin_epoch(CosineLRScheduler& scheduler, int64_t epoch) const;
  /// After `optimizer.step()` of iteration `iteration` (0-based) of `epoch`.
  void after_optimizer_step(CosineLRScheduler& scheduler, int64_t epoch, int64_t iteration) const;
  /// After `epoch` is trained (and evaluated).
  void end_epoch(CosineLRScheduler& scheduler, int64_t epoch) const;

  /// The alpha passed to the model at `iteration` of `epoch`:
  /// `alpha * min(1, iteration / iterations_per_epoch)` in epoch 0 when
  /// ramping, else `alpha`.
  double alpha_at(int64_t epoch, int64_t iteration, int64_t iterations_per_epoch) const;
};

}  // namespace albef
