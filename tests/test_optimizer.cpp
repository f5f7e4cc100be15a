// AdamW against hand-computed values and torch.optim.AdamW (python3-torch),
// its state dict both ways, and ALBEF's official parameter grouping.

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/model/albef.h"
#include "albef/tasks/pretrain.h"
#include "albef/train/optimizer.h"
#include "albef/train/scheduler.h"
#include "pyobject_compare.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <string>

namespace {

using albef::AdamW;
using albef::AdamWOptions;
using albef::ParamGroupSpec;
using albef::io::PyObject;
using albef::io::PyObjectPtr;
using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;
using albef::testing::source_path;
using Kind = PyObject::Kind;

const std::string kTiny = "tiny/albef_pretrain_tiny.pth";

/// The albef::Error message of `action`, or "" when it does not throw.
template <typename F>
std::string error_of(F&& action) {
  try {
    action();
  } catch (const albef::Error& e) {
    return e.what();
  }
  return "";
}

void expect_same_object(const PyObjectPtr& expected, const PyObjectPtr& actual, const std::string& path,
                        double atol = 0.0) {
  albef::testing::expect_same_object(expected, actual, path, {atol, /*exact_layout=*/false});
}

at::Tensor leaf(const at::Tensor& values) { return values.clone().requires_grad_(true); }

// --- hand-computed ---------------------------------------------------------

TEST(AdamW, HandComputedTwoSteps) {
  const at::TensorOptions f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor p = leaf(at::tensor({1.0, -2.0}, f64));
  AdamWOptions options;
  options.lr = 0.1;
  options.weight_decay = 0.01;
  AdamW optimizer({ParamGroupSpec{{p}}}, options);

  // Step 1, g = (0.5, 0.1): p *= 1 - 0.1*0.01; m = 0.1 g; v = 0.001 g^2;
  // bias corrections 0.1 and 0.001, so denom = |g| + 1e-8 and step size 1.
  p.mutable_grad() = at::tensor({0.5, 0.1}, f64);
  optimizer.step();
  const double p1a = 0.999 - 0.05 / (0.5 + 1e-8), p1b = -1.998 - 0.01 / (0.1 + 1e-8);
  EXPECT_NEAR(p[0].item<double>(), p1a, 1e-15);
  EXPECT_NEAR(p[1].item<double>(), p1b, 1e-15);

  // Step 2, g = (-1, 0.1): m = 0.9 m + 0.1 g, v = 0.999 v + 0.001 g^2,
  // bias corrections 1 - 0.9^2 = 0.19 and 1 - 0.999^2 = 0.001999.
  p.mutable_grad() = at::tensor({-1.0, 0.1}, f64);
  optimizer.step();
  const double ma = 0.9 * 0.05 - 0.1, mb = 0.9 * 0.01 + 0.01;
  const double va = 0.999 * 0.00025 + 0.001, vb = 0.999 * 0.00001 + 0.00001;
  const double bc2 = std::sqrt(0.001999);
  const double p2a = p1a * 0.999 - 0.1 / 0.19 * ma / (std::sqrt(va) / bc2 + 1e-8);
  const double p2b = p1b * 0.999 - 0.1 / 0.19 * mb / (std::sqrt(vb) / bc2 + 1e-8);
  EXPECT_NEAR(p[0].item<double>(), p2a, 1e-15);
  EXPECT_NEAR(p[1].item<double>(), p2b, 1e-15);
  EXPECT_EQ(optimizer.state(p)->step, 2);
  EXPECT_TRUE(p.is_leaf());  // updated in place under no_grad
}

TEST(AdamW, SkipsParametersWithoutGradient) {
  at::Tensor a = leaf(at::ones({3})), b = leaf(at::ones({2}));
  AdamW optimizer({ParamGroupSpec{{a, b}}});
  a.mutable_grad() = at::ones({3});
  optimizer.step();
  EXPECT_NE(optimizer.state(a), nullptr);
  EXPECT_EQ(optimizer.state(b), nullptr);  // no state, value untouched (not even weight decay)
  EXPECT_TRUE(b.equal(at::ones({2})));
  EXPECT_EQ(optimizer.state_dict()->get("state")->entries.size(), 1u);
}

TEST(AdamW, ZeroGrad) {
  at::Tensor a = leaf(at::ones({3}));
  AdamW optimizer({ParamGroupSpec{{a}}});
  a.mutable_grad() = at::ones({3});
  optimizer.zero_grad();  // PyTorch 1.13's default: zero in place
  ASSERT_TRUE(a.grad().defined());
  EXPECT_TRUE(a.grad().equal(at::zeros({3})));
  optimizer.zero_grad(/*set_to_none=*/true);
  EXPECT_FALSE(a.grad().defined());
  optimizer.step();  // nothing to update
  EXPECT_EQ(optimizer.state(a), nullptr);
}

TEST(AdamW, RejectsBadParameters) {
  at::Tensor a = leaf(at::ones({3}));
  EXPECT_NE(error_of([&] { AdamW({ParamGroupSpec{{a}}, ParamGroupSpec{{a}}}); }).find("more than once"),
            std::string::npos);
  EXPECT_NE(error_of([&] { AdamW({ParamGroupSpec{{a * 2}}}); }).find("non-leaf"), std::string::npos);
  EXPECT_NE(error_of([&] { AdamW({ParamGroupSpec{{a}, -1.0}}); }).find("invalid learning rate"), std::string::npos);
  EXPECT_NE(error_of([&] { AdamW(std::vector<ParamGroupSpec>{}); }).find("empty parameter list"), std::string::npos);
}

// --- against torch.optim.AdamW ---------------------------------------------

// Mirrors tests/python/adamw_reference.py: 6 tensors in 2 groups, tensor 1
// gets its first gradient at step 3, tensor 4 never; group 0's lr becomes
// 5e-4 before step 2; both groups have the scheduler's initial_lr.
constexpr int kParams = 6;
constexpr int kLate = 1, kNever = 4;
bool has_grad(int k, int step) { return k != kNever && !(k == kLate && step < 3); }

class AdamWPyTorch : public ::testing::Test {
 protected:
  static std::string dir_;

