#pragma once
// The tiny official fixture model (tests/data/tiny), loaded as a test needs it.

#include "albef/model/albef.h"

#include <string>

namespace albef::testing {

/// The tiny config with the official tiny checkpoint (or `checkpoint`)
/// loaded into a model of the given kind; eval mode.
AlbefModel load_tiny_model(ModelKind kind, bool momentum_encoders, const std::string& checkpoint = "");

}  // namespace albef::testing
