// Reading `.pth` files eagerly (zip and legacy formats): read_torch_file, state_dict_from and their helpers.
#include "albef/io/checkpoint.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "io/checkpoint_internal.h"
#include "io/zip_layout.h"
#include "unpickler.h"
#include "core/paths.h"

#include <c10/core/CPUAllocator.h>
#include <caffe2/serialize/inline_container.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>

namespace albef::io {
namespace {

using Kind = PyObject::Kind;

std::string read_prefix(const std::string& path, size_t n) {
  if (paths::is_folder(path)) fail(path, ": is a directory, not a checkpoint");
  std::ifstream in(path, std::ios::binary);
  if (!in && errno == ENOENT) fail_missing(path, ": cannot open (", std::strerror(errno), ")");
  if (!in) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::string prefix(n, '\0');
  in.read(&prefix[0], static_cast<std::streamsize>(n));
  prefix.resize(static_cast<size_t>(in.gcount()));
  return prefix;
}

// The legacy stream opens with a pickled 80-bit magic number. It is matched
// byte for byte (after PROTO and an optional FRAME): the unpickler keeps
// integers to 64 bits.
void skip_legacy_magic(std::string_view bytes, size_t& pos, const std::string& path) {
  static constexpr std::string_view kMagic("\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 13);
  pos = 2;
  if (bytes.size() > pos && bytes[pos] == '\x95') pos += 9;
  if (bytes.size() < pos + kMagic.size() || bytes[0] != '\x80' || bytes.substr(pos, kMagic.size()) != kMagic)
    fail(path, ": not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save stream)");
  pos += kMagic.size();
}

}  // namespace

namespace detail {

PyObjectPtr read_zip_pickle(caffe2::serialize::PyTorchStreamReader& reader, const std::string& path,
                            const ZipStorageMaker& make_storage, const std::vector<std::string>& object_classes) {
  if (!reader.hasRecord("data.pkl")) fail(path, ": zip archive without data.pkl (not a torch.save checkpoint)");
  // PyTorch >= 2.1 records the byte order of the storages.
  if (reader.hasRecord("byteorder")) {
    const auto [order, size] = reader.getRecord("byteorder");
    if (std::string_view(static_cast<const char*>(order.get()), size) != "little")
      fail(path, ": big-endian checkpoints are not supported");
  }
  at::DataPtr pickle;
  size_t pickle_size = 0;
  std::tie(pickle, pickle_size) = reader.getRecord("data.pkl");

  std::unordered_map<std::string, c10::Storage> storages;
  const StorageLoader load = [&](const StorageRef& ref) -> c10::Storage {
    const auto it = storages.find(ref.key);
    if (it != storages.end()) return it->second;
    const std::string record = "data/" + ref.key;
    if (!reader.hasRecord(record)) fail(path, ": storage record '", record, "' is missing");
    const size_t expected = static_cast<size_t>(ref.numel) * c10::elementSize(ref.dtype);
    return storages.emplace(ref.key, make_storage(record, expected)).first->second;
  };
  size_t pos = 0;
  return unpickle(std::string_view(static_cast<const char*>(pickle.get()), pickle_size), pos, path, load,
                  object_classes);
}

at::DataPtr read_record(caffe2::serialize::PyTorchStreamReader& reader, const std::string& path,
                        const std::string& record, size_t expected) {
  at::DataPtr data;
  size_t size = 0;
  std::tie(data, size) = reader.getRecord(record);
  if (size != expected) fail(path, ": storage record '", record, "' has ", size, " bytes, expected ", expected);
  return data;
}

// Legacy format: magic, protocol version, sys info, the object, the storage
// keys, then per key an int64 element count and the raw little-endian data.
PyObjectPtr read_legacy(const std::string& path, const std::vector<std::string>& object_classes) {
  const std::string file = read_file(path);
  const std::string_view bytes(file);
  size_t pos = 0;
  skip_legacy_magic(bytes, pos, path);
  const StorageLoader no_storages = [&](const StorageRef&) -> c10::Storage {
    fail(path, ": tensor outside the object pickle of a legacy checkpoint");
  };
  const PyObjectPtr protocol = unpickle(bytes, pos, path, no_storages);
  if (protocol->kind != Kind::Int || protocol->integer != 1001)
    fail(path, ": unsupported legacy checkpoint protocol (expected 1001)");
  const PyObjectPtr sys_info = unpickle(bytes, pos, path, no_storages);
  const PyObjectPtr little_endian = sys_info->get("little_endian");
  if (!little_endian || little_endian->kind != Kind::Bool) fail(path, ": invalid legacy checkpoint header");
  if (!little_endian->boolean) fail(path, ": big-endian checkpoints are not supported");

  struct Stored {
    c10::Storage storage;
    int64_t numel;
    bool filled;
  };
  std::unordered_map<std::string, Stored> storages;
  // Storages are allocated before their data is read; the data must follow
  // in the file, which bounds what a corrupt header can make us allocate.
  const size_t budget = bytes.size() - pos;
  size_t promised = 0;
  const StorageLoader load = [&](const StorageRef& ref) -> c10::Storage {
    const auto it = storages.find(ref.key);
    if (it != storages.end()) return it->second.storage;
    const size_t nbytes = static_cast<size_t>(ref.numel) * c10::elementSize(ref.dtype);
    if (nbytes > budget - promised)
      fail(path, ": storage '", ref.key, "' (", nbytes,
           " bytes) does not fit in the rest of the file (truncated or corrupt)");
    promised += nbytes;
    c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, c10::GetCPUAllocator(), false);
    storages.emplace(ref.key, Stored{storage, ref.numel, false});
    return storage;
  };
  PyObjectPtr root = unpickle(bytes, pos, path, load, object_classes);

