#include "albef/train/optimizer.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <unordered_set>

namespace albef {
namespace {

using io::PyObject;
using io::PyObjectPtr;
using Kind = PyObject::Kind;

const void* key_of(const at::Tensor& t) { return t.unsafeGetTensorImpl(); }

void check_hyperparameters(const ParamGroup& group, size_t index) {
  // The same checks and wording as torch.optim.AdamW's constructor.
  if (!(group.lr >= 0)) fail("AdamW group ", index, ": invalid learning rate ", group.lr);
  if (!(group.eps >= 0)) fail("AdamW group ", index, ": invalid epsilon value ", group.eps);
  if (!(group.beta1 >= 0 && group.beta1 < 1)) fail("AdamW group ", index, ": invalid beta parameter at index 0: ", group.beta1);
  if (!(group.beta2 >= 0 && group.beta2 < 1)) fail("AdamW group ", index, ": invalid beta parameter at index 1: ", group.beta2);
  if (!(group.weight_decay >= 0)) fail("AdamW group ", index, ": invalid weight_decay value ", group.weight_decay);
}

std::string shape_of(const at::Tensor& t) { return str_cat(t.sizes()); }

// --- reading a state dict --------------------------------------------------

const PyObjectPtr& require(const PyObjectPtr& dict, const std::string& key, const std::string& where) {
  for (const auto& [name, value] : dict->entries)
    if (name && name->kind == Kind::String && name->text == key) return value;
  fail("optimizer state dict: ", where, " has no '", key, "'");
}

double as_number(const PyObjectPtr& value, const std::string& what) {
  if (value->kind == Kind::Float) return value->real;
  if (value->kind == Kind::Int) return static_cast<double>(value->integer);
  fail("optimizer state dict: ", what, " is a ", value->kind_name(), ", expected a number");
}

bool as_bool(const PyObjectPtr& value, const std::string& what) {
  if (value->kind == Kind::Bool) return value->boolean;
  fail("optimizer state dict: ", what, " is a ", value->kind_name(), ", expected a bool");
}

int64_t as_step(const PyObjectPtr& value, const std::string& what) {
  // PyTorch >= 1.12 saves a 0-d float tensor, older versions a plain number.
  double step = 0;
  if (value->kind == Kind::Tensor) {
    if (value->tensor.numel() != 1) fail("optimizer state dict: ", what, " has ", value->tensor.numel(), " elements");
    step = value->tensor.item<double>();
  } else {
    step = as_number(value, what);
  }
  if (!(step >= 0) || step != std::floor(step)) fail("optimizer state dict: ", what, " = ", step, " is not a step count");
  return static_cast<int64_t>(step);
}

const std::vector<PyObjectPtr>& as_sequence(const PyObjectPtr& value, const std::string& what) {
  if (value->kind != Kind::List && value->kind != Kind::Tuple)
    fail("optimizer state dict: ", what, " is a ", value->kind_name(), ", expected a list");
  return value->items;
}

}  // namespace

AdamW::AdamW(std::vector<ParamGroupSpec> groups, const AdamWOptions& defaults) {
  if (groups.empty()) fail("AdamW: got an empty parameter list");
  std::unordered_set<const void*> seen;
  for (auto& spec : groups) {
    ParamGroup group;
    group.lr = spec.lr.value_or(defaults.lr);
    group.beta1 = defaults.beta1;
    group.beta2 = defaults.beta2;
    group.eps = defaults.eps;
    group.weight_decay = spec.weight_decay.value_or(defaults.weight_decay);
    check_hyperparameters(group, groups_.size());
    for (const auto& p : spec.params) {
      if (!p.defined()) fail("AdamW group ", groups_.size(), ": undefined tensor");
      if (!p.is_leaf()) fail("AdamW group ", groups_.size(), ": can't optimize a non-leaf tensor");
      if (p.is_sparse()) fail("AdamW group ", groups_.size(), ": sparse parameters are not supported");
      if (p.is_complex()) fail("AdamW group ", groups_.size(), ": complex parameters are not supported");
      if (!seen.insert(key_of(p)).second)
        fail("AdamW: a parameter appears more than once (in one or several parameter groups)");
    }
    group.params = std::move(spec.params);
    explicit_weight_decay_.push_back(spec.weight_decay.has_value());
    groups_.push_back(std::move(group));
  }
}

at::Tensor& AdamW::scratch_for(const at::Tensor& param) {
  for (auto& buffer : scratch_)
    if (buffer.scalar_type() == param.scalar_type() && buffer.device() == param.device()) return buffer;
  // Sized once for the largest parameter of this kind, so later steps never allocate.
  int64_t largest = 0;
  for (const auto& group : groups_)
    for (const auto& p : group.params)
      if (p.scalar_type() == param.scalar_type() && p.device() == param.device()) largest = std::max(largest, p.numel());
  scratch_.push_back(at::empty({largest}, param.options()));
  return scratch_.back();
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  for (const auto& group : groups_) {
    for (const auto& param : group.params) {
      const at::Tensor& grad = param.grad();
      if (!grad.defined()) continue;
      if (grad.is_sparse()) fail("AdamW does not support sparse gradients");

      auto found = state_index_.find(key_of(param));
      if (found == state_index_.end()) {
        AdamWParamState fresh;
        fresh.exp_avg = at::zeros_like(param, at::MemoryFormat::Preserve);
        fresh.exp_avg_sq = at::zeros_like(param, at::MemoryFormat::Preserve);
        found = state_index_.emplace(key_of(param), states_.size()).first;
        states_.emplace_back(param, std::move(fresh));
      }
      AdamWParamState& state = states_[found->second].second;

      // Op for op as torch/optim/adamw.py `_single_tensor_adamw` (1.13):
      // scalars are computed in double and handed to the kernels as Scalars.
      state.step += 1;
      if (group.weight_decay != 0) param.mul_(1 - group.lr * group.weight_decay);  // mul_(1.0) is exact: skipped
      state.exp_avg.mul_(group.beta1).add_(grad, 1 - group.beta1);
      state.exp_avg_sq.mul_(group.beta2).addcmul_(grad, grad, 1 - group.beta2);

      const double step = static_cast<double>(state.step);
      const double bias_correction1 = 1 - std::pow(group.beta1, step);
      const double bias_correction2 = 1 - std::pow(group.beta2, step);
      const double step_size = group.lr / bias_correction1;
      const double bias_correction2_sqrt = std::sqrt(bias_correction2);

      at::Tensor denom = scratch_for(param).narrow(0, 0, param.numel()).view(param.sizes());
      at::sqrt_out(denom, state.exp_avg_sq);
      denom.div_(bias_correction2_sqrt).add_(group.eps);
      param.addcdiv_(state.exp_avg, denom, -step_size);
    }
  }
}

void AdamW::zero_grad(bool set_to_none) {
  for (auto& group : groups_) {
    for (auto& param : group.params) {
      at::Tensor& grad = param.mutable_grad();
      if (!grad.defined()) continue;
      if (set_to_none) {
        grad.reset();
        continue;
      }
      // As torch.optim.Optimizer.zero_grad: cut the grad from any graph first.
      if (grad.grad_fn())
        grad.detach_();
      else
        grad.requires_grad_(false);
      grad.zero_();
    }
  }
}

const AdamWParamState* AdamW::state(const at::Tensor& param) const {
  const auto found = state_index_.find(key_of(param));
  return found == state_index_.end() ? nullptr : &states_[found->second].second;
}

io::PyObjectPtr AdamW::state_dict() const {
  std::unordered_map<const void*, int64_t> index_of;
  auto param_groups = PyObject::new_list();
  int64_t next = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& group = groups_[g];
    auto packed = PyObject::new_dict();
    // Key order of PyTorch's group dict: the spec's own keys, then the
    // defaults it lacked in AdamW's order, then the scheduler's initial_lr.
    if (explicit_weight_decay_[g]) packed->set("weight_decay", PyObject::from_float(group.weight_decay));
    packed->set("lr", PyObject::from_float(group.lr));
    packed->set("betas", PyObject::new_tuple({PyObject::from_float(group.beta1), PyObject::from_float(group.beta2)}));
    packed->set("eps", PyObject::from_float(group.eps));
    if (!explicit_weight_decay_[g]) packed->set("weight_decay", PyObject::from_float(group.weight_decay));
    packed->set("amsgrad", PyObject::from_bool(false));
    packed->set("foreach", PyObject::none());
    packed->set("maximize", PyObject::from_bool(false));
    packed->set("capturable", PyObject::from_bool(false));
    if (group.initial_lr) packed->set("initial_lr", PyObject::from_float(*group.initial_lr));
    auto indices = PyObject::new_list();
    for (const auto& p : group.params) {
      index_of.emplace(key_of(p), next);
      indices->items.push_back(PyObject::from_int(next++));
    }
    packed->set("params", indices);
    param_groups->items.push_back(packed);
  }

