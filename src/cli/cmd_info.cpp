// albef info: what a checkpoint is (layout, model, resolution, size, epoch,
// config, and how it matches each task's model), from its entries' names and
// shapes; no tensor data is read.

#include "cli/common.h"

#include "tasks/checkpoint_info.h"
#include "tasks/registry.h"

#include <cstdio>
#include <iostream>
#include <memory>

namespace albef::cli {
namespace {

struct InfoFlags {
  std::string checkpoint;
  bool as_json = false;
};

std::string with_commas(int64_t value) {
  std::string digits = std::to_string(value), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string first_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < 2; ++i) out += (i ? ", " : "") + names[i];
  return names.size() > 2 ? out + ", ..." : out;
}

void print_table(const tasks::CheckpointInfo& info) {
  auto row = [](const char* label, const std::string& value) { std::printf("%-13s %s\n", label, value.c_str()); };
  row("checkpoint", info.path);
  row("layout", info.layout == CheckpointLayout::Lavis ? "LAVIS (read in the official layout when loaded)" : "official");
  const tasks::Task* task = tasks::find_task(info.kind);
  std::string kind = info.kind;
  if (task && !task->official_script.empty()) kind += " (" + task->official_script + ")";
  if (!info.kind_note.empty()) kind += ": " + info.kind_note;
  row("model", kind);
  if (info.image_res > 0)
    row("image", std::to_string(info.image_res) + " px (patch " + std::to_string(info.patch_size) + "), ViT " +
                     std::to_string(info.vision_depth) + " blocks x " + std::to_string(info.vision_width));
  if (info.text_layers > 0)
    row("text", "BERT " + std::to_string(info.text_layers) + " layers x " + std::to_string(info.text_width) +
                    ", fusion from layer " + std::to_string(info.fusion_layer) +
                    (info.decoder_layers ? ", answer decoder " + std::to_string(info.decoder_layers) + " layers" : ""));
  std::string dtypes;
  for (const auto& [dtype, elements] : info.dtypes) dtypes += (dtypes.empty() ? "" : ", ") + dtype;
  row("parameters", with_commas(info.parameters) + " (" + dtypes + "), " + std::to_string(info.tensors) +
                        " tensors; buffers " + with_commas(info.buffer_elements) + " elements");
  row("epoch", info.epoch ? std::to_string(*info.epoch) : "not stored");
  std::string config = info.config.is_null() ? "not stored" : info.config.dump();
  if (config.size() > 100) config = config.substr(0, 96) + " ... (--json shows it all)";
  row("config", config);
  std::string others;
  for (const std::string& entry : info.other_entries) others += (others.empty() ? "" : ", ") + entry;
  row("other entries", others.empty() ? "none" : others);
  if (info.matches.empty()) return;
  std::printf("\n%-15s %8s %11s  %s\n", "against model", "missing", "unexpected", "first of them");
  for (const tasks::KindMatch& match : info.matches) {
    std::string detail = first_names(match.missing.empty() ? match.unexpected : match.missing);
    if (!match.momentum_from_online.empty())
      detail += (detail.empty() ? "" : "; ") + std::to_string(match.momentum_from_online.size()) +
                " momentum parameters absent, copied from the online ones when loaded";
    std::printf("%-15s %8zu %11zu  %s\n", match.kind.c_str(), match.missing.size(), match.unexpected.size(),
                detail.c_str());
  }
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto flags = std::make_shared<InfoFlags>();
  CLI::App* command = app.add_subcommand(
      "info", "What a checkpoint is: official or LAVIS layout, which model, resolution, size, epoch, config, and "
              "the entries each task's model would miss or not expect (reads no tensor data)");
  command->add_option("checkpoint", flags->checkpoint, "A .pth file")->required();
  command->add_flag("--json", flags->as_json, "Print JSON (with every missing and unexpected name)");
  command->callback([flags] {
    const tasks::CheckpointInfo info = tasks::inspect_checkpoint(flags->checkpoint);
    if (flags->as_json)
      std::cout << tasks::to_json(info).dump(2) << "\n";
    else
      print_table(info);
  });
}

}  // namespace albef::cli
