#include "albef/train/scheduler.h"

#include "albef/core/error.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace albef {
namespace {

using io::PyObject;
using io::PyObjectPtr;
using Kind = PyObject::Kind;

// Python keeps ints as ints: the official YAML's `decay_rate: 1` is saved as 1.
PyObjectPtr number_object(double value) {
  const bool integral = std::floor(value) == value && std::abs(value) < 9.0e15;
  return integral ? PyObject::from_int(static_cast<int64_t>(value)) : PyObject::from_float(value);
}

double as_number(const PyObjectPtr& value, const std::string& key) {
  if (value->kind == Kind::Float) return value->real;
  if (value->kind == Kind::Int) return static_cast<double>(value->integer);
  fail("scheduler state dict: '", key, "' is a ", value->kind_name(), ", expected a number");
}

int64_t as_integer(const PyObjectPtr& value, const std::string& key) {
  const double number = as_number(value, key);
  if (std::floor(number) != number) fail("scheduler state dict: '", key, "' = ", number, " is not an integer");
  return static_cast<int64_t>(number);
}

bool as_bool(const PyObjectPtr& value, const std::string& key) {
  if (value->kind != Kind::Bool) fail("scheduler state dict: '", key, "' is a ", value->kind_name(), ", expected a bool");
  return value->boolean;
}

std::string as_string(const PyObjectPtr& value, const std::string& key) {
  if (value->kind != Kind::String) fail("scheduler state dict: '", key, "' is a ", value->kind_name(), ", expected a str");
  return value->text;
}

std::vector<double> as_numbers(const PyObjectPtr& value, const std::string& key) {
  if (value->kind != Kind::List && value->kind != Kind::Tuple)
    fail("scheduler state dict: '", key, "' is a ", value->kind_name(), ", expected a list");
  std::vector<double> out;
  for (size_t i = 0; i < value->items.size(); ++i) out.push_back(as_number(value->items[i], str_cat(key, "[", i, "]")));
  return out;
}

PyObjectPtr numbers_object(const std::vector<double>& values, bool integral) {
  auto list = PyObject::new_list();
  for (double v : values) list->items.push_back(integral ? number_object(v) : PyObject::from_float(v));
  return list;
}

}  // namespace

CosineLRScheduler::CosineLRScheduler(AdamW& optimizer, const SchedulerConfig& config) : optimizer_(&optimizer) {
  if (config.sched != "cosine")
    fail("schedular: sched '", config.sched, "' is not supported (only cosine, as in every official config)");
  if (config.epochs <= 0) fail("schedular: epochs must be > 0, got ", config.epochs);
  if (!(config.min_lr >= 0)) fail("schedular: min_lr must be >= 0, got ", config.min_lr);
  if (config.warmup_epochs < 0) fail("schedular: warmup_epochs must be >= 0, got ", config.warmup_epochs);
  t_initial_ = config.epochs;
  lr_min_ = config.min_lr;
  decay_rate_ = config.decay_rate;
  warmup_t_ = config.warmup_epochs;
  warmup_lr_init_ = config.warmup_lr;

  for (auto& group : optimizer_->param_groups()) {
    if (!group.initial_lr) group.initial_lr = group.lr;
    base_values_.push_back(*group.initial_lr);
  }
  set_lrs(base_values_);
  if (warmup_t_ != 0) {
    for (double base : base_values_) warmup_steps_.push_back((base - warmup_lr_init_) / static_cast<double>(warmup_t_));
    set_lrs(std::vector<double>(base_values_.size(), warmup_lr_init_));
  } else {
    warmup_steps_.assign(base_values_.size(), 1.0);
  }
}

void CosineLRScheduler::set_lrs(const std::vector<double>& values) {
  auto& groups = optimizer_->param_groups();
  // zip() in the official update_groups: extra values or groups are left alone.
  for (size_t g = 0; g < std::min(groups.size(), values.size()); ++g) groups[g].lr = values[g];
}

