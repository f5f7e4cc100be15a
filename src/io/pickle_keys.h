#pragma once
// Dict keys as Python compares and hashes them (1, 1.0 and True are one key;
// tensors are keys by identity), so that a pickled dict loads with Python's
// key semantics. Internal to src/io.

#include "albef/io/pyobject.h"

#include <cstddef>
#include <optional>

namespace albef::io {

/// Whether two dict keys are the same key.
bool keys_equal(const PyObjectPtr& a, const PyObjectPtr& b);

/// A hash consistent with keys_equal, or nullopt for a key Python cannot
/// hash (a list, a dict, or a tuple holding one).
std::optional<size_t> key_hash(const PyObject& key);

}  // namespace albef::io
