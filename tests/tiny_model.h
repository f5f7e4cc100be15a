#pragma once
// The tiny official fixture model (tests/data/tiny), loaded as a test needs it.

#include "albef/model/albef.h"
#include "albef/tasks/pretrain.h"
#include "albef/tasks/retrieval.h"

#include <functional>
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

/// The model's state_dict equals a fixture's `state_after_load_manifest`
/// (ordered {name: {shape, sum, abs_sum}}): same names in the same order,
/// shapes, and sums to 1e-4 relative. Entries `skip` accepts are only
/// checked for name and shape.
void expect_state_manifest(AlbefModel& model, const std::string& manifest_path,
                           const std::function<bool(const std::string&)>& skip = {});

/// The model's state_dict names and shapes, in order, equal the official
/// full-size list at `keys_json` ([[name, shape, dtype], ...]).
void expect_official_keys(AlbefModel& model, const std::string& keys_json);

}  // namespace albef::testing