std::vector<double> CosineLRScheduler::lr_at(int64_t t) const {
  std::vector<double> lrs;
  if (t < warmup_t_) {
    for (double s : warmup_steps_) lrs.push_back(warmup_lr_init_ + static_cast<double>(t) * s);
    return lrs;
  }
  if (warmup_prefix_) t -= warmup_t_;
  // t_mul is 1 (load_state_dict refuses others), so cycles have equal length.
  const int64_t cycle = t >= 0 ? t / t_initial_ : -((-t + t_initial_ - 1) / t_initial_);  // Python's floor division
  const int64_t t_curr = t - t_initial_ * cycle;
  if (cycle_limit_ == 0 || (cycle_limit_ > 0 && cycle < cycle_limit_)) {
    const double gamma = std::pow(decay_rate_, static_cast<double>(cycle));
    const double lr_min = lr_min_ * gamma;
    // Same operation order as cosine_lr.py, so values match it exactly.
    const double cosine = 1 + std::cos(M_PI * static_cast<double>(t_curr) / static_cast<double>(t_initial_));
    for (double base : base_values_) lrs.push_back(lr_min + 0.5 * (base * gamma - lr_min) * cosine);
  } else {
    lrs.assign(base_values_.size(), lr_min_);
  }
  return lrs;
}

void CosineLRScheduler::step(int64_t t) { set_lrs(lr_at(t)); }

io::PyObjectPtr CosineLRScheduler::state_dict() const {
  auto out = PyObject::new_dict();
  out->set("param_group_field", PyObject::from_string("lr"));
  out->set("_initial_param_group_field", PyObject::from_string("initial_lr"));
  out->set("base_values", numbers_object(base_values_, false));
  out->set("metric", PyObject::none());
  out->set("noise_range_t", PyObject::none());
  out->set("noise_pct", PyObject::from_float(noise_pct_));
  out->set("noise_type", PyObject::from_string(noise_type_));
  out->set("noise_std", PyObject::from_float(noise_std_));
  out->set("noise_seed", PyObject::from_int(noise_seed_));
  out->set("t_initial", PyObject::from_int(t_initial_));
  out->set("t_mul", PyObject::from_float(1.0));
  out->set("lr_min", PyObject::from_float(lr_min_));
  out->set("decay_rate", number_object(decay_rate_));
  out->set("cycle_limit", PyObject::from_int(cycle_limit_));
  out->set("warmup_t", PyObject::from_int(warmup_t_));
  out->set("warmup_lr_init", PyObject::from_float(warmup_lr_init_));
  out->set("warmup_prefix", PyObject::from_bool(warmup_prefix_));
  out->set("t_in_epochs", PyObject::from_bool(true));
  // Without warm-up the official code fills warmup_steps with the int 1.
  out->set("warmup_steps", numbers_object(warmup_steps_, warmup_t_ == 0));
  return out;
}

