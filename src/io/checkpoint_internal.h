#pragma once
/// @file checkpoint_internal.h
/// @brief Checkpoint-reading helpers shared by checkpoint_reader.cpp and lazy_checkpoint.cpp (internal to src/io).

#include "albef/core/error.h"
#include "albef/io/pyobject.h"

#include <c10/core/Allocator.h>
#include <c10/core/Storage.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <functional>
#include <new>
#include <string>
#include <vector>

namespace caffe2::serialize {
class PyTorchStreamReader;
}  // namespace caffe2::serialize

namespace albef::io::detail {

/// Whether `path` is a zip archive (else a legacy stream); an empty or
/// unreadable file is an error.
bool is_zip(const std::string& path);

// Zip format: archive/data.pkl references archive/data/<key> records.
// `make_storage` decides what a referenced storage holds: the record's data
// (eager) or nothing yet (lazy).
using ZipStorageMaker = std::function<c10::Storage(const std::string& record, size_t nbytes)>;

/// Unpickles the object pickle of a zip-format checkpoint; objects of
/// `object_classes` are read as data (see unpickler.h).
PyObjectPtr read_zip_pickle(caffe2::serialize::PyTorchStreamReader& reader, const std::string& path,
                            const ZipStorageMaker& make_storage, const std::vector<std::string>& object_classes = {});

/// The data of zip record `record`, which must hold `expected` bytes.
at::DataPtr read_record(caffe2::serialize::PyTorchStreamReader& reader, const std::string& path,
                        const std::string& record, size_t expected);

/// Reads a whole legacy-format (non-zip) checkpoint.
PyObjectPtr read_legacy(const std::string& path, const std::vector<std::string>& object_classes = {});

/// read_torch_file (either format) with the objects of `object_classes` read
/// as data: a whole pickled nn.Module (module_pickle.h).
PyObjectPtr read_torch_file_with_objects(const std::string& path, const std::vector<std::string>& object_classes);

/// Runs `read`, turning LibTorch's and the allocator's failures into errors naming `path`.
template <typename Fn>
auto reading(const std::string& path, Fn&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const c10::Error& error) {
    // Keep LibTorch's first sentence, without its "please report" boilerplate.
    std::string reason = error.what_without_backtrace();
    const size_t boilerplate = reason.find("  (Could this error message be improved?");
    if (boilerplate != std::string::npos) reason.resize(boilerplate);
    fail(path, ": cannot read checkpoint (", reason, ")");
  } catch (const std::bad_alloc&) {
    fail(path, ": out of memory reading the checkpoint (corrupt sizes?)");
  }
}

}  // namespace albef::io::detail
