#include "tasks/checkpoint_info.h"

#include "albef/core/error.h"
#include "tasks/registry.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

namespace albef::tasks {
namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// PyTorch's name of a dtype (torch.float32, ...), without "torch.".
std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kBool: return "bool";
    default: return c10::toString(type);
  }
}

bool is_buffer(const std::string& name) {
  for (const char* buffer : {"image_queue", "text_queue", "idx_queue", "queue_ptr"})
    if (name == buffer) return true;
  return name.size() > 13 && name.compare(name.size() - 13, 13, ".position_ids") == 0;
}

nlohmann::json to_json(const io::PyObjectPtr& object) {
  using Kind = io::PyObject::Kind;
  switch (object->kind) {
    case Kind::None: return nullptr;
    case Kind::Bool: return object->boolean;
    case Kind::Int: return object->integer;
    case Kind::Float: return object->real;
    case Kind::String: return object->text;
    case Kind::Bytes: return "<" + std::to_string(object->text.size()) + " bytes>";
    case Kind::Tensor: {
      std::string shape;
      for (int64_t size : object->tensor.sizes()) shape += (shape.empty() ? "" : ", ") + std::to_string(size);
      return "<tensor [" + shape + "]>";
    }
    case Kind::List:
    case Kind::Tuple: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : object->items) out.push_back(to_json(item));
      return out;
    }
    case Kind::Dict: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& [key, value] : object->entries)
        out[key->kind == Kind::String ? key->text : to_json(key).dump()] = to_json(value);
      return out;
    }
  }
  return nullptr;
}

// N of a name `prefix` N `.`...; -1 when it has another form.
int64_t layer_index(const std::string& name, const std::string& prefix) {
  if (!starts_with(name, prefix)) return -1;
  const size_t dot = name.find('.', prefix.size());
  const std::string digits = name.substr(prefix.size(), dot - prefix.size());
  if (digits.empty() || digits.size() > 6 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

// Largest N + 1 over names `prefix` N `.`...; 0 when none.
int64_t count_layers(const io::StateDict& state, const std::string& prefix) {
  int64_t count = 0;
  for (const auto& [name, tensor] : state) count = std::max(count, layer_index(name, prefix) + 1);
  return count;
}

const at::Tensor* find(const io::StateDict& state, const std::string& name) {
  for (const auto& [key, tensor] : state)
    if (key == name) return &tensor;
  return nullptr;
}

// The checkpoint's shapes: depths from layer counts, resolution from pos_embed.
void read_architecture(const io::StateDict& state, CheckpointInfo& info) {
  if (const at::Tensor* patch = find(state, "visual_encoder.patch_embed.proj.weight"); patch && patch->dim() == 4) {
    info.vision_width = patch->size(0);
    info.patch_size = patch->size(2);
  }
  if (const at::Tensor* pos = find(state, "visual_encoder.pos_embed"); pos && pos->dim() == 3 && info.patch_size > 0) {
    const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(pos->size(1) - 1))));
    if (side * side == pos->size(1) - 1) info.image_res = side * info.patch_size;
  }
  info.vision_depth = count_layers(state, "visual_encoder.blocks.");
  for (const std::string prefix : {"text_encoder.bert.", "text_encoder."}) {
    const int64_t layers = count_layers(state, prefix + "encoder.layer.");
    if (layers == 0) continue;
    info.text_layers = layers;
    info.fusion_layer = layers;
    for (const auto& [name, tensor] : state)
      if (name.find(".crossattention.") != std::string::npos && layer_index(name, prefix + "encoder.layer.") >= 0)
        info.fusion_layer = std::min(info.fusion_layer, layer_index(name, prefix + "encoder.layer."));
    if (const at::Tensor* words = find(state, prefix + "embeddings.word_embeddings.weight"); words && words->dim() == 2)
      info.text_width = words->size(1);
    break;
  }
  info.decoder_layers = count_layers(state, "text_decoder.bert.encoder.layer.");
}

