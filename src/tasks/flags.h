#pragma once
// Command-line flags shared by the task commands and the other subcommands.

#include "albef/api/inference.h"
#include "albef/core/runtime.h"
#include "albef/train/trainer.h"

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>

namespace albef::tasks {

/// --threads / --precision / --device, as every compute command takes them.
struct ComputeFlags {
  int threads = 0;
  std::string precision = "fp32";
  std::string device = "cpu";
  void add_to(CLI::App& command);
  /// Copies the flags into any options struct with threads/precision/device.
  template <typename Options>
  void apply_to(Options& options) const {
    options.threads = threads;
    options.precision = parse_precision(precision);
    options.device = device;
    warn_if_bf16_is_emulated();
  }
  /// bf16 on a CPU without native bf16 matmuls (oneDNN's need AVX-512) runs
  /// many times slower than fp32: say so on stderr rather than just crawl.
  void warn_if_bf16_is_emulated() const;
};

/// --text_encoder, as the official scripts take it: `bert-base-uncased` (the
/// vocabulary bundled with albef), a folder holding vocab.txt, or a
/// vocabulary file; the config's `vocab:` key overrides it.
void add_text_encoder_flag(CLI::App& command, std::string& text_encoder);

/// --config / --checkpoint / --text_encoder / --batch-size plus the compute
/// flags, as the inference commands (embed, score, classify, ...) take them.
struct ModelFlags {
  std::string config;
  std::string checkpoint;
  std::string text_encoder;
  ComputeFlags compute;
  int64_t batch_size = 32;
  void add_to(CLI::App& command);
  InferenceOptions options() const;
};

/// --config, --output_dir, --checkpoint, --resume, --seed and the other
/// training flags, bound to `options`, plus the official scripts' flags that
/// mean nothing here (--world_size, --dist_url env://, --distributed), which
/// are accepted with a note; the compute flags are applied to `options` in
/// the command's callback.
struct TrainFlags {
  ComputeFlags compute;
  void add_to(CLI::App& command, TrainOptions& options, const std::string& config_help);
};

/// The command of a task that fine-tunes and, with --evaluate, only
/// evaluates (Retrieval.py, VQA.py, ...): TrainFlags plus --evaluate, bound
/// to an `Options` (a TrainOptions with `bool evaluate`) that starts with
/// `output_dir`. Returns what runs `run(options)` once the flags are parsed.
template <typename Options, typename Run>
std::function<void()> add_fine_tuning_flags(CLI::App& command, const std::string& output_dir,
                                            const std::string& config_help, const std::string& evaluate_help,
                                            Run run) {
  auto options = std::make_shared<Options>();
  options->output_dir = output_dir;
  auto flags = std::make_shared<TrainFlags>();
  flags->add_to(command, *options, config_help);
  command.add_flag("--evaluate", options->evaluate, evaluate_help);
  return [options, flags, run] {
    flags->compute.apply_to(*options);
    run(*options);
  };
}

}  // namespace albef::tasks