  auto state = PyObject::new_dict();
  for (const auto& [param, s] : states_) {
    const auto index = index_of.find(key_of(param));
    if (index == index_of.end()) continue;  // PyTorch saves only the state of grouped parameters too
    auto entry = PyObject::new_dict();
    entry->set("step", PyObject::from_tensor(at::scalar_tensor(static_cast<double>(s.step), at::kFloat)));
    entry->set("exp_avg", PyObject::from_tensor(s.exp_avg));
    entry->set("exp_avg_sq", PyObject::from_tensor(s.exp_avg_sq));
    state->entries.emplace_back(PyObject::from_int(index->second), entry);
  }

  auto root = PyObject::new_dict();
  root->set("state", state);
  root->set("param_groups", param_groups);
  return root;
}

void AdamW::load_state_dict(const io::PyObjectPtr& root) {
  if (!root || !root->is_dict()) fail("optimizer state dict: expected a dict, got a ", root ? root->kind_name() : "null");
  const PyObjectPtr& saved_state = require(root, "state", "the root");
  const auto& saved_groups = as_sequence(require(root, "param_groups", "the root"), "'param_groups'");
  if (!saved_state->is_dict()) fail("optimizer state dict: 'state' is a ", saved_state->kind_name(), ", expected a dict");
  if (saved_groups.size() != groups_.size())
    fail("optimizer state dict: it has ", saved_groups.size(), " parameter groups, the optimizer has ", groups_.size());

  // Everything is parsed into copies first, so a bad dict changes nothing.
  std::vector<ParamGroup> groups = groups_;
  std::unordered_map<int64_t, std::pair<size_t, size_t>> where;  // saved index -> (group, position)
  for (size_t g = 0; g < groups.size(); ++g) {
    const PyObjectPtr& saved = saved_groups[g];
    const std::string name = str_cat("param_groups[", g, "]");
    if (!saved->is_dict()) fail("optimizer state dict: ", name, " is a ", saved->kind_name(), ", expected a dict");
    const auto& indices = as_sequence(require(saved, "params", name), name + "['params']");
    if (indices.size() != groups[g].params.size())
      fail("optimizer state dict: ", name, " has ", indices.size(), " parameters, the optimizer's group ", g, " has ",
           groups[g].params.size());
    for (size_t j = 0; j < indices.size(); ++j) {
      if (indices[j]->kind != Kind::Int) fail("optimizer state dict: ", name, "['params'][", j, "] is not an int");
      if (!where.emplace(indices[j]->integer, std::make_pair(g, j)).second)
        fail("optimizer state dict: parameter index ", indices[j]->integer, " is listed twice");
    }
    for (const char* flag : {"amsgrad", "maximize"})
      if (const auto value = saved->get(flag); value && as_bool(value, name + "['" + flag + "']"))
        fail("optimizer state dict: ", name, " has ", flag, "=True, which this AdamW does not implement");
    ParamGroup& group = groups[g];
    group.lr = as_number(require(saved, "lr", name), name + "['lr']");
    group.eps = as_number(require(saved, "eps", name), name + "['eps']");
    group.weight_decay = as_number(require(saved, "weight_decay", name), name + "['weight_decay']");
    const auto& betas = as_sequence(require(saved, "betas", name), name + "['betas']");
    if (betas.size() != 2) fail("optimizer state dict: ", name, "['betas'] has ", betas.size(), " values, expected 2");
    group.beta1 = as_number(betas[0], name + "['betas'][0]");
    group.beta2 = as_number(betas[1], name + "['betas'][1]");
    const auto initial_lr = saved->get("initial_lr");
    group.initial_lr = initial_lr ? std::optional<double>(as_number(initial_lr, name + "['initial_lr']")) : std::nullopt;
    check_hyperparameters(group, g);
  }

  std::vector<std::pair<at::Tensor, AdamWParamState>> states;
  std::unordered_map<const void*, size_t> state_index;
  for (const auto& [key, value] : saved_state->entries) {
    if (key->kind != Kind::Int) fail("optimizer state dict: 'state' has a key of type ", key->kind_name());
    const auto found = where.find(key->integer);
    if (found == where.end()) continue;  // as PyTorch: state of an unknown index is not kept
    const auto [g, j] = found->second;
    const at::Tensor& param = groups[g].params[j];
    const std::string name = str_cat("state[", key->integer, "] (group ", g, ", parameter ", j, ")");
    if (!value->is_dict()) fail("optimizer state dict: ", name, " is a ", value->kind_name(), ", expected a dict");
    AdamWParamState s;
    s.step = as_step(require(value, "step", name), name + "['step']");
    for (const auto& [field, target] : {std::make_pair("exp_avg", &s.exp_avg), std::make_pair("exp_avg_sq", &s.exp_avg_sq)}) {
      const PyObjectPtr& saved = require(value, field, name);
      if (saved->kind != Kind::Tensor) fail("optimizer state dict: ", name, "['", field, "'] is not a tensor");
      if (saved->tensor.sizes() != param.sizes())
        fail("optimizer state dict: ", name, "['", field, "'] has shape ", shape_of(saved->tensor),
             " but the parameter has shape ", shape_of(param));
      *target = saved->tensor.to(param.options(), /*non_blocking=*/false, /*copy=*/true);
    }
    state_index.emplace(key_of(param), states.size());
    states.emplace_back(param, std::move(s));
  }

  groups_ = std::move(groups);
  states_ = std::move(states);
  state_index_ = std::move(state_index);
}

