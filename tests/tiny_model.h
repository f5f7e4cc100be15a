#pragma once
// The tiny official fixture model (tests/data/tiny), loaded as a test needs it.

#include "albef/model/albef.h"
#include "albef/tasks/pretrain.h"
#include "albef/tasks/retrieval.h"

#include <string>

namespace albef::testing {

/// The tiny config with the official tiny checkpoint (or `checkpoint`)
/// loaded into a model of the given kind; eval mode.
AlbefModel load_tiny_model(const ModelOptions& options, const std::string& checkpoint = "");

/// The model's tensor of that state_dict name (a test failure when absent).
at::Tensor state_tensor(AlbefModel& model, const std::string& name);

/// max|actual - expected| <= rtol * max|expected| + 1e-6: a tolerance
/// relative to the tensor's scale, for gradients.
void expect_relative(const at::Tensor& actual, const at::Tensor& expected, double rtol, const std::string& what);

}  // namespace albef::testing
