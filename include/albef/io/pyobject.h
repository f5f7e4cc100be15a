#pragma once
/// @file pyobject.h
/// @brief The plain-data tree a PyTorch checkpoint holds, as C++ values.
///
/// A checkpoint written by `torch.save` is a pickle of dicts, lists, tuples,
/// numbers, strings and tensors. `PyObject` is that tree and nothing more:
/// the reader never builds any other Python object, and the writer emits only
/// these kinds (dicts may be marked as `collections.OrderedDict`, as
/// `state_dict()` returns).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace albef::io {

struct PyObject;
using PyObjectPtr = std::shared_ptr<PyObject>;

/// One node of a checkpoint's object tree.
struct PyObject {
  enum class Kind { None, Bool, Int, Float, String, Bytes, List, Tuple, Dict, Tensor };

  Kind kind = Kind::None;
  bool boolean = false;                                     ///< Kind::Bool
  int64_t integer = 0;                                      ///< Kind::Int
  double real = 0.0;                                        ///< Kind::Float
  std::string text;                                         ///< Kind::String (UTF-8) and Kind::Bytes
  std::vector<PyObjectPtr> items;                           ///< Kind::List and Kind::Tuple
  std::vector<std::pair<PyObjectPtr, PyObjectPtr>> entries; ///< Kind::Dict, in insertion order
  bool ordered_dict = false;  ///< Kind::Dict: was / is written as collections.OrderedDict
  bool parameter = false;     ///< Kind::Tensor: was an nn.Parameter in the file
  at::Tensor tensor;          ///< Kind::Tensor

  static PyObjectPtr none();
  static PyObjectPtr from_bool(bool value);
  static PyObjectPtr from_int(int64_t value);
  static PyObjectPtr from_float(double value);
  static PyObjectPtr from_string(std::string value);
  static PyObjectPtr from_tensor(at::Tensor value);
  static PyObjectPtr new_list(std::vector<PyObjectPtr> items = {});
  static PyObjectPtr new_tuple(std::vector<PyObjectPtr> items = {});
  static PyObjectPtr new_dict(bool ordered = false);

  /// Dict lookup by string key; nullptr when absent or when this is no dict.
  PyObjectPtr get(const std::string& key) const;
  /// Appends (or replaces) a string-keyed dict entry.
  void set(const std::string& key, PyObjectPtr value);

  bool is_dict() const { return kind == Kind::Dict; }
  /// Short human-readable kind name ("dict", "tensor", ...) for error messages.
  const char* kind_name() const;
};

/// Reads a plain-data pickle file of any protocol (0-5), such as REFER's
/// `refs(unc).p` that Python 2 wrote: dicts, lists, tuples, numbers and
/// strings (Python 2 str as text). Nothing named in it is ever called; a
/// global outside the plain containers, or a tensor, is an error naming the
/// file.
PyObjectPtr read_pickle_file(const std::string& path);

}  // namespace albef::io
