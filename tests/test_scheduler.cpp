// The cosine schedule and the official scripts' driving rules against the lr
// and alpha the official Pretrain.train / Retrieval.train recorded before
// every optimizer step (tests/data/schedule/, see the fixtures README).

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/train/optimizer.h"
#include "albef/train/scheduler.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/nn/modules/linear.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace {

using albef::AdamW;
using albef::CosineLRScheduler;
using albef::TrainingSchedule;
using albef::io::PyObject;
using albef::io::PyObjectPtr;
using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::source_path;
using nlohmann::json;

template <typename F>
std::string error_of(F&& action) {
  try {
    action();
  } catch (const albef::Error& e) {
    return e.what();
  }
  return "";
}

json schedule_json() {
  std::ifstream in(data_path("schedule/schedule.json"));
  return json::parse(in);
}

/// What the official scripts train: the official create_optimizer on a
/// module with one weight and one bias (two groups), and the scheduler.
struct Training {
  torch::nn::Linear module{1, 1};
  AdamW optimizer;
  CosineLRScheduler scheduler;
  explicit Training(const albef::Config& config)
      : optimizer(albef::create_optimizer(*module, config.optimizer)), scheduler(optimizer, config.schedular) {}
};

/// Runs epochs [first, last) of the official loop shape, calling `record`
/// with (epoch, i, lr of group 0, alpha) where optimizer.step() would run.
void run_epochs(Training& training, const TrainingSchedule& rules, int64_t first, int64_t last, int64_t iterations,
                const std::function<void(int64_t, int64_t, double, double)>& record) {
  for (int64_t epoch = first; epoch < last; ++epoch) {
    rules.begin_epoch(training.scheduler, epoch);
    for (int64_t i = 0; i < iterations; ++i) {
      const double alpha = rules.alpha_at(epoch, i, iterations);
      const auto& groups = training.optimizer.param_groups();
      ASSERT_EQ(groups[0].lr, groups[1].lr);
      record(epoch, i, groups[0].lr, alpha);
      rules.after_optimizer_step(training.scheduler, epoch, i);
    }
    rules.end_epoch(training.scheduler, epoch);
  }
}

/// Checks the recorded lr (rel 1e-12) and alpha against the fixture arrays.
class Recorded {
 public:
  Recorded(const std::string& name, int64_t iterations)
      : lr_(albef::io::read_npy(data_path("schedule/" + name + "__lr.npy"))),
        alpha_(albef::io::read_npy(data_path("schedule/" + name + "__alpha.npy"))),
        iterations_(iterations) {}

  int64_t size() const { return lr_.numel(); }

  void check(int64_t epoch, int64_t i, double lr, double alpha) {
    const int64_t k = epoch * iterations_ + i;
    ASSERT_LT(k, size());
    const double expected = lr_[k].item<double>();
    const double rel = std::abs(lr - expected) / expected;
    worst_rel_ = std::max(worst_rel_, rel);
    EXPECT_LE(rel, 1e-12) << "lr at epoch " << epoch << " iteration " << i << ": " << lr << " vs " << expected;
    EXPECT_EQ(alpha, alpha_[k].item<double>()) << "alpha at epoch " << epoch << " iteration " << i;
    ++checked_;
  }

  int64_t checked() const { return checked_; }
  double worst_rel() const { return worst_rel_; }

 private:
  at::Tensor lr_, alpha_;
  int64_t iterations_;
  int64_t checked_ = 0;
  double worst_rel_ = 0;
};

void expect_config_matches(const albef::Config& config, const json& recorded) {
  EXPECT_EQ(config.optimizer.lr, recorded["optimizer"]["lr"].get<double>());
  EXPECT_EQ(config.optimizer.weight_decay, recorded["optimizer"]["weight_decay"].get<double>());
  const json& s = recorded["schedular"];
  EXPECT_EQ(config.schedular.epochs, s["epochs"].get<int64_t>());
  EXPECT_EQ(config.schedular.min_lr, s["min_lr"].get<double>());
  EXPECT_EQ(config.schedular.warmup_lr, s["warmup_lr"].get<double>());
  EXPECT_EQ(config.schedular.warmup_epochs, s["warmup_epochs"].get<int64_t>());
  EXPECT_EQ(config.schedular.decay_rate, s["decay_rate"].get<double>());
}