std::vector<std::pair<std::string, at::Tensor>> unique_named_parameters(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::unordered_set<const void*> seen;
  std::function<void(const torch::nn::Module&, const std::string&)> visit = [&](const torch::nn::Module& m,
                                                                                const std::string& prefix) {
    for (const auto& item : m.named_parameters(/*recurse=*/false))
      if (seen.insert(key_of(item.value())).second) out.emplace_back(prefix + item.key(), item.value());
    for (const auto& child : m.named_children()) visit(*child.value(), prefix + child.key() + ".");
  };
  visit(module, "");
  return out;
}

std::vector<ParamGroupSpec> official_param_groups(const torch::nn::Module& module, double weight_decay) {
  const auto named = unique_named_parameters(module);
  if (weight_decay == 0) {
    // create_optimizer skips add_weight_decay when weight_decay is falsy.
    ParamGroupSpec all;
    for (const auto& [name, p] : named) all.params.push_back(p);
    return {all};
  }
  ParamGroupSpec no_decay, decay;
  no_decay.weight_decay = 0.0;
  decay.weight_decay = weight_decay;
  const std::string bias = ".bias";
  for (const auto& [name, p] : named) {
    if (!p.requires_grad()) continue;
    const bool is_bias = name.size() >= bias.size() && name.compare(name.size() - bias.size(), bias.size(), bias) == 0;
    (p.dim() == 1 || is_bias ? no_decay : decay).params.push_back(p);
  }
  return {no_decay, decay};
}

AdamW create_optimizer(const torch::nn::Module& module, const OptimizerConfig& config) {
  std::string opt = config.opt;
  std::transform(opt.begin(), opt.end(), opt.begin(), [](unsigned char c) { return std::tolower(c); });
  if (opt != "adamw") fail("optimizer: opt '", config.opt, "' is not supported (only adamW, as in every official config)");
  AdamWOptions defaults;
  defaults.lr = config.lr;
  // The groups carry the decay; create_optimizer passes weight_decay=0 as the
  // default (and without grouping the decay is 0 anyway).
  defaults.weight_decay = 0.0;
  return AdamW(official_param_groups(module, config.weight_decay), defaults);
}

}  // namespace albef
