#pragma once
// Comparing two checkpoint object trees in tests.

#include "albef/io/pyobject.h"

#include <string>

namespace albef::testing {

/// How strictly tensors are compared.
struct TensorMatch {
  double atol = 0.0;          ///< 0: bit-equal values
  bool exact_layout = false;  ///< also strides, storage offset and the nn.Parameter flag
};

/// Same tree: kinds (list vs tuple, int vs float), dict keys and their order
/// (and OrderedDict-ness), equal plain values, tensors of one dtype and shape
/// matching as `match` says. Failures name the path inside the tree.
void expect_same_object(const io::PyObjectPtr& expected, const io::PyObjectPtr& actual, const std::string& path,
                        const TensorMatch& match = {});

}  // namespace albef::testing