  static void SetUpTestSuite() {
    dir_ = make_temp_dir("adamw_pytorch");
    std::string output;
    const int code = run_command(std::string(ALBEF_PYTHON3) + " " + source_path("tests/python/adamw_reference.py") +
                                     " reference " + dir_,
                                 &output);
    ASSERT_EQ(code, 0) << output;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  static at::Tensor npy(const std::string& name) { return albef::io::read_npy(dir_ + "/" + name + ".npy"); }

  static std::vector<at::Tensor> load_params(const std::string& prefix) {
    std::vector<at::Tensor> params;
    for (int k = 0; k < kParams; ++k) params.push_back(leaf(npy(prefix + std::to_string(k))));
    return params;
  }

  static AdamW make_optimizer(const std::vector<at::Tensor>& p) {
    AdamWOptions defaults;
    defaults.lr = 1e-3;
    AdamW optimizer({ParamGroupSpec{{p[0], p[1]}, std::nullopt, 0.0}, ParamGroupSpec{{p[2], p[3], p[4], p[5]}, 3e-3, 0.05}},
                    defaults);
    for (auto& group : optimizer.param_groups()) group.initial_lr = group.lr;
    return optimizer;
  }

  static void run_step(AdamW& optimizer, std::vector<at::Tensor>& params, int step) {
    for (int k = 0; k < kParams; ++k) {
      if (has_grad(k, step))
        params[k].mutable_grad() = npy("g" + std::to_string(step) + "_" + std::to_string(k));
      else
        params[k].mutable_grad().reset();
    }
    if (step == 2) optimizer.param_groups()[0].lr = 5e-4;
    optimizer.step();
  }

  static double max_diff_to(const std::vector<at::Tensor>& params, int step) {
    double worst = 0;
    for (int k = 0; k < kParams; ++k)
      worst = std::max(worst, albef::testing::max_abs_diff(params[k].detach(),
                                                           npy("r" + std::to_string(step) + "_" + std::to_string(k))));
    return worst;
  }
};
std::string AdamWPyTorch::dir_;

TEST_F(AdamWPyTorch, FourStepsMatch) {
  std::vector<at::Tensor> params = load_params("p");
  AdamW optimizer = make_optimizer(params);
  for (int step = 1; step <= 4; ++step) {
    run_step(optimizer, params, step);
    const double diff = max_diff_to(params, step);
    EXPECT_LE(diff, 1e-7) << "after step " << step;
    // The same ATen ops in the same order as PyTorch's single-tensor AdamW.
    EXPECT_EQ(diff, 0.0) << "after step " << step << " (not bit-exact)";
    if (step == 2) {
      EXPECT_EQ(optimizer.state(params[kLate]), nullptr);
    }
  }
  EXPECT_EQ(optimizer.state(params[kLate])->step, 2);
  EXPECT_EQ(optimizer.state(params[0])->step, 4);
  EXPECT_EQ(optimizer.state(params[kNever]), nullptr);
}

TEST_F(AdamWPyTorch, StateDictBothWays) {
  std::vector<at::Tensor> params = load_params("p");
  AdamW optimizer = make_optimizer(params);
  for (int step = 1; step <= 3; ++step) run_step(optimizer, params, step);

  // Ours equals PyTorch's step-3 state dict, as read back by our reader.
  const PyObjectPtr ours = optimizer.state_dict();
  const PyObjectPtr theirs = albef::io::read_torch_file(dir_ + "/state3.pth");
  expect_same_object(theirs, ours, "state_dict", 1e-7);

  // PyTorch loads ours and continues; the tiny model's fresh official
  // optimizer and scheduler state must equal the fixture's exactly.
  albef::io::write_torch_file(dir_ + "/ours3.pth", ours);
  const albef::Config config = albef::load_config(data_path("tiny/Pretrain.yaml"));
  albef::AlbefModel model(config, albef::pretrain_model_options(true));
  AdamW tiny = albef::create_optimizer(*model, config.optimizer);
  albef::CosineLRScheduler scheduler(tiny, config.schedular);
  auto tiny_root = PyObject::new_dict();
  tiny_root->set("optimizer", tiny.state_dict());
  tiny_root->set("lr_scheduler", scheduler.state_dict());
  albef::io::write_torch_file(dir_ + "/tiny_ours.pth", tiny_root);
  std::string output;
  const int code = run_command(std::string(ALBEF_PYTHON3) + " " + source_path("tests/python/adamw_reference.py") +
                                   " load " + dir_ + " " + data_path(kTiny),
                               &output);
  EXPECT_EQ(code, 0) << output;

  // We load PyTorch's and continue: step 4 as PyTorch's.
  std::vector<at::Tensor> resumed = load_params("r3_");
  AdamW from_torch = make_optimizer(resumed);
  from_torch.param_groups()[0].lr = 1.0;  // must come back as 5e-4 from the state dict
  from_torch.load_state_dict(theirs);
  EXPECT_EQ(from_torch.param_groups()[0].lr, 5e-4);
  run_step(from_torch, resumed, 4);
  EXPECT_LE(max_diff_to(resumed, 4), 1e-7);

  // And our own: the state dict comes back identical, in the same order.
  std::vector<at::Tensor> again = load_params("r3_");
  AdamW from_ours = make_optimizer(again);
  from_ours.load_state_dict(albef::io::read_torch_file(dir_ + "/ours3.pth"));
  expect_same_object(ours, from_ours.state_dict(), "reloaded");
}

TEST_F(AdamWPyTorch, LoadStateDictErrorsNameTheMismatch) {
  std::vector<at::Tensor> params = load_params("p");
  AdamW source = make_optimizer(params);
  for (int step = 1; step <= 3; ++step) run_step(source, params, step);
  const PyObjectPtr saved = source.state_dict();

  std::vector<at::Tensor> fresh = load_params("p");
  AdamW target = make_optimizer(fresh);
  auto load_error = [&](const PyObjectPtr& state) { return error_of([&] { target.load_state_dict(state); }); };

  AdamW one_group({ParamGroupSpec{{leaf(at::ones({2}))}}});
  EXPECT_NE(error_of([&] { one_group.load_state_dict(saved); }).find("2 parameter groups, the optimizer has 1"),
            std::string::npos);

  auto short_group = albef::io::read_torch_file(dir_ + "/state3.pth");
  short_group->get("param_groups")->items[1]->get("params")->items.pop_back();
  EXPECT_NE(load_error(short_group).find("param_groups[1] has 3 parameters, the optimizer's group 1 has 4"),
            std::string::npos);

  std::vector<at::Tensor> reshaped = load_params("p");
  reshaped[2] = leaf(at::zeros({12}));
  AdamW wrong_shape = make_optimizer(reshaped);
  const std::string shape_error = error_of([&] { wrong_shape.load_state_dict(saved); });
  EXPECT_NE(shape_error.find("state[2] (group 1, parameter 0)['exp_avg'] has shape [2, 3, 2]"), std::string::npos)
      << shape_error;
  EXPECT_NE(shape_error.find("[12]"), std::string::npos) << shape_error;
  EXPECT_EQ(wrong_shape.state(reshaped[0]), nullptr);  // nothing loaded on error

  auto no_exp_avg = albef::io::read_torch_file(dir_ + "/state3.pth");
  no_exp_avg->get("state")->entries[0].second->entries.erase(
      no_exp_avg->get("state")->entries[0].second->entries.begin() + 1);
  EXPECT_NE(load_error(no_exp_avg).find("state[0] (group 0, parameter 0) has no 'exp_avg'"), std::string::npos);

  auto amsgrad = albef::io::read_torch_file(dir_ + "/state3.pth");
  amsgrad->get("param_groups")->items[0]->set("amsgrad", PyObject::from_bool(true));
  EXPECT_NE(load_error(amsgrad).find("amsgrad=True"), std::string::npos);

  EXPECT_NE(load_error(PyObject::new_list()).find("expected a dict"), std::string::npos);
  EXPECT_EQ(target.param_groups()[0].lr, 1e-3);  // unchanged by the failed loads
  EXPECT_EQ(target.state(fresh[0]), nullptr);
}

// --- official parameter groups ---------------------------------------------

TEST(OfficialParamGroups, TinyPretrainModel) {
  const albef::Config config = albef::load_config(data_path("tiny/Pretrain.yaml"));
  albef::AlbefModel model(config, albef::pretrain_model_options(true));
  const auto groups = albef::official_param_groups(*model, 0.02);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params.size(), 80u);
  EXPECT_EQ(groups[1].params.size(), 51u);
  EXPECT_EQ(groups[0].weight_decay, 0.0);
  EXPECT_EQ(groups[1].weight_decay, 0.02);
  EXPECT_FALSE(groups[0].lr || groups[1].lr);