TEST(Schedule, PretrainMatchesOfficialRun) {
  const json recorded = schedule_json()["pretrain"];
  const albef::Config config = albef::load_config(source_path("configs/Pretrain.yaml"));
  expect_config_matches(config, recorded);
  const int64_t epochs = recorded["epochs"], iterations = recorded["iters_per_epoch"];

  Training training(config);
  EXPECT_EQ(training.optimizer.param_groups()[0].lr, recorded["lr_after_create_scheduler"].get<double>());
  Recorded expected("pretrain", iterations);
  ASSERT_EQ(expected.size(), epochs * iterations);
  run_epochs(training, TrainingSchedule::pretrain(config), 0, epochs, iterations,
             [&](int64_t e, int64_t i, double lr, double alpha) { expected.check(e, i, lr, alpha); });
  EXPECT_EQ(expected.checked(), epochs * iterations);
  EXPECT_EQ(expected.worst_rel(), 0.0) << "same double operations as cosine_lr.py: expected bit-exact";
}

TEST(Schedule, RetrievalMatchesOfficialRun) {
  const json recorded = schedule_json()["retrieval_coco"];
  const albef::Config config = albef::load_config(source_path("configs/Retrieval_coco.yaml"));
  expect_config_matches(config, recorded);
  const int64_t epochs = recorded["epochs"], iterations = recorded["iters_per_epoch"];

  Training training(config);
  Recorded expected("retrieval_coco", iterations);
  ASSERT_EQ(expected.size(), epochs * iterations);
  run_epochs(training, TrainingSchedule::retrieval(config), 0, epochs, iterations,
             [&](int64_t e, int64_t i, double lr, double alpha) { expected.check(e, i, lr, alpha); });
  EXPECT_EQ(expected.checked(), epochs * iterations);
  EXPECT_EQ(expected.worst_rel(), 0.0);
  // The step after the last epoch, t = 4 + 1 + 1, is past the cycle: min_lr.
  EXPECT_EQ(training.optimizer.param_groups()[0].lr, config.schedular.min_lr);
}

TEST(Schedule, ResumingFromCheckpointedStateContinuesTheRun) {
  const json recorded = schedule_json()["pretrain"];
  const albef::Config config = albef::load_config(source_path("configs/Pretrain.yaml"));
  const int64_t epochs = recorded["epochs"], iterations = recorded["iters_per_epoch"];
  const TrainingSchedule rules = TrainingSchedule::pretrain(config);
  Recorded expected("pretrain", iterations);
  auto check = [&](int64_t e, int64_t i, double lr, double alpha) { expected.check(e, i, lr, alpha); };

  // Train epochs 0-2, save as Pretrain.py does, resume in fresh objects
  // (start_epoch = saved epoch + 1) as Pretrain.py does.
  const std::string dir = make_temp_dir("schedule_resume");
  {
    Training first(config);
    run_epochs(first, rules, 0, 3, iterations, check);
    auto root = PyObject::new_dict();
    root->set("optimizer", first.optimizer.state_dict());
    root->set("lr_scheduler", first.scheduler.state_dict());
    root->set("epoch", PyObject::from_int(2));
    albef::io::write_torch_file(dir + "/checkpoint_02.pth", root);
  }
  const PyObjectPtr checkpoint = albef::io::read_torch_file(dir + "/checkpoint_02.pth");
  Training resumed(config);
  resumed.optimizer.load_state_dict(checkpoint->get("optimizer"));
  resumed.scheduler.load_state_dict(checkpoint->get("lr_scheduler"));
  run_epochs(resumed, rules, checkpoint->get("epoch")->integer + 1, epochs, iterations, check);
  EXPECT_EQ(expected.checked(), epochs * iterations);
  std::filesystem::remove_all(dir);
}

