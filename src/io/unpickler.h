#pragma once
/// @file unpickler.h
/// @brief A restricted pickle reader for the object pickles `torch.save` writes.
///
/// Internal to src/io. It understands the opcodes of protocols 2-5 that plain
/// data and tensors need, resolves globals against a fixed allow-list (plain
/// containers, tensor and parameter rebuilders, typed storages) plus the
/// object classes a caller names, and refuses any other global by name. Nothing named in the data is ever called; every
/// count read from the data is checked against the bytes that remain, so
/// malformed input ends in albef::Error, never in a crash or a huge allocation.

#include "albef/io/pyobject.h"
#include "pickle_globals.h"

#include <c10/core/ScalarType.h>
#include <c10/core/Storage.h>

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace albef::io {

/// A storage reference as pickled by `torch.save`: the persistent id
/// `('storage', <torch.XStorage>, key, location, numel[, view_metadata])`.
struct StorageRef {
  std::string key;         ///< record name (zip) or storage key (legacy)
  at::ScalarType dtype;    ///< from the typed storage class
  int64_t numel = 0;       ///< elements of `dtype` the storage holds
  std::string location;    ///< e.g. "cpu", "cuda:0" (everything loads to CPU)
};

/// Supplies the storage a reference names. Called for every reference; it
/// must return the same storage for the same key so shared tensors stay
/// shared, holding at least `numel` elements of `dtype`.
using StorageLoader = std::function<c10::Storage(const StorageRef&)>;

/// The typed storage class `torch.<name>` that stands for `dtype` in a
/// pickle ("FloatStorage", ...), or nullptr for a dtype checkpoints here lack.
const char* storage_class_name(at::ScalarType dtype);

/// Unpickles the pickle that starts at `data[pos]` and sets `pos` just past
/// its STOP opcode. `source` names the file in error messages.
///
/// An object of a class in `object_classes` (a pickled nn.Module and its
/// submodules) is read as data, never constructed: a dict holding its
/// pickled `__dict__` plus the entry "__class__" -> "module.name" (NEWOBJ
/// makes the dict, BUILD adds the state). Calling such a class otherwise is
/// refused.
PyObjectPtr unpickle(std::string_view data, size_t& pos, const std::string& source,
                     const StorageLoader& load_storage, const ObjectClasses& object_classes = {});

}  // namespace albef::io
