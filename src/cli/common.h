#pragma once
// Options and helpers shared by the albef subcommands.

#include "albef/core/runtime.h"
#include "albef/api/inference.h"
#include "albef/data/annotations.h"
#include "tasks/flags.h"

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace albef::cli {

using tasks::ComputeFlags;
using tasks::TrainFlags;

using tasks::ModelFlags;
using data::image_paths_from;
using data::read_lines;

void add_embed_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_tokenize_image_command(CLI::App& app);
void add_score_command(CLI::App& app);
void add_index_command(CLI::App& app);
void add_search_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_launch_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_serve_command(CLI::App& app);

}  // namespace albef::cli
