#pragma once
// `albef gradcam`: Grad-CAM heat maps of any image and text, per sentence and
// per word piece, as PNGs, .npy and an HTML page.

#include <CLI/CLI.hpp>

namespace albef::grounding {

/// Adds the `gradcam` command to `app` (the grounding unit's tool).
void add_gradcam_command(CLI::App& app);

}  // namespace albef::grounding
