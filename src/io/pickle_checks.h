#pragma once
// Checks of what a pickle describes before the unpickler trusts it: a
// tensor's view of its storage, and the shape of the object graph. Internal
// to src/io.

#include "albef/io/pyobject.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

namespace albef::io {

/// Deeper data could overflow the stack of any recursive consumer (including
/// the shared_ptr destructors); torch.save itself cannot write anything close.
constexpr size_t kMaxPickleDepth = 1000;

/// Why a view (offset, sizes, strides, in elements) does not fit in a storage
/// of `storage_numel` elements, or nullptr when it does. Overflow-safe.
const char* tensor_view_error(int64_t offset, int64_t storage_numel, const std::vector<int64_t>& sizes,
                              const std::vector<int64_t>& strides);

/// Every object reachable from `root`, after checking that none contains
/// itself and that nothing is nested deeper than kMaxPickleDepth (albef::Error
/// naming `source` otherwise). Iterative: hostile depth cannot overflow it.
std::unordered_set<const PyObject*> checked_graph(const PyObjectPtr& root, const std::string& source);

}  // namespace albef::io
