#include "tasks/flags.h"

#include "albef/core/runtime.h"

#include "albef/core/error.h"

#include <cstdlib>
#include <iostream>

namespace albef::tasks {

void ComputeFlags::add_to(CLI::App& command) {
  command.add_option("--threads", threads, "Compute threads (0 = every core)")->check(CLI::NonNegativeNumber);
  command.add_option("--precision", precision,
                     "fp32, bf16 (autocast; LayerNorm and residuals stay fp32), or int8 (inference: the encoders' "
                     "linear layers in int8)")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  command.add_option("--device", device, "cpu or cuda[:N]");
}

void ComputeFlags::warn_if_bf16_is_emulated() const {
  if (precision == "bf16" && device == "cpu" && !dnnl_bf16_gemm_available())
    std::cerr << "albef: warning: this CPU has no native bf16 matmul (oneDNN's needs AVX-512), so --precision bf16 "
                 "runs many times slower than fp32 here\n";
}

void add_text_encoder_flag(CLI::App& command, std::string& text_encoder) {
  command.add_option("--text_encoder,--text-encoder", text_encoder,
                     "The vocabulary, as the official scripts' flag: bert-base-uncased (bundled, the default), a folder "
                     "holding vocab.txt, or a vocabulary file (the config's vocab: key overrides it)");
}

namespace {

void note(const std::string& text) { std::cerr << "albef: note: " << text << "\n"; }

// The official scripts' process-group flags. Under torch.distributed.launch
// their init_distributed_mode takes the world size from WORLD_SIZE and
// ignores --world_size and --distributed; so does albef (`albef launch` and
// torchrun set it). --dist_url is the rendezvous: env:// reads MASTER_ADDR
// and MASTER_PORT, tcp://HOST:PORT names them.
void add_official_launch_flags(CLI::App& command) {
  command.add_option_function<int>(
      "--world_size",
      [](const int&) {
        note("--world_size is ignored, as the official scripts ignore it under a launcher: the number of processes "
             "is WORLD_SIZE, which `albef launch --nproc N` (or torchrun) sets");
      },
      "Accepted for the official command lines (the process count comes from albef launch or torchrun)");
  command.add_option_function<std::string>(
      "--distributed",
      [](const std::string&) {
        note("--distributed is ignored, as in the official scripts: a run is data-parallel when started by "
             "`albef launch` or torchrun");
      },
      "Accepted for the official command lines (data-parallel comes from albef launch or torchrun)");
  command.add_option_function<std::string>(
      "--dist_url",
      [](const std::string& url) {
        if (url == "env://") return;
        const std::string scheme = "tcp://";
        const size_t colon = url.rfind(':');
        if (url.rfind(scheme, 0) != 0 || colon <= scheme.size() || colon + 1 == url.size())
          fail("--dist_url ", url, ": albef rendezvous is env:// (MASTER_ADDR and MASTER_PORT) or tcp://HOST:PORT");
        ::setenv("MASTER_ADDR", url.substr(scheme.size(), colon - scheme.size()).c_str(), 1);
        ::setenv("MASTER_PORT", url.substr(colon + 1).c_str(), 1);
      },
      "Rendezvous of a data-parallel run: env:// (MASTER_ADDR, MASTER_PORT; the default) or tcp://HOST:PORT");
}

}  // namespace

void TrainFlags::add_to(CLI::App& command, TrainOptions& options, const std::string& config_help) {
  command.add_option("--config", options.config_path, config_help)->required();
  command.add_option("--output_dir,--output-dir", options.output_dir, "Where checkpoints and logs go");
  command.add_option("--checkpoint", options.checkpoint, "Initial weights (pretrained or official checkpoint)");
  // Pretrain.py declares --resume with type=bool, so its command lines write
  // `--resume True`; argparse reads any word there, `False` too, as true.
  command
      .add_option_function<std::string>(
          "--resume",
          [&options](const std::string& value) {
            if (value == "False" || value == "false" || value == "0")
              fail("--resume ", value, ": the official scripts read this as True (argparse's type=bool); leave "
                   "--resume out to start afresh");
            options.resume = true;
          },
          "Continue exactly where the newest checkpoint in output_dir stopped (else start from --checkpoint); "
          "`--resume True` as the official scripts write it")
      ->expected(0, 1)
      ->default_str("True");
  command.add_flag("--overwrite", options.overwrite,
                   "Start over in an output_dir that holds an earlier run: its files move to output_dir/previous_run_N/ "
                   "(without it, such a run is refused)");
  command.add_option("--seed", options.seed, "Random seed");
  add_text_encoder_flag(command, options.text_encoder);
  add_official_launch_flags(command);
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
  add_text_encoder_flag(command, text_encoder);
  command.add_option("--batch-size", batch_size, "Images or texts per forward pass")->check(CLI::PositiveNumber);
  compute.add_to(command);
}

InferenceOptions ModelFlags::options() const {
  InferenceOptions options;
  options.config_path = config;
  options.checkpoint_path = checkpoint;
  options.text_encoder = text_encoder;
  compute.apply_to(options);
  options.batch_size = batch_size;
  return options;
}

}  // namespace albef::tasks
