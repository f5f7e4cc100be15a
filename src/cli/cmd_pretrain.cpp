// albef pretrain: the official Pretrain.py, same flags.

#include "cli/common.h"

#include "albef/train/pretrain.h"

#include <memory>

namespace albef::cli {

void add_pretrain_command(CLI::App& app) {
  auto options = std::make_shared<TrainOptions>();
  options->output_dir = "Pretrain";  // Pretrain.py's default
  auto flags = std::make_shared<TrainFlags>();
  CLI::App* command = app.add_subcommand("pretrain", "Pretrain ALBEF (ITC + ITM + MLM with momentum distillation)");
  flags->add_to(*command, *options, "Pretraining config (configs/Pretrain.yaml)");
  command->callback([options, flags] {
    flags->compute.apply_to(*options);
    run_pretraining(*options);
  });
}

}  // namespace albef::cli