  // Expected from the official checkpoint: its model keys in state_dict
  // order, without buffers, momentum copies and tied repeats.
  const auto checkpoint = albef::io::read_torch_file(data_path(kTiny));
  std::vector<std::string> expected;
  std::set<const void*> storages;
  for (const auto& [name, tensor] : albef::io::state_dict_from(checkpoint, kTiny)) {
    const bool buffer = name == "image_queue" || name == "text_queue" || name == "queue_ptr" ||
                        name.find("position_ids") != std::string::npos;
    const bool momentum = name.find("_m.") != std::string::npos;
    if (!storages.insert(tensor.storage().unsafeGetStorageImpl()).second || buffer || momentum) continue;
    expected.push_back(name);
  }
  std::vector<std::string> trainable;
  std::map<const void*, std::string> name_of;
  for (const auto& [name, tensor] : albef::unique_named_parameters(*model)) {
    name_of[tensor.unsafeGetTensorImpl()] = name;
    if (tensor.requires_grad()) trainable.push_back(name);
  }
  EXPECT_EQ(trainable, expected);

  std::vector<std::string> grouped[2];
  for (int g = 0; g < 2; ++g)
    for (const auto& p : groups[g].params) grouped[g].push_back(name_of.at(p.unsafeGetTensorImpl()));
  auto in = [&](int g, const std::string& name) {
    return std::find(grouped[g].begin(), grouped[g].end(), name) != grouped[g].end();
  };
  for (const std::string name : {"temp", "visual_encoder.pos_embed", "visual_encoder.cls_token",
                                 "text_encoder.bert.embeddings.word_embeddings.weight", "itm_head.weight"})
    EXPECT_TRUE(in(1, name)) << name;
  for (const std::string name : {"text_encoder.cls.predictions.bias", "visual_encoder.norm.weight", "itm_head.bias"})
    EXPECT_TRUE(in(0, name)) << name;
  EXPECT_FALSE(in(0, "text_encoder.cls.predictions.decoder.weight") || in(1, "text_encoder.cls.predictions.decoder.weight"));
  // Group order follows named_parameters order within each group.
  std::vector<std::string> merged;
  for (const auto& name : trainable) merged.push_back(name);
  std::vector<std::string> reordered = grouped[0];
  reordered.insert(reordered.end(), grouped[1].begin(), grouped[1].end());
  std::sort(merged.begin(), merged.end());
  std::sort(reordered.begin(), reordered.end());
  EXPECT_EQ(merged, reordered);
}

TEST(OfficialParamGroups, FreshStateDictsEqualTheTinyCheckpoint) {
  // The fixture saved create_optimizer + create_scheduler state before any
  // step: same keys, order, Python types and values as ours.
  const albef::Config config = albef::load_config(data_path("tiny/Pretrain.yaml"));
  albef::AlbefModel model(config, albef::pretrain_model_options(true));
  AdamW optimizer = albef::create_optimizer(*model, config.optimizer);
  albef::CosineLRScheduler scheduler(optimizer, config.schedular);
  const auto checkpoint = albef::io::read_torch_file(data_path(kTiny));
  expect_same_object(checkpoint->get("optimizer"), optimizer.state_dict(), "optimizer");
  expect_same_object(checkpoint->get("lr_scheduler"), scheduler.state_dict(), "lr_scheduler");
}

TEST(OfficialParamGroups, ZeroWeightDecayKeepsOneGroupOfEverything) {
  torch::nn::Linear linear(3, 2);
  linear->bias.set_requires_grad(false);
  const auto groups = albef::official_param_groups(*linear, 0.0);
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].params.size(), 2u);  // model.parameters(): frozen ones too
  EXPECT_FALSE(groups[0].weight_decay.has_value());
  AdamW optimizer = albef::create_optimizer(*linear, albef::OptimizerConfig{"AdamW", 1e-4, 0.0});
  const auto group = optimizer.state_dict()->get("param_groups")->items.at(0);
  EXPECT_EQ(group->entries.front().first->text, "lr");  // no explicit weight_decay key first
  EXPECT_EQ(group->get("weight_decay")->real, 0.0);
}

TEST(OfficialParamGroups, OnlyAdamW) {
  torch::nn::Linear linear(3, 2);
  EXPECT_NE(error_of([&] { albef::create_optimizer(*linear, albef::OptimizerConfig{"sgd", 1e-4, 0.02}); })
                .find("opt 'sgd' is not supported"),
            std::string::npos);
}

}  // namespace
