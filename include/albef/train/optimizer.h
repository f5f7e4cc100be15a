#pragma once
/// @file optimizer.h
/// @brief AdamW as `torch.optim.AdamW` of PyTorch 1.13, and ALBEF's
/// `create_optimizer` (optim/optim_factory.py) that builds it.
///
/// The update is the single-tensor path PyTorch 1.13 takes by default
/// (foreach=None means False there; amsgrad, maximize and capturable False),
/// op for op, so results match PyTorch bit for bit on the same device.
/// `state_dict()` has exactly the layout `torch.optim.Optimizer.state_dict()`
/// produces, so official scripts resume from our checkpoints and we from theirs.

#include "albef/config/config.h"
#include "albef/io/pyobject.h"

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace albef {

/// Defaults of `torch.optim.AdamW` (a group takes them unless it sets its own).
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

/// A parameter group as passed to the optimizer (PyTorch's param-group dict):
/// tensors plus the settings that override the optimizer's defaults.
struct ParamGroupSpec {
  std::vector<at::Tensor> params;
  std::optional<double> lr = std::nullopt;
  std::optional<double> weight_decay = std::nullopt;
};

/// A live parameter group. Hyper-parameters may be changed between steps
/// (the scheduler writes `lr`); `params` is fixed at construction.
struct ParamGroup {
  std::vector<at::Tensor> params;
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  /// The timm-style scheduler's `initial_lr` (its base lr), which PyTorch
  /// keeps inside the group and therefore saves in the optimizer state.
  std::optional<double> initial_lr;
};

/// Per-parameter state, as `optimizer.state[p]`.
struct AdamWParamState {
  int64_t step = 0;       ///< saved as a float32 0-d tensor, as PyTorch 1.13 does
  at::Tensor exp_avg;     ///< first moment, same shape/dtype/device as the parameter
  at::Tensor exp_avg_sq;  ///< second moment
};

/// `torch.optim.AdamW` (PyTorch 1.13). For each parameter with a gradient:
/// `p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
/// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`. Parameters without
/// a gradient are skipped and get no state until their first gradient.
class AdamW {
 public:
  /// Throws albef::Error for a bad hyper-parameter, a non-leaf or sparse
  /// tensor, or a tensor listed twice (in one or several groups).
  explicit AdamW(std::vector<ParamGroupSpec> groups, const AdamWOptions& defaults = {});

  /// One update of every parameter that has a gradient (under no_grad).
  /// Allocates nothing per step beyond one reusable scratch buffer of the
  /// largest parameter's size (the `denom` of each update in turn).
  void step();

  /// Clears gradients. `set_to_none = false` (PyTorch 1.13's default, and
  /// what the official scripts get) zeroes them in place; `true` drops them,
  /// which frees memory and makes `step()` skip those parameters.
  void zero_grad(bool set_to_none = false);

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }

  /// The state of `param`, or nullptr before its first update.
  const AdamWParamState* state(const at::Tensor& param) const;

  /// `{'state': {index: {'step', 'exp_avg', 'exp_avg_sq'}}, 'param_groups':
  /// [{'weight_decay', 'lr', 'betas', 'eps', 'amsgrad', 'foreach', 'maximize',
  /// 'capturable', ['initial_lr'], 'params'}]}` with the key order and value
  /// types of PyTorch 1.13 (parameters numbered consecutively across groups).
  /// Like PyTorch, the moment tensors are the live state, not copies.
  io::PyObjectPtr state_dict() const;

  /// Restores state and group hyper-parameters (lr, betas, eps,
  /// weight_decay, initial_lr) from a `state_dict()` of this or PyTorch's
  /// AdamW; moments are copied to each parameter's dtype and device. Errors
  /// name what does not match (group count, parameter count per group,
  /// shapes, missing keys, amsgrad/maximize); nothing changes on error.
  void load_state_dict(const io::PyObjectPtr& state);

 private:
  std::vector<ParamGroup> groups_;
  /// Whether each group's spec set weight_decay itself: PyTorch then lists it
  /// first in the group dict (user keys come before filled-in defaults).
  std::vector<bool> explicit_weight_decay_;
  /// State in creation order (the order PyTorch's state dict keeps), and its
  /// index by parameter.
  std::vector<std::pair<at::Tensor, AdamWParamState>> states_;
  std::unordered_map<const void*, size_t> state_index_;
  /// One `denom` buffer per (dtype, device), sized for the largest parameter.
  std::vector<at::Tensor> scratch_;

  at::Tensor& scratch_for(const at::Tensor& param);
};

/// The module's parameters as `named_parameters()` lists them in PyTorch:
/// each module's own parameters, then its children's, recursively; a tensor
/// tied under several names appears once, under its first name.
std::vector<std::pair<std::string, at::Tensor>> unique_named_parameters(const torch::nn::Module& module);

/// ALBEF's `create_optimizer` grouping (timm's `add_weight_decay`; ALBEF has
/// no `no_weight_decay()`): parameters with requires_grad=false are left
/// out; 1-D tensors and names ending in ".bias" go to group 0 with
/// weight_decay 0, all others (the 0-d `temp`, `pos_embed`, `cls_token`
/// included) to group 1 with `weight_decay`. With `weight_decay == 0` the
/// official code does not group at all: one group of every parameter, frozen
/// ones included, with no weight_decay of its own.
std::vector<ParamGroupSpec> official_param_groups(const torch::nn::Module& module, double weight_decay);

/// `create_optimizer(config['optimizer'], model)`: AdamW over
/// `official_param_groups` with lr from the config. Only `opt: adamW` (any
/// case) is supported; another optimizer is an error naming it.
AdamW create_optimizer(const torch::nn::Module& module, const OptimizerConfig& config);

}  // namespace albef