  const PyObjectPtr keys = unpickle(bytes, pos, path, no_storages);
  if (keys->kind != Kind::List) fail(path, ": invalid storage key list");
  for (const PyObjectPtr& key : keys->items) {
    if (key->kind != Kind::String) fail(path, ": invalid storage key list");
    const auto it = storages.find(key->text);
    if (it == storages.end()) fail(path, ": storage '", key->text, "' is not used by any tensor");
    Stored& stored = it->second;
    if (stored.filled) fail(path, ": storage '", key->text, "' is listed twice");
    if (bytes.size() - pos < 8) fail(path, ": truncated data of storage '", key->text, "'");
    uint64_t count = 0;
    for (size_t i = 0; i < 8; ++i) count |= uint64_t{static_cast<uint8_t>(bytes[pos + i])} << (8 * i);
    pos += 8;
    if (count != static_cast<uint64_t>(stored.numel))
      fail(path, ": storage '", key->text, "' holds ", count, " elements, expected ", stored.numel);
    const size_t nbytes = stored.storage.nbytes();
    if (bytes.size() - pos < nbytes) fail(path, ": truncated data of storage '", key->text, "'");
    // data_ptr(), not data(): LibTorch 2 returns a const pointer from data().
    if (nbytes > 0) std::memcpy(stored.storage.data_ptr().get(), bytes.data() + pos, nbytes);
    pos += nbytes;
    stored.filled = true;
  }
  for (const auto& [key, stored] : storages)
    if (!stored.filled) fail(path, ": storage '", key, "' has no data");
  return root;
}

bool is_zip(const std::string& path) {
  const std::string prefix = read_prefix(path, 4);
  if (prefix.empty()) fail(path, ": empty file, not a PyTorch checkpoint");
  return prefix == std::string_view("PK\x03\x04", 4);
}

}  // namespace detail

namespace {

PyObjectPtr read_zip(const std::string& path, const std::vector<std::string>& object_classes) {
  detail::check_zip_layout(path);
  caffe2::serialize::PyTorchStreamReader reader(path);
  return detail::read_zip_pickle(
      reader, path,
      [&](const std::string& record, size_t nbytes) {
        // The record's buffer becomes the storage: no copy, shared by every tensor using the key.
        return c10::Storage(c10::Storage::use_byte_size_t(), nbytes,
                            detail::read_record(reader, path, record, nbytes), nullptr, false);
      },
      object_classes);
}

}  // namespace

PyObjectPtr detail::read_torch_file_with_objects(const std::string& path,
                                                 const std::vector<std::string>& object_classes) {
  return detail::reading(path, [&] {
    return detail::is_zip(path) ? read_zip(path, object_classes) : detail::read_legacy(path, object_classes);
  });
}

PyObjectPtr read_torch_file(const std::string& path) { return detail::read_torch_file_with_objects(path, {}); }

StateDict state_dict_from(const PyObjectPtr& root, const std::string& path) {
  if (!root || !root->is_dict())
    fail(path, ": expected a dict of weights, found ", root ? root->kind_name() : "nothing");
  PyObjectPtr weights = root;
  for (const char* wrapper : {"model", "state_dict"}) {
    const PyObjectPtr inner = root->get(wrapper);
    if (inner && inner->is_dict()) {
      weights = inner;
      break;
    }
  }
  StateDict state;
  state.reserve(weights->entries.size());
  for (const auto& [key, value] : weights->entries) {
    if (key->kind != Kind::String) fail(path, ": weight name of type ", key->kind_name(), " (expected str)");
    if (value->kind != Kind::Tensor)
      fail(path, ": entry '", key->text, "' is a ", value->kind_name(), ", not a tensor");
    const bool wrapped = key->text.rfind("module.", 0) == 0;  // DistributedDataParallel prefix
    state.emplace_back(wrapped ? key->text.substr(7) : key->text, value->tensor);
  }
  return state;
}

}  // namespace albef::io
