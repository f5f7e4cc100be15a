#pragma once
// `albef grit-group`: GRIT-VLP's grouping of one epoch over saved features.

#include <CLI/CLI.hpp>

namespace albef {

/// Adds `albef grit-group` to `app` (a tool of the pretraining task).
void add_grit_group_command(CLI::App& app);

}  // namespace albef