// A config at the checkpoint's depths with widths of 8: state_dict names
// depend on depths, never on widths, and the model builds in microseconds.
Config skeleton_config(const CheckpointInfo& info, int64_t text_layers) {
  Config config;
  config.vision.patch_size = info.patch_size > 0 ? info.patch_size : 16;
  config.vision.embed_dim = 8;
  config.vision.depth = std::max<int64_t>(info.vision_depth, 1);
  config.vision.num_heads = 2;
  config.vision.mlp_ratio = 1.0;
  config.vision_width = 8;
  config.image_res = config.vision.patch_size * 2;
  config.embed_dim = 4;
  config.queue_size = 4;
  config.decoder_layers = info.decoder_layers > 0 ? info.decoder_layers : 6;
  config.bert.vocab_size = 8;
  config.bert.hidden_size = 8;
  config.bert.num_attention_heads = 2;
  config.bert.intermediate_size = 8;
  config.bert.max_position_embeddings = 8;
  config.bert.num_hidden_layers = text_layers;
  config.bert.fusion_layer = std::min(info.fusion_layer, text_layers);
  config.bert.encoder_width = 8;
  return config;
}

KindMatch match(const Task& task, const CheckpointInfo& info, const std::set<std::string>& names) {
  KindMatch result;
  result.kind = task.name;
  Config config = skeleton_config(info, info.text_layers);
  ModelOptions options = task.checkpoint_model(config);
  // Two-image models repeat each fusion layer per image (NLVR2: 6 + 2 x 6 = 18).
  if (options.images_per_text > 1) {
    const int64_t fusion = info.text_layers - info.fusion_layer;
    config = skeleton_config(info, info.fusion_layer + fusion / options.images_per_text);
    options = task.checkpoint_model(config);
  }
  // A checkpoint of the inference model (a state_dict saved without the
  // momentum encoders and queues) is compared with that model.
  if (info.layout != CheckpointLayout::Lavis &&
      std::none_of(names.begin(), names.end(), [](const std::string& name) { return !online_twin(name).empty(); }))
    options.momentum_encoders = false;
  at::NoGradGuard no_grad;
  AlbefModel model(config, options);
  std::set<std::string> expected;
  for (const auto& [name, tensor] : state_dict(*model)) expected.insert(name);
  for (const std::string& name : expected) {
    if (names.count(name)) continue;
    const std::string online = online_twin(name);
    if (info.layout == CheckpointLayout::Lavis && !online.empty() && names.count(online))
      result.momentum_from_online.push_back(name);
    else
      result.missing.push_back(name);
  }
  for (const std::string& name : names)
    if (!expected.count(name)) result.unexpected.push_back(name);
  return result;
}

std::string string_in_config(const nlohmann::json& config, const char* key) {
  return config.is_object() && config.contains(key) ? config[key].dump() : "";
}

// Where names tie: grounding and retrieval share a model, NLVR2 and SNLI-VE
// differ in the classifier's width only; LAVIS's feature extractor is the
// pretraining model without ITM, queues and momentum encoders.
void choose_kind(CheckpointInfo& info, const io::StateDict& state) {
  std::stable_sort(info.matches.begin(), info.matches.end(),
                   [](const KindMatch& a, const KindMatch& b) { return a.mismatches() < b.mismatches(); });
  if (info.matches.empty()) return;
  const size_t best = info.matches.front().mismatches();
  std::vector<std::string> tied;
  for (const KindMatch& m : info.matches)
    if (m.mismatches() == best) tied.push_back(m.kind);
  info.kind = tied.front();
  auto tie = [&](const std::string& a, const std::string& b) {
    return std::count(tied.begin(), tied.end(), a) && std::count(tied.begin(), tied.end(), b);
  };
  if (tie("retrieval", "grounding")) {
    const bool grounding = !string_in_config(info.config, "det_file").empty() ||
                           !string_in_config(info.config, "refcoco_data").empty();
    info.kind = grounding ? "grounding" : "retrieval";
    info.kind_note = grounding ? "its config names det_file / refcoco_data"
                               : "retrieval and grounding share this model (Grounding.py fine-tunes Retrieval.py's)";
  }
  if (tie("nlvr", "ve")) {
    const at::Tensor* classifier = find(state, "cls_head.2.weight");
    const int64_t classes = classifier && classifier->dim() == 2 ? classifier->size(0) : 0;
    info.kind = classes == 3 ? "ve" : "nlvr";
    info.kind_note = "cls_head has " + std::to_string(classes) + " classes";
  }
  const KindMatch& first = info.matches.front();
  if (info.kind == "pretrain" && !first.missing.empty() && first.unexpected.empty() &&
      std::all_of(first.missing.begin(), first.missing.end(), [](const std::string& name) {
        return starts_with(name, "itm_head.") || !online_twin(name).empty() || is_buffer(name);
      })) {
    info.kind = "feature_extractor";
    info.kind_note = "LAVIS's albef_feature_extractor: the pretraining model without ITM, queues and momentum encoders";
  }
  // Keep the chosen kind first.
  std::stable_partition(info.matches.begin(), info.matches.end(),
                        [&](const KindMatch& m) { return m.kind == info.kind; });
}

}  // namespace

