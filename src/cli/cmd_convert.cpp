// albef convert: a checkpoint in the official layout or LAVIS's (see
// albef/model/checkpoint_layout.h), written atomically; every other
// top-level entry (optimizer, config, epoch) is kept.

#include "cli/common.h"

#include "albef/core/error.h"
#include "albef/model/checkpoint_layout.h"
#include "tasks/checkpoint_info.h"

#include <iostream>
#include <map>
#include <memory>

namespace albef::cli {
namespace {

struct ConvertFlags {
  std::string to;
  std::string input;
  std::string output;
};

// The official layout of a LAVIS checkpoint, with the momentum parameters
// LAVIS did not save copied from their online twins (as albef's loader does;
// the official scripts would keep their fresh copies).
io::StateDict official_state(const io::StateDict& state, const io::PyObjectPtr& root, const std::string& input) {
  io::StateDict official = to_official_layout(state, root);
  if (detect_layout(state, root) != CheckpointLayout::Lavis) return official;
  const tasks::CheckpointInfo info = tasks::inspect_checkpoint(input);
  if (info.matches.empty()) return official;
  std::map<std::string, at::Tensor> by_name(official.begin(), official.end());
  for (const std::string& name : info.matches.front().momentum_from_online)
    official.emplace_back(name, by_name.at(online_twin(name)));
  if (!info.matches.front().momentum_from_online.empty())
    std::cerr << "albef: note: " << info.matches.front().momentum_from_online.size()
              << " momentum parameters were not in the LAVIS checkpoint (LAVIS saves trainable parameters only); "
                 "they start as copies of the online ones\n";
  return official;
}

void run_convert(const ConvertFlags& flags) {
  const io::PyObjectPtr root = io::read_torch_file(flags.input);
  const io::StateDict state = io::state_dict_from(root, flags.input);
  const io::StateDict official = official_state(state, root, flags.input);

  auto out = io::PyObject::new_dict();
  io::StateDict official_embeddings;
  out->set("model", io::state_dict_to_object(flags.to == "lavis" ? to_lavis_layout(official, official_embeddings)
                                                                  : official));
  if (!official_embeddings.empty())
    out->set(kOfficialEmbeddingsEntry, io::state_dict_to_object(official_embeddings));
  const bool wrapped = root->get("model") || root->get("state_dict");
  if (wrapped)
    for (const auto& [key, value] : root->entries)
      if (key->kind == io::PyObject::Kind::String && key->text != "model" && key->text != "state_dict" &&
          key->text != kOfficialEmbeddingsEntry)
        out->set(key->text, value);
  io::write_torch_file(flags.output, out);
  std::cout << "wrote " << flags.output << ": " << layout_name(detect_layout(state, root)) << " -> " << flags.to
            << " layout, " << official.size() << " tensors"
            << (official_embeddings.empty()
                    ? ""
                    : ", " + std::to_string(official_embeddings.size() / 2) +
                          " BERT token-type embeddings folded into the position embeddings (the official tensors "
                          "kept in '" + kOfficialEmbeddingsEntry + "' for the way back)")
            << "\n";
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto flags = std::make_shared<ConvertFlags>();
  CLI::App* command = app.add_subcommand(
      "convert", "Write a checkpoint in the official ALBEF layout or LAVIS's (either one read), atomically");
  command->add_option("--to", flags->to, "official or lavis")->required()->check(CLI::IsMember({"official", "lavis"}));
  command->add_option("input", flags->input, "The checkpoint to read")->required();
  command->add_option("output", flags->output, "Where to write it")->required();
  command->callback([flags] { run_convert(*flags); });
}

}  // namespace albef::cli
