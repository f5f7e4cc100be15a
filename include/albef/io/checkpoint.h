#pragma once
/// @file checkpoint.h
/// @brief Reading and writing PyTorch `.pth` files without Python, safely.
///
/// Reads both formats `torch.save` writes: the zip archive (PyTorch >= 1.6,
/// `archive/data.pkl` + `archive/data/<key>`) and the legacy stream
/// (`_use_new_zipfile_serialization=False`: magic number, protocol, sys info,
/// the object pickle, the storage keys, then the raw storages). The unpickler
/// rebuilds only plain containers, numbers, strings and tensors
/// (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, typed storages,
/// `collections.OrderedDict`); any other global is refused by name, and
/// nothing the file names is ever executed. Tensors that share a storage in
/// the file share it after loading (tied weights stay tied).
///
/// Writes the zip format that `torch.load` (PyTorch >= 1.6) reads, atomically
/// (a temporary file in the same folder, then rename).

#include "albef/io/pyobject.h"

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace albef::io {

/// Ordered name -> tensor map, in the order of the file or of `state_dict()`.
using StateDict = std::vector<std::pair<std::string, at::Tensor>>;

/// Reads a `.pth` file (zip or legacy format). Throws albef::Error naming the
/// file and the problem (missing, truncated, not a checkpoint, refused global).
PyObjectPtr read_torch_file(const std::string& path);

/// A checkpoint whose tensor data stays in the file until asked for.
///
/// Opening a zip-format file parses only the object pickle: every tensor is
/// there with its dtype, shape and strides, but its storage holds no data
/// until `fetch` reads that storage's record, and `release` frees it again.
/// Copying weights into a model this way needs the model's memory plus one
/// tensor, instead of a second copy of every weight; entries the model does
/// not use (momentum encoders, optimiser state) are never read. Legacy-format
/// files are one stream and are read whole; `fetch` and `release` then do
/// nothing.
class LazyCheckpoint {
 public:
  explicit LazyCheckpoint(const std::string& path);
  ~LazyCheckpoint();
  LazyCheckpoint(const LazyCheckpoint&) = delete;
  LazyCheckpoint& operator=(const LazyCheckpoint&) = delete;

  /// The unpickled object; its tensors may be hollow until fetched.
  const PyObjectPtr& root() const;
  const std::string& path() const;
  /// Makes the data of `tensor`'s storage present, reading its record once.
  void fetch(const at::Tensor& tensor);
  /// Frees the data of `tensor`'s storage (and of every tensor sharing it)
  /// until the next `fetch`.
  void release(const at::Tensor& tensor);
  /// Reads hollow `tensor`'s bytes from the file straight into `destination`
  /// (same dtype and shape, both contiguous, the tensor spanning its whole
  /// record, stored uncompressed as torch.save writes it), checking the
  /// record's CRC-32, with no buffer in between. Returns false, having read
  /// nothing, when any of that does not hold: then `fetch` and copy instead.
  bool read_into(const at::Tensor& tensor, at::Tensor& destination);
  /// Reads hollow `tensor` (at least 1-D, contiguous, spanning its whole
  /// record, stored uncompressed) `rows_per_block` rows of its first
  /// dimension at a time, handing each block to `take(block, first_row)`; the
  /// block's buffer is reused, so `take` copies what it keeps. A tensor
  /// converted as it is read (into a bf16 or int8 model) is then never whole
  /// in memory. The record's CRC-32 is checked once every block is read: a
  /// mismatch is an error, after `take` has seen the rows. Returns false,
  /// having read nothing, where the record cannot be read so: then `fetch`.
  bool read_in_rows(const at::Tensor& tensor, int64_t rows_per_block,
                    const std::function<void(const at::Tensor& block, int64_t first_row)>& take);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Writes `root` as a zip-format `.pth` file that `torch.load` reads back.
/// Tensors sharing storage are written once. Atomic: the target is replaced
/// only when the whole file is written.
void write_torch_file(const std::string& path, const PyObjectPtr& root);

/// The model weights inside a loaded checkpoint: the value of "model" or
/// "state_dict" when the root is such a wrapper, else the root dict itself.
/// A leading "module." (DistributedDataParallel) is removed from every key.
/// Non-tensor entries are an error naming `path` and the key.
StateDict state_dict_from(const PyObjectPtr& root, const std::string& path);

/// An OrderedDict of tensors, as `model.state_dict()` would be pickled.
PyObjectPtr state_dict_to_object(const StateDict& state);

}  // namespace albef::io