TEST(CosineLRScheduler, Formula) {
  const albef::Config config = albef::load_config(source_path("configs/Pretrain.yaml"));
  Training training(config);
  const CosineLRScheduler& s = training.scheduler;
  EXPECT_EQ(s.base_values(), std::vector<double>(2, 1e-4));  // the optimizer's lr, as initial_lr
  EXPECT_EQ(training.optimizer.param_groups()[1].initial_lr, 1e-4);
  EXPECT_EQ(s.lr_at(0)[0], 1e-5);
  EXPECT_NEAR(s.lr_at(3)[0], 2.35e-5, 1e-18);
  EXPECT_NEAR(s.lr_at(19)[0], 1e-5 + 19 * 4.5e-6, 1e-18);
  EXPECT_DOUBLE_EQ(s.lr_at(20)[0], 1e-4);
  EXPECT_NEAR(s.lr_at(21)[0], 1e-5 + 0.5 * 9e-5 * (1 + std::cos(M_PI / 30)), 1e-18);
  EXPECT_NEAR(s.lr_at(35)[0], 1e-5 + 0.5 * 9e-5, 1e-18);
  EXPECT_EQ(s.lr_at(50)[0], 1e-5);   // one cycle only: min_lr after
  EXPECT_EQ(s.lr_at(500)[0], 1e-5);
}

TEST(CosineLRScheduler, WithoutWarmup) {
  albef::Config config = albef::load_config(source_path("configs/Pretrain.yaml"));
  config.schedular.warmup_epochs = 0;
  Training training(config);
  EXPECT_EQ(training.optimizer.param_groups()[0].lr, 1e-4);  // the base lr, not warmup_lr
  EXPECT_EQ(training.scheduler.lr_at(0)[0], 1e-4);
  EXPECT_EQ(training.scheduler.lr_at(30)[0], 1e-5);
  // The official code fills warmup_steps with the int 1 then.
  const PyObjectPtr steps = training.scheduler.state_dict()->get("warmup_steps");
  ASSERT_EQ(steps->items.size(), 2u);
  EXPECT_EQ(steps->items[0]->kind, PyObject::Kind::Int);
  EXPECT_EQ(steps->items[0]->integer, 1);
}

TEST(CosineLRScheduler, KeepsAnExistingInitialLr) {
  const albef::Config config = albef::load_config(source_path("configs/Pretrain.yaml"));
  torch::nn::Linear module(1, 1);
  AdamW optimizer = albef::create_optimizer(*module, config.optimizer);
  optimizer.param_groups()[0].initial_lr = 2e-4;  // e.g. restored from a checkpoint first
  CosineLRScheduler scheduler(optimizer, config.schedular);
  EXPECT_EQ(scheduler.base_values(), (std::vector<double>{2e-4, 1e-4}));
  EXPECT_EQ(scheduler.lr_at(20), (std::vector<double>{2e-4, 1e-4}));
  EXPECT_EQ(optimizer.param_groups()[0].lr, 1e-5);
}

TEST(CosineLRScheduler, StateDictRoundTrip) {
  const albef::Config config = albef::load_config(source_path("configs/Pretrain.yaml"));
  Training original(config);
  const std::string dir = make_temp_dir("scheduler_state");
  albef::io::write_torch_file(dir + "/s.pth", original.scheduler.state_dict());
  const PyObjectPtr saved = albef::io::read_torch_file(dir + "/s.pth");
  std::filesystem::remove_all(dir);

  // The saved schedule replaces the configured one (official __dict__.update).
  const albef::Config other = albef::load_config(source_path("configs/Retrieval_coco.yaml"));
  Training restored(other);
  const double lr_before = restored.optimizer.param_groups()[0].lr;
  restored.scheduler.load_state_dict(saved);
  EXPECT_EQ(restored.optimizer.param_groups()[0].lr, lr_before);  // untouched until the next step
  for (int64_t t = 0; t <= 60; ++t) EXPECT_EQ(restored.scheduler.lr_at(t), original.scheduler.lr_at(t)) << t;
  const PyObjectPtr again = restored.scheduler.state_dict();
  ASSERT_EQ(again->entries.size(), saved->entries.size());
  for (size_t i = 0; i < saved->entries.size(); ++i) {
    EXPECT_EQ(again->entries[i].first->text, saved->entries[i].first->text);
    EXPECT_EQ(again->entries[i].second->kind, saved->entries[i].second->kind) << saved->entries[i].first->text;
  }
}