void CosineLRScheduler::load_state_dict(const io::PyObjectPtr& state) {
  if (!state || !state->is_dict()) fail("scheduler state dict: expected a dict, got a ", state ? state->kind_name() : "null");
  static const std::set<std::string> known = {
      "param_group_field", "_initial_param_group_field", "base_values", "metric", "noise_range_t", "noise_pct",
      "noise_type", "noise_std", "noise_seed", "t_initial", "t_mul", "lr_min", "decay_rate", "cycle_limit",
      "warmup_t", "warmup_lr_init", "warmup_prefix", "t_in_epochs", "warmup_steps"};
  for (const auto& entry : state->entries) {
    const PyObjectPtr& key = entry.first;
    if (!key || key->kind != Kind::String) fail("scheduler state dict: a key is not a str");
    if (!known.count(key->text)) fail("scheduler state dict: unknown key '", key->text, "'");
  }
  auto get = [&](const std::string& key) {
    PyObjectPtr value = state->get(key);
    if (!value) fail("scheduler state dict: missing '", key, "'");
    return value;
  };

  if (as_string(get("param_group_field"), "param_group_field") != "lr")
    fail("scheduler state dict: 'param_group_field' is not 'lr' (not an lr scheduler)");
  if (as_string(get("_initial_param_group_field"), "_initial_param_group_field") != "initial_lr")
    fail("scheduler state dict: '_initial_param_group_field' is not 'initial_lr'");
  if (get("noise_range_t")->kind != Kind::None)
    fail("scheduler state dict: LR noise (noise_range_t) is not supported; ALBEF's configs never enable it");
  get("metric");  // only recorded by the official step(); nothing to restore
  if (!as_bool(get("t_in_epochs"), "t_in_epochs"))
    fail("scheduler state dict: t_in_epochs=False (per-update stepping) is not supported");
  const double t_mul = as_number(get("t_mul"), "t_mul");
  if (t_mul != 1.0) fail("scheduler state dict: t_mul = ", t_mul, " is not supported (create_scheduler uses 1)");

  CosineLRScheduler next = *this;
  next.base_values_ = as_numbers(get("base_values"), "base_values");
  next.noise_pct_ = as_number(get("noise_pct"), "noise_pct");
  next.noise_type_ = as_string(get("noise_type"), "noise_type");
  next.noise_std_ = as_number(get("noise_std"), "noise_std");
  next.noise_seed_ = as_integer(get("noise_seed"), "noise_seed");
  next.t_initial_ = as_integer(get("t_initial"), "t_initial");
  next.lr_min_ = as_number(get("lr_min"), "lr_min");
  next.decay_rate_ = as_number(get("decay_rate"), "decay_rate");
  next.cycle_limit_ = as_integer(get("cycle_limit"), "cycle_limit");
  next.warmup_t_ = as_integer(get("warmup_t"), "warmup_t");
  next.warmup_lr_init_ = as_number(get("warmup_lr_init"), "warmup_lr_init");
  next.warmup_prefix_ = as_bool(get("warmup_prefix"), "warmup_prefix");
  next.warmup_steps_ = as_numbers(get("warmup_steps"), "warmup_steps");

  const size_t groups = optimizer_->param_groups().size();
  if (next.base_values_.size() != groups)
    fail("scheduler state dict: 'base_values' has ", next.base_values_.size(), " values, the optimizer has ", groups,
         " parameter groups");
  if (next.warmup_steps_.size() != groups)
    fail("scheduler state dict: 'warmup_steps' has ", next.warmup_steps_.size(), " values, the optimizer has ", groups,
         " parameter groups");
  if (next.t_initial_ <= 0) fail("scheduler state dict: 't_initial' must be > 0, got ", next.t_initial_);
  if (next.warmup_t_ < 0) fail("scheduler state dict: 'warmup_t' must be >= 0, got ", next.warmup_t_);
  *this = std::move(next);
}

TrainingSchedule TrainingSchedule::pretrain(const Config& config) {
  TrainingSchedule rules;
  rules.epoch_step = EpochStep::AtStart;
  rules.warmup_epochs = config.schedular.warmup_epochs;
  rules.alpha = config.alpha;
  rules.alpha_warm_up = true;  // Pretrain.py ramps alpha whatever `warm_up` says
  return rules;
}

TrainingSchedule TrainingSchedule::retrieval(const Config& config) {
  TrainingSchedule rules;
  rules.epoch_step = EpochStep::AtEnd;
  rules.warmup_epochs = config.schedular.warmup_epochs;
  rules.alpha = config.alpha;
  rules.alpha_warm_up = config.warm_up;
  return rules;
}

void TrainingSchedule::begin_epoch(CosineLRScheduler& scheduler, int64_t epoch) const {
  if (epoch_step == EpochStep::AtStart && epoch > 0) scheduler.step(epoch + warmup_epochs);
}

void TrainingSchedule::after_optimizer_step(CosineLRScheduler& scheduler, int64_t epoch, int64_t iteration) const {
  if (epoch == 0 && iteration % kWarmupStepSize == 0 && iteration <= warmup_epochs * kWarmupStepSize)
    scheduler.step(iteration / kWarmupStepSize);
}

void TrainingSchedule::end_epoch(CosineLRScheduler& scheduler, int64_t epoch) const {
  if (epoch_step == EpochStep::AtEnd) scheduler.step(epoch + warmup_epochs + 1);
}

double TrainingSchedule::alpha_at(int64_t epoch, int64_t iteration, int64_t iterations_per_epoch) const {
  if (epoch > 0 || !alpha_warm_up) return alpha;
  ALBEF_CHECK(iterations_per_epoch > 0, "iterations_per_epoch = ", iterations_per_epoch);
  return alpha * std::min(1.0, static_cast<double>(iteration) / static_cast<double>(iterations_per_epoch));
}

}  // namespace albef
