#pragma once
// The globals a checkpoint pickle may name, and what each does when called:
// plain containers, the tensor and parameter rebuilders, typed storages,
// torch.device, and the object classes a caller lists (a whole pickled
// nn.Module). Every other global is refused by name (nothing named in a file
// is ever imported or called). Internal to src/io.

#include <ATen/core/ScalarType.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace albef::io {

/// What an allowed global does when the pickle calls it.
enum class Callable {
  kOrderedDict,
  kRebuildTensorV2,
  kRebuildTensor,
  kRebuildParameter,
  kRebuildParameterWithState,
  kStorageClass,  // only ever named inside a storage reference
  kSet,           // set and frozenset, both loaded as a list
  kBytes,         // bytes() -> b'' (protocol 2)
  kCodecsEncode,  // _codecs.encode(str, 'latin1'): bytes in protocol 2
  kDevice,        // torch.device('cuda', 0) -> "cuda:0"
  kObjectClass,   // a listed class: NEWOBJ + BUILD make its __dict__ (see unpickler.h)
};

struct Global {
  Callable callable;
  at::ScalarType dtype;  // kStorageClass only
  std::string name;      // "module.name", for messages
};

/// Classes ("module.name") whose objects a pickle may hold, read as data.
using ObjectClasses = std::vector<std::string>;

/// The allowed global `module.name` (`object_classes` included), or nullopt.
std::optional<Global> find_global(std::string_view module, std::string_view name,
                                  const ObjectClasses& object_classes = {});

}  // namespace albef::io