CheckpointInfo inspect_checkpoint(const std::string& path) {
  CheckpointInfo info;
  info.path = path;
  io::LazyCheckpoint checkpoint(path);
  const io::PyObjectPtr& root = checkpoint.root();
  const io::StateDict raw = io::state_dict_from(root, path);
  info.layout = detect_layout(raw, root);
  const io::StateDict state = to_official_layout(raw, root);

  if (root->get("model") || root->get("state_dict")) {
    for (const auto& [key, value] : root->entries)
      if (key->kind == io::PyObject::Kind::String && key->text != "model" && key->text != "state_dict")
        info.other_entries.push_back(key->text);
    if (const io::PyObjectPtr epoch = root->get("epoch"); epoch && epoch->kind == io::PyObject::Kind::Int)
      info.epoch = epoch->integer;
    if (const io::PyObjectPtr config = root->get("config")) info.config = to_json(config);
  }
  std::set<const void*> counted;  // tied entries share a storage: count it once
  for (const auto& [name, tensor] : raw) {
    ++info.tensors;
    info.dtypes[dtype_name(tensor.scalar_type())] += tensor.numel();
    if (is_buffer(name)) {
      info.buffer_elements += tensor.numel();
      continue;
    }
    if (counted.insert(tensor.storage().unsafeGetStorageImpl()).second) info.parameters += tensor.numel();
  }
  read_architecture(state, info);

  std::set<std::string> names;
  for (const auto& [name, tensor] : state) names.insert(name);
  if (info.vision_depth > 0 && info.text_layers > 0)
    for (const Task& task : registry())
      if (task.checkpoint_model) info.matches.push_back(match(task, info, names));
  choose_kind(info, state);
  if (info.kind.empty()) info.kind = "unknown";
  return info;
}

nlohmann::json to_json(const CheckpointInfo& info) {
  nlohmann::json kinds = nlohmann::json::array();
  for (const KindMatch& m : info.matches)
    kinds.push_back({{"kind", m.kind},
                     {"missing", m.missing},
                     {"unexpected", m.unexpected},
                     {"momentum_from_online", m.momentum_from_online}});
  return {{"path", info.path},
          {"layout", layout_name(info.layout)},
          {"kind", info.kind},
          {"kind_note", info.kind_note},
          {"image_res", info.image_res},
          {"patch_size", info.patch_size},
          {"vision_depth", info.vision_depth},
          {"vision_width", info.vision_width},
          {"text_layers", info.text_layers},
          {"fusion_layer", info.fusion_layer},
          {"text_width", info.text_width},
          {"decoder_layers", info.decoder_layers},
          {"tensors", info.tensors},
          {"parameters", info.parameters},
          {"buffer_elements", info.buffer_elements},
          {"dtypes", info.dtypes},
          {"epoch", info.epoch ? nlohmann::json(*info.epoch) : nlohmann::json()},
          {"config", info.config},
          {"other_entries", info.other_entries},
          {"kinds", kinds}};
}

}  // namespace albef::tasks
