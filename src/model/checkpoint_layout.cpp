#include "albef/model/checkpoint_layout.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>

#include <map>
#include <set>

namespace albef {
namespace {

constexpr char kWordEmbeddings[] = "word_embeddings.weight";
constexpr char kPositionEmbeddings[] = "position_embeddings.weight";
constexpr char kTokenTypeEmbeddings[] = "token_type_embeddings.weight";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::map<std::string, at::Tensor> by_name(const io::StateDict& state) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, tensor] : state) out.emplace(name, tensor);
  return out;
}

bool has_lavis_config(const io::PyObjectPtr& root) {
  const io::PyObjectPtr config = root ? root->get("config") : nullptr;
  const io::PyObjectPtr model = config ? config->get("model") : nullptr;
  const io::PyObjectPtr arch = model ? model->get("arch") : nullptr;
  return arch && arch->kind == io::PyObject::Kind::String && arch->text.rfind("albef", 0) == 0;
}

}  // namespace

const char* layout_name(CheckpointLayout layout) { return layout == CheckpointLayout::Lavis ? "lavis" : "official"; }

std::vector<std::string> bert_embedding_prefixes(const io::StateDict& state) {
  std::vector<std::string> prefixes;
  for (const auto& [name, tensor] : state)
    if (ends_with(name, std::string("embeddings.") + kWordEmbeddings))
      prefixes.push_back(name.substr(0, name.size() - std::string(kWordEmbeddings).size()));
  return prefixes;
}

CheckpointLayout detect_layout(const io::StateDict& state, const io::PyObjectPtr& root) {
  if (root && (root->get(kOfficialEmbeddingsEntry) || has_lavis_config(root))) return CheckpointLayout::Lavis;
  const auto names = by_name(state);
  for (const std::string& prefix : bert_embedding_prefixes(state)) {
    // SIMLA's single-stream BERT has no token-type embeddings either, but a
    // cross-attention in its first layer, which LAVIS's ALBEF never has.
    const std::string bert = prefix.substr(0, prefix.size() - std::string("embeddings.").size());
    if (names.count(bert + "encoder.layer.0.crossattention.self.query.weight")) continue;
    if (!names.count(prefix + kTokenTypeEmbeddings)) return CheckpointLayout::Lavis;
  }
  return CheckpointLayout::Official;
}

io::StateDict to_official_layout(const io::StateDict& state, const io::PyObjectPtr& root) {
  const auto names = by_name(state);
  std::map<std::string, at::Tensor> kept;  // what an official -> LAVIS conversion set aside
  if (const io::PyObjectPtr entry = root ? root->get(kOfficialEmbeddingsEntry) : nullptr)
    for (const auto& [name, tensor] : io::state_dict_from(entry, kOfficialEmbeddingsEntry)) kept.emplace(name, tensor);
  std::set<std::string> without_type;
  for (const std::string& prefix : bert_embedding_prefixes(state))
    if (!names.count(prefix + kTokenTypeEmbeddings)) without_type.insert(prefix);

  io::StateDict out;
  out.reserve(state.size() + without_type.size());
  for (const auto& [name, tensor] : state) {
    if (!ends_with(name, kPositionEmbeddings)) {
      out.emplace_back(name, tensor);
      continue;
    }
    const std::string prefix = name.substr(0, name.size() - std::string(kPositionEmbeddings).size());
    if (!without_type.count(prefix)) {
      out.emplace_back(name, tensor);
      continue;
    }
    const auto position = kept.find(name);
    const auto token_type = kept.find(prefix + kTokenTypeEmbeddings);
    if (position != kept.end() && token_type != kept.end()) {
      out.emplace_back(name, position->second);
      out.emplace_back(prefix + kTokenTypeEmbeddings, token_type->second);
      continue;
    }
    // LAVIS's BERT adds no token-type embedding: zeros add none either.
    const at::Tensor& words = names.at(prefix + kWordEmbeddings);
    out.emplace_back(name, tensor);
    out.emplace_back(prefix + kTokenTypeEmbeddings, at::zeros({2, words.size(1)}, words.options()));
  }
  return out;
}

io::StateDict to_lavis_layout(const io::StateDict& state, io::StateDict& official_embeddings) {
  const auto names = by_name(state);
  io::StateDict out;
  out.reserve(state.size());
  for (const auto& [name, tensor] : state) {
    if (ends_with(name, kTokenTypeEmbeddings) && names.count(name.substr(0, name.size() - std::string(kTokenTypeEmbeddings).size()) + kWordEmbeddings))
      continue;  // folded into the position embeddings below
    if (!ends_with(name, kPositionEmbeddings)) {
      out.emplace_back(name, tensor);
      continue;
    }
    const std::string prefix = name.substr(0, name.size() - std::string(kPositionEmbeddings).size());
    const auto token_type = names.find(prefix + kTokenTypeEmbeddings);
    if (token_type == names.end()) {
      out.emplace_back(name, tensor);
      continue;
    }
    if (tensor.dim() != 2 || token_type->second.dim() != 2 || tensor.size(1) != token_type->second.size(1))
      fail("'", name, "' ", tensor.sizes(), " and '", token_type->first, "' ", token_type->second.sizes(),
           " are not the embeddings of one BERT");
    official_embeddings.emplace_back(name, tensor);
    official_embeddings.emplace_back(token_type->first, token_type->second);
    out.emplace_back(name, tensor + token_type->second[0]);
  }
  return out;
}

std::string online_twin(const std::string& name) {
  const size_t dot = name.find('.');
  if (dot == std::string::npos || dot < 2 || name.compare(dot - 2, 2, "_m") != 0) return "";
  return name.substr(0, dot - 2) + name.substr(dot);
}

}  // namespace albef
