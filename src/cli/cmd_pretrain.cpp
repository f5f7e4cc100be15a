// albef pretrain: the official Pretrain.py, same flags.

#include "cli/common.h"

#include "albef/train/pretrain.h"

#include <memory>

namespace albef::cli {

void add_pretrain_command(CLI::App& app) {
  auto options = std::make_shared<PretrainOptions>();
  auto compute = std::make_shared<ComputeFlags>();
  CLI::App* command = app.add_subcommand("pretrain", "Pretrain ALBEF (ITC + ITM + MLM with momentum distillation)");
  command->add_option("--config", options->config_path, "Pretraining config (configs/Pretrain.yaml)")->required();
  command->add_option("--output_dir,--output-dir", options->output_dir, "Where checkpoints and logs go");
  command->add_option("--checkpoint", options->checkpoint,
                      "Initial weights; with --resume, the checkpoint to resume (default: the newest in output_dir)");
  command->add_flag("--resume", options->resume, "Continue an interrupted run exactly where it stopped");
  command->add_option("--seed", options->seed, "Random seed");
  command->add_option("--save_every_steps,--save-every-steps", options->save_every_steps,
                      "Also checkpoint every N steps inside an epoch (0 = off)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--print_freq,--print-freq", options->print_freq, "Progress line every N steps (not on a terminal)")
      ->check(CLI::PositiveNumber);
  command->add_option("--workers", options->workers, "Data-loading threads (0 = one per core)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--epochs", options->epochs, "Stop after this many epochs (default: schedular.epochs)");
  command->add_option("--keep", options->keep_checkpoints, "Keep only the newest N epoch checkpoints (0 = all)")
      ->check(CLI::NonNegativeNumber);
  compute->add_to(*command);
  command->callback([options, compute] {
    compute->apply_to(*options);
    run_pretraining(*options);
  });
}

}  // namespace albef::cli
