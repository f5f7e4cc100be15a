#include "pickle_globals.h"

#include "albef/core/error.h"
#include "unpickler.h"

namespace albef::io {
namespace {

struct StorageClass {
  const char* name;
  at::ScalarType dtype;
};

constexpr StorageClass kStorageClasses[] = {
    {"FloatStorage", at::kFloat}, {"DoubleStorage", at::kDouble},     {"HalfStorage", at::kHalf},
    {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong},   {"IntStorage", at::kInt},
    {"ShortStorage", at::kShort}, {"CharStorage", at::kChar},         {"ByteStorage", at::kByte},
    {"BoolStorage", at::kBool},
};

struct AllowedGlobal {
  const char* module;
  const char* name;
  Callable callable;
};

constexpr AllowedGlobal kAllowedGlobals[] = {
    {"collections", "OrderedDict", Callable::kOrderedDict},
    {"torch._utils", "_rebuild_tensor_v2", Callable::kRebuildTensorV2},
    {"torch._utils", "_rebuild_tensor", Callable::kRebuildTensor},
    {"torch._utils", "_rebuild_parameter", Callable::kRebuildParameter},
    {"torch._utils", "_rebuild_parameter_with_state", Callable::kRebuildParameterWithState},
    {"builtins", "set", Callable::kSet},
    {"builtins", "frozenset", Callable::kSet},
    {"builtins", "bytes", Callable::kBytes},
    // Python 3 writes the Python 2 module name in protocol 2 pickles.
    {"__builtin__", "set", Callable::kSet},
    {"__builtin__", "frozenset", Callable::kSet},
    {"__builtin__", "bytes", Callable::kBytes},
    {"_codecs", "encode", Callable::kCodecsEncode},
    {"torch", "device", Callable::kDevice},
};

}  // namespace

std::optional<Global> find_global(std::string_view module, std::string_view name,
                                  const ObjectClasses& object_classes) {
  const std::string full = str_cat(module, ".", name);
  for (const auto& allowed : kAllowedGlobals)
    if (module == allowed.module && name == allowed.name) return Global{allowed.callable, at::kFloat, full};
  for (const std::string& cls : object_classes)
    if (full == cls) return Global{Callable::kObjectClass, at::kFloat, full};
  // Older files name CUDA storages torch.cuda.XStorage; the location is ignored anyway.
  if (module == "torch" || module == "torch.cuda")
    for (const auto& cls : kStorageClasses)
      if (name == cls.name) return Global{Callable::kStorageClass, cls.dtype, full};
  return std::nullopt;
}

const char* storage_class_name(at::ScalarType dtype) {
  for (const auto& cls : kStorageClasses)
    if (cls.dtype == dtype) return cls.name;
  return nullptr;
}

}  // namespace albef::io
