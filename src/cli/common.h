#pragma once
// Options and helpers shared by the albef subcommands.

#include "albef/core/runtime.h"
#include "albef/tasks/inference.h"
#include "albef/train/trainer.h"

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace albef::cli {

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

/// --config / --checkpoint plus the compute flags, turned into InferenceOptions.
struct ModelFlags {
  std::string config;
  std::string checkpoint;
  ComputeFlags compute;
  int64_t batch_size = 32;
  void add_to(CLI::App& command);
  InferenceOptions options() const;
};

/// --config, --output_dir, --checkpoint, --resume, --seed and the other
/// training flags, bound to `options`. Returns the ComputeFlags to apply in
/// the callback.
struct TrainFlags {
  ComputeFlags compute;
  void add_to(CLI::App& command, TrainOptions& options, const std::string& config_help);
};

/// Lines of a text file (one item per line; blank lines skipped). Errors name the file.
std::vector<std::string> read_lines(const std::string& path);

/// Image paths from a list file (relative entries resolved against the list's
/// folder when they do not exist as given) or from a folder (its image files,
/// sorted by name).
std::vector<std::string> image_paths_from(const std::string& list_or_dir);

void add_embed_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_score_command(CLI::App& app);
void add_pretrain_command(CLI::App& app);
void add_retrieval_command(CLI::App& app);
void add_index_command(CLI::App& app);
void add_search_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_launch_command(CLI::App& app);

}  // namespace albef::cli
