#pragma once
// Options and helpers shared by the albef subcommands.

#include "albef/core/runtime.h"
#include "albef/api/inference.h"
#include "tasks/flags.h"

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace albef::cli {

using tasks::ComputeFlags;
using tasks::TrainFlags;

/// --config / --checkpoint plus the compute flags, turned into InferenceOptions.
struct ModelFlags {
  std::string config;
  std::string checkpoint;
  ComputeFlags compute;
  int64_t batch_size = 32;
  void add_to(CLI::App& command);
  InferenceOptions options() const;
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
void add_index_command(CLI::App& app);
void add_search_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_launch_command(CLI::App& app);

}  // namespace albef::cli
