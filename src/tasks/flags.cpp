#include "tasks/flags.h"

#include "ops/linear.h"

#include <iostream>

namespace albef::tasks {

void ComputeFlags::add_to(CLI::App& command) {
  command.add_option("--threads", threads, "Compute threads (0 = every core)")->check(CLI::NonNegativeNumber);
  command.add_option("--precision", precision, "fp32, or bf16 (autocast; LayerNorm and residuals stay fp32)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  command.add_option("--device", device, "cpu or cuda[:N]");
}

void ComputeFlags::warn_if_bf16_is_emulated() const {
  if (precision == "bf16" && device == "cpu" && !ops::dnnl_bf16_gemm_available())
    std::cerr << "albef: warning: this CPU has no native bf16 matmul (oneDNN's needs AVX-512), so --precision bf16 "
                 "runs many times slower than fp32 here\n";
}

void TrainFlags::add_to(CLI::App& command, TrainOptions& options, const std::string& config_help) {
  command.add_option("--config", options.config_path, config_help)->required();
  command.add_option("--output_dir,--output-dir", options.output_dir, "Where checkpoints and logs go");
  command.add_option("--checkpoint", options.checkpoint, "Initial weights (pretrained or official checkpoint)");
  command.add_flag("--resume", options.resume,
                   "Continue exactly where the newest checkpoint in output_dir stopped (else start from --checkpoint)");
  command.add_flag("--overwrite", options.overwrite,
                   "Start over in an output_dir that holds an earlier run: its files move to output_dir/previous_run_N/ "
                   "(without it, such a run is refused)");
  command.add_option("--seed", options.seed, "Random seed");
  command.add_option("--save_every_steps,--save-every-steps", options.save_every_steps,
                     "Also checkpoint every N steps inside an epoch (0 = off)")
      ->check(CLI::NonNegativeNumber);
  command.add_option("--print_freq,--print-freq", options.print_freq, "Progress line every N steps (not on a terminal)")
      ->check(CLI::PositiveNumber);
  command.add_option("--workers", options.workers, "Data-loading threads (0 = one per core)")
      ->check(CLI::NonNegativeNumber);
  command.add_option("--epochs", options.epochs, "Stop after this many epochs (default: schedular.epochs)");
  command.add_option("--keep", options.keep_checkpoints, "Keep only the newest N epoch checkpoints (0 = all)")
      ->check(CLI::NonNegativeNumber);
  command
      .add_option_function<int64_t>(
          "--dist_timeout,--dist-timeout",
          [&options](const int64_t& seconds) { options.dist_timeout = std::chrono::seconds(seconds); },
          "Data-parallel runs: seconds a process waits for the others before giving up (default 300)")
      ->check(CLI::PositiveNumber);
  compute.add_to(command);
}

void ModelFlags::add_to(CLI::App& command) {
  command.add_option("--config", config, "Task config YAML (official keys)")->required();
  command.add_option("--checkpoint", checkpoint, "Model checkpoint (.pth, official or albef)")->required();
  command.add_option("--batch-size", batch_size, "Images or texts per forward pass")->check(CLI::PositiveNumber);
  compute.add_to(command);
}

InferenceOptions ModelFlags::options() const {
  InferenceOptions options;
  options.config_path = config;
  options.checkpoint_path = checkpoint;
  compute.apply_to(options);
  options.batch_size = batch_size;
  return options;
}

}  // namespace albef::tasks