TEST(CosineLRScheduler, LoadStateDictErrors) {
  const albef::Config config = albef::load_config(source_path("configs/Pretrain.yaml"));
  Training training(config);
  auto fresh = [&] { return Training(config).scheduler.state_dict(); };
  auto load_error = [&](const PyObjectPtr& state) { return error_of([&] { training.scheduler.load_state_dict(state); }); };

  PyObjectPtr missing = fresh();
  missing->entries.erase(missing->entries.begin() + 9);  // t_initial
  EXPECT_NE(load_error(missing).find("missing 't_initial'"), std::string::npos);

  PyObjectPtr unknown = fresh();
  unknown->set("t_final", PyObject::from_int(3));
  EXPECT_NE(load_error(unknown).find("unknown key 't_final'"), std::string::npos);

  PyObjectPtr three_groups = fresh();
  three_groups->get("base_values")->items.push_back(PyObject::from_float(1e-4));
  EXPECT_NE(load_error(three_groups).find("'base_values' has 3 values, the optimizer has 2"), std::string::npos);

  PyObjectPtr noise = fresh();
  noise->set("noise_range_t", PyObject::from_int(10));
  EXPECT_NE(load_error(noise).find("noise"), std::string::npos);

  PyObjectPtr mistyped = fresh();
  mistyped->set("warmup_t", PyObject::from_string("20"));
  EXPECT_NE(load_error(mistyped).find("'warmup_t' is a str"), std::string::npos);

  EXPECT_NE(load_error(Training(config).optimizer.state_dict()).find("unknown key"), std::string::npos);
  EXPECT_EQ(training.scheduler.lr_at(20)[0], 1e-4);  // unchanged by the failed loads
}

TEST(CosineLRScheduler, RejectsUnsupportedConfig) {
  albef::Config config = albef::load_config(source_path("configs/Pretrain.yaml"));
  torch::nn::Linear module(1, 1);
  AdamW optimizer = albef::create_optimizer(*module, config.optimizer);
  config.schedular.sched = "step";
  EXPECT_NE(error_of([&] { CosineLRScheduler(optimizer, config.schedular); }).find("sched 'step' is not supported"),
            std::string::npos);
  config.schedular.sched = "cosine";
  config.schedular.epochs = 0;
  EXPECT_NE(error_of([&] { CosineLRScheduler(optimizer, config.schedular); }).find("epochs must be > 0"),
            std::string::npos);
}

TEST(TrainingSchedule, Rules) {
  albef::Config config = albef::load_config(source_path("configs/Retrieval_coco.yaml"));
  const TrainingSchedule retrieval = TrainingSchedule::retrieval(config);
  EXPECT_EQ(retrieval.epoch_step, TrainingSchedule::EpochStep::AtEnd);
  EXPECT_EQ(retrieval.warmup_epochs, 1);
  EXPECT_DOUBLE_EQ(retrieval.alpha_at(0, 250, 500), 0.2);
  EXPECT_EQ(retrieval.alpha_at(1, 0, 500), 0.4);
  config.warm_up = false;  // Retrieval.py ramps alpha only with warm_up
  EXPECT_EQ(TrainingSchedule::retrieval(config).alpha_at(0, 0, 500), 0.4);
  EXPECT_EQ(TrainingSchedule::pretrain(config).alpha_at(0, 0, 500), 0.0);  // Pretrain.py always ramps

  // Warm-up steps only at multiples of 100 up to warmup_epochs * 100.
  Training training(config);
  auto& lr = training.optimizer.param_groups()[0].lr;
  const TrainingSchedule pretrain = TrainingSchedule::pretrain(config);
  lr = -1;
  pretrain.after_optimizer_step(training.scheduler, 0, 150);
  pretrain.after_optimizer_step(training.scheduler, 0, 200);  // > warmup_epochs * 100
  pretrain.after_optimizer_step(training.scheduler, 1, 100);  // epoch 1
  pretrain.begin_epoch(training.scheduler, 0);
  pretrain.end_epoch(training.scheduler, 3);
  EXPECT_EQ(lr, -1);
  pretrain.after_optimizer_step(training.scheduler, 0, 100);
  EXPECT_EQ(lr, training.scheduler.lr_at(1)[0]);
  pretrain.begin_epoch(training.scheduler, 2);
  EXPECT_EQ(lr, training.scheduler.lr_at(3)[0]);
  retrieval.end_epoch(training.scheduler, 2);
  EXPECT_EQ(lr, training.scheduler.lr_at(4)[0]);
}

}  // namespace
