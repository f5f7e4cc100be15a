#include "albef/io/checkpoint.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "unpickler.h"

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <caffe2/serialize/inline_container.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <unordered_map>

namespace albef::io {
namespace {

using Kind = PyObject::Kind;

// ---------------------------------------------------------------- reading --

std::string read_prefix(const std::string& path, size_t n) {
  if (std::filesystem::is_directory(path)) fail(path, ": is a directory, not a checkpoint");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::string prefix(n, '\0');
  in.read(&prefix[0], static_cast<std::streamsize>(n));
  prefix.resize(static_cast<size_t>(in.gcount()));
  return prefix;
}

// Zip format: archive/data.pkl references archive/data/<key> records.
// `on_storage` decides what a referenced storage holds: the record's data
// (eager) or nothing yet (lazy).
using ZipStorageMaker = std::function<c10::Storage(const std::string& record, size_t nbytes)>;

PyObjectPtr read_zip_pickle(caffe2::serialize::PyTorchStreamReader& reader, const std::string& path,
                            const ZipStorageMaker& make_storage) {
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
  return unpickle(std::string_view(static_cast<const char*>(pickle.get()), pickle_size), pos, path, load);
}

at::DataPtr read_record(caffe2::serialize::PyTorchStreamReader& reader, const std::string& path,
                        const std::string& record, size_t expected) {
  at::DataPtr data;
  size_t size = 0;
  std::tie(data, size) = reader.getRecord(record);
  if (size != expected) fail(path, ": storage record '", record, "' has ", size, " bytes, expected ", expected);
  return data;
}

PyObjectPtr read_zip(const std::string& path) {
  caffe2::serialize::PyTorchStreamReader reader(path);
  return read_zip_pickle(reader, path, [&](const std::string& record, size_t nbytes) {
    // The record's buffer becomes the storage: no copy, shared by every tensor using the key.
    return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, read_record(reader, path, record, nbytes), nullptr,
                        false);
  });
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

// Legacy format: magic, protocol version, sys info, the object, the storage
// keys, then per key an int64 element count and the raw little-endian data.
PyObjectPtr read_legacy(const std::string& path) {
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
  PyObjectPtr root = unpickle(bytes, pos, path, load);

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
    if (nbytes > 0) std::memcpy(stored.storage.data(), bytes.data() + pos, nbytes);
    pos += nbytes;
    stored.filled = true;
  }
  for (const auto& [key, stored] : storages)
    if (!stored.filled) fail(path, ": storage '", key, "' has no data");
  return root;
}

// ---------------------------------------------------------------- writing --

// Protocol 2 pickler for PyObject trees, emitting what Python's pickle emits
// for the same values (torch.save's default protocol).
class Pickler {
 public:
  struct Record {
    std::string key;
    c10::Storage storage;
  };

  explicit Pickler(const std::string& path) : path_(path) {}

  std::string dump(const PyObjectPtr& root) {
    out_ = "\x80\x02";  // PROTO 2
    save(root);
    out_ += '.';  // STOP
    return std::move(out_);
  }

  /// The storages the pickle references, one per shared storage.
  const std::vector<Record>& records() const { return records_; }

 private:
  void put_le(uint64_t value, size_t n) {
    for (size_t i = 0; i < n; ++i) out_ += static_cast<char>((value >> (8 * i)) & 0xff);
  }

  uint32_t memoize() {
    if (memo_size_ < 256) {
      out_ += 'q';  // BINPUT
      put_le(memo_size_, 1);
    } else {
      out_ += 'r';  // LONG_BINPUT
      put_le(memo_size_, 4);
    }
    return memo_size_++;
  }

  void get(uint32_t index) {
    if (index < 256) {
      out_ += 'h';  // BINGET
      put_le(index, 1);
    } else {
      out_ += 'j';  // LONG_BINGET
      put_le(index, 4);
    }
  }

  void save_global(const std::string& module, const std::string& name) {
    const std::string full = module + "\n" + name + "\n";
    const auto it = global_memo_.find(full);
    if (it != global_memo_.end()) return get(it->second);
    out_ += 'c';  // GLOBAL
    out_ += full;
    global_memo_.emplace(full, memoize());
  }

  void save_int(int64_t value) {
    if (value >= 0 && value <= 0xff) {
      out_ += 'K';  // BININT1
      put_le(static_cast<uint64_t>(value), 1);
    } else if (value >= 0 && value <= 0xffff) {
      out_ += 'M';  // BININT2
      put_le(static_cast<uint64_t>(value), 2);
    } else if (value >= INT32_MIN && value <= INT32_MAX) {
      out_ += 'J';  // BININT
      put_le(static_cast<uint64_t>(value), 4);
    } else {
      // LONG1: shortest little-endian two's complement.
      size_t n = 8;
      const auto bits = static_cast<uint64_t>(value);
      while (n > 1) {
        const auto last = static_cast<uint8_t>(bits >> (8 * (n - 1)));
        const bool next_negative = (bits >> (8 * (n - 1) - 1)) & 1;
        if ((last == 0x00 && !next_negative) || (last == 0xff && next_negative)) --n;
        else break;
      }
      out_ += '\x8a';
      put_le(n, 1);
      put_le(bits, n);
    }
  }

  void save_float(double value) {
    uint64_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    out_ += 'G';  // BINFLOAT, big-endian
    for (int i = 7; i >= 0; --i) out_ += static_cast<char>((bits >> (8 * i)) & 0xff);
  }

  void save_string(const std::string& text) {
    if (text.size() > UINT32_MAX) fail(path_, ": string too long for a protocol 2 pickle");
    out_ += 'X';  // BINUNICODE
    put_le(text.size(), 4);
    out_ += text;
  }

  // Protocol 2 has no bytes opcode: Python writes _codecs.encode(latin-1 text, 'latin1').
  void save_bytes(const std::string& bytes) {
    if (bytes.empty()) {
      save_global("__builtin__", "bytes");
      out_ += ")R";  // EMPTY_TUPLE, REDUCE
      return;
    }
    std::string text;
    for (char c : bytes) {
      const auto byte = static_cast<uint8_t>(c);
      if (byte < 0x80) {
        text += c;
      } else {
        text += static_cast<char>(0xc0 | (byte >> 6));
        text += static_cast<char>(0x80 | (byte & 0x3f));
      }
    }
    save_global("_codecs", "encode");
    save_string(text);
    save_string("latin1");
    out_ += "\x86R";  // TUPLE2, REDUCE
  }

  template <typename Items, typename SaveItem>
  void save_tuple_of(const Items& items, SaveItem save_item) {
    const size_t n = items.size();
    if (n == 0) {
      out_ += ')';  // EMPTY_TUPLE
      return;
    }
    if (n > 3) out_ += '(';  // MARK
    for (const auto& item : items) save_item(item);
    out_ += n > 3 ? 't' : static_cast<char>(0x84 + n);  // TUPLE or TUPLE1..3
  }

  void save_empty_ordered_dict() {
    save_global("collections", "OrderedDict");
    out_ += ")R";  // EMPTY_TUPLE, REDUCE
  }

  // Python batches appends and setitems by 1000, a batch of one as a single op.
  template <typename Items, typename SaveItem>
  void save_batches(const Items& items, SaveItem save_item, char single, char many) {
    constexpr size_t kBatch = 1000;
    for (size_t start = 0; start < items.size(); start += kBatch) {
      const size_t end = std::min(items.size(), start + kBatch);
      if (end - start > 1) out_ += '(';  // MARK
      for (size_t i = start; i < end; ++i) save_item(items[i]);
      out_ += end - start > 1 ? many : single;
    }
  }

  void save(const PyObjectPtr& object) {
    if (!object) fail(path_, ": cannot write a null object");
    const auto memo = memo_.find(object.get());
    if (memo != memo_.end()) return get(memo->second);
    switch (object->kind) {
      case Kind::None: out_ += 'N'; break;
      case Kind::Bool: out_ += object->boolean ? '\x88' : '\x89'; break;  // NEWTRUE / NEWFALSE
      case Kind::Int: save_int(object->integer); break;
      case Kind::Float: save_float(object->real); break;
      case Kind::String: save_string(object->text); break;
      case Kind::Bytes: save_bytes(object->text); break;
      case Kind::Tuple:
        save_tuple_of(object->items, [this](const PyObjectPtr& item) { save(item); });
        memo_.emplace(object.get(), memoize());
        break;
      case Kind::List:
        out_ += ']';  // EMPTY_LIST, memoized before its items as Python does
        memo_.emplace(object.get(), memoize());
        save_batches(object->items, [this](const PyObjectPtr& item) { save(item); }, 'a', 'e');
        break;
      case Kind::Dict:
        if (object->ordered_dict) {
          save_empty_ordered_dict();
        } else {
          out_ += '}';  // EMPTY_DICT
        }
        memo_.emplace(object.get(), memoize());
        save_batches(
            object->entries,
            [this](const auto& entry) {
              save(entry.first);
              save(entry.second);
            },
            's', 'u');
        break;
      case Kind::Tensor:
        save_tensor(*object);
        memo_.emplace(object.get(), memoize());
        break;
    }
  }

  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()),
  // wrapped in _rebuild_parameter(tensor, True, OrderedDict()) for parameters.
  void save_tensor(const PyObject& object) {
    at::Tensor tensor = object.tensor;
    if (!tensor.defined()) fail(path_, ": cannot write an undefined tensor");
    if (tensor.layout() != at::kStrided) fail(path_, ": cannot write a ", tensor.layout(), " tensor");
    if (!tensor.is_cpu()) tensor = tensor.cpu();
    const char* storage_class = storage_class_name(tensor.scalar_type());
    if (!storage_class) fail(path_, ": cannot write a tensor of dtype ", tensor.scalar_type());
    if (object.parameter) save_global("torch._utils", "_rebuild_parameter");
    save_global("torch._utils", "_rebuild_tensor_v2");
    out_ += '(';  // MARK
    save_storage_reference(tensor, storage_class);
    save_int(tensor.storage_offset());
    const auto save_ints = [this](int64_t value) { save_int(value); };
    save_tuple_of(tensor.sizes(), save_ints);
    save_tuple_of(tensor.strides(), save_ints);
    out_ += '\x89';  // requires_grad=False
    save_empty_ordered_dict();
    out_ += "tR";  // TUPLE, REDUCE
    if (object.parameter) {
      out_ += '\x88';  // requires_grad=True
      save_empty_ordered_dict();
      out_ += "\x87R";  // TUPLE3, REDUCE
    }
  }

  // BINPERSID ('storage', torch.XStorage, key, 'cpu', numel). Tensors sharing
  // memory share one key, so they stay tied after torch.load.
  void save_storage_reference(const at::Tensor& tensor, const char* storage_class) {
    const c10::Storage& storage = tensor.storage();
    const size_t element_size = tensor.element_size();
    if (storage.nbytes() % element_size != 0)
      fail(path_, ": tensor storage of ", storage.nbytes(), " bytes is not a whole number of ", tensor.scalar_type());
    // Empty storages have no data pointer; tell them apart by their impl.
    const void* address = storage.data() ? storage.data() : storage.unsafeGetStorageImpl();
    const auto id = std::make_pair(address, storage.nbytes());
    auto it = storage_keys_.find(id);
    if (it == storage_keys_.end()) {
      it = storage_keys_.emplace(id, StorageKey{std::to_string(records_.size()), tensor.scalar_type()}).first;
      records_.push_back(Record{it->second.key, storage});
    } else if (it->second.dtype != tensor.scalar_type()) {
      fail(path_, ": tensors sharing one storage have different dtypes (", it->second.dtype, " and ",
           tensor.scalar_type(), "), which torch.load cannot rebuild");
    }
    out_ += '(';  // MARK
    save_string("storage");
    save_global("torch", storage_class);
    save_string(it->second.key);
    save_string("cpu");
    save_int(static_cast<int64_t>(storage.nbytes() / element_size));
    out_ += "tQ";  // TUPLE, BINPERSID
  }

  struct StorageKey {
    std::string key;
    at::ScalarType dtype;
  };
  struct PairHash {
    size_t operator()(const std::pair<const void*, size_t>& id) const {
      return std::hash<const void*>()(id.first) ^ (std::hash<size_t>()(id.second) << 1);
    }
  };

  const std::string& path_;
  std::string out_;
  uint32_t memo_size_ = 0;
  std::unordered_map<const PyObject*, uint32_t> memo_;
  std::unordered_map<std::string, uint32_t> global_memo_;
  std::unordered_map<std::pair<const void*, size_t>, StorageKey, PairHash> storage_keys_;
  std::vector<Record> records_;
};

void write_archive(const std::string& path, const std::string& tmp, const std::string& pickle,
                   const std::vector<Pickler::Record>& records) {
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) fail(path, ": cannot open ", tmp, " for writing (", std::strerror(errno), ")");
  // Writing through a function names the archive folder "archive", as
  // torch.save does for file objects.
  caffe2::serialize::PyTorchStreamWriter writer([&out](const void* data, size_t size) -> size_t {
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    return out ? size : 0;
  });
  try {
    writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    for (const auto& record : records)
      writer.writeRecord("data/" + record.key, record.storage.data(), record.storage.nbytes());
    writer.writeEndOfFile();
  } catch (const c10::Error& error) {
    // Finalize here: the writer's destructor would finalize and could throw.
    if (!writer.finalized()) {
      try {
        writer.writeEndOfFile();
      } catch (const c10::Error&) {
      }
    }
    fail(path, ": write failed (", error.what_without_backtrace(), ")");
  }
  out.close();
  if (!out) fail(path, ": write failed (", std::strerror(errno), ")");
}

}  // namespace

namespace {

bool is_zip(const std::string& path) {
  const std::string prefix = read_prefix(path, 4);
  if (prefix.empty()) fail(path, ": empty file, not a PyTorch checkpoint");
  return prefix == std::string_view("PK\x03\x04", 4);
}

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

/// Reads `n` bytes at `offset`, or nothing when the file is shorter.
std::optional<std::string> read_at(std::ifstream& in, size_t offset, size_t n) {
  std::string bytes(n, '\0');
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(bytes.data(), static_cast<std::streamsize>(n));
  if (!in) return std::nullopt;
  return bytes;
}

uint64_t little_endian(std::string_view bytes, size_t at, int width) {
  uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) value = value << 8 | static_cast<unsigned char>(bytes[at + i]);
  return value;
}

/// The CRC-32 of the zip record whose data starts at `data_offset`, if it is
/// stored uncompressed with exactly `nbytes` bytes (as torch.save writes every
/// record). The local header ends right at the data (30 fixed bytes, the name,
/// then an extra field torch.save uses to align the data to 64 bytes), so a
/// short window before the data holds it. Files written by a stream put the
/// CRC and sizes in a descriptor after the data instead (flag bit 3).
std::optional<uint32_t> stored_record_crc(std::ifstream& in, size_t data_offset, size_t nbytes) {
  constexpr size_t kFixed = 30, kWindow = 4096;
  const size_t begin = data_offset > kWindow ? data_offset - kWindow : 0;
  const std::optional<std::string> window = read_at(in, begin, data_offset - begin);
  if (!window || window->size() < kFixed) return std::nullopt;
  for (size_t p = window->size() - kFixed + 1; p-- > 0;) {
    if (window->compare(p, 4, "PK\x03\x04") != 0 ||
        begin + p + kFixed + little_endian(*window, p + 26, 2) + little_endian(*window, p + 28, 2) != data_offset)
      continue;
    const uint64_t flags = little_endian(*window, p + 6, 2), method = little_endian(*window, p + 8, 2);
    if (method != 0) return std::nullopt;  // compressed
    if ((flags & 0x8) == 0) {
      if (little_endian(*window, p + 18, 4) != nbytes || little_endian(*window, p + 22, 4) != nbytes)
        return std::nullopt;
      return static_cast<uint32_t>(little_endian(*window, p + 14, 4));
    }
    // Data descriptor: [signature] CRC-32, then both sizes in 4 or (zip64) 8 bytes.
    const std::optional<std::string> after = read_at(in, data_offset + nbytes, 24);
    if (!after) return std::nullopt;
    const size_t crc_at = after->compare(0, 4, "PK\x07\x08") == 0 ? 4 : 0;
    for (const int width : {4, 8})
      if (little_endian(*after, crc_at + 4, width) == nbytes && little_endian(*after, crc_at + 4 + width, width) == nbytes)
        return static_cast<uint32_t>(little_endian(*after, crc_at, 4));
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

PyObjectPtr read_torch_file(const std::string& path) {
  return reading(path, [&] { return is_zip(path) ? read_zip(path) : read_legacy(path); });
}

struct LazyCheckpoint::Impl {
  std::string path;
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;  // zip files only
  struct Record {
    std::string name;
    size_t nbytes;
  };
  std::unordered_map<const c10::StorageImpl*, Record> records;  // hollow storages and where their data is
  PyObjectPtr root;
  std::ifstream file;  // for read_into, opened on first use
};

LazyCheckpoint::LazyCheckpoint(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  reading(path, [&] {
    if (!is_zip(path)) {
      impl_->root = read_legacy(path);
      return;
    }
    impl_->reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    impl_->root = read_zip_pickle(*impl_->reader, path, [&](const std::string& record, size_t nbytes) {
      // Sized but without data: tensors can be built on it, and fetch() fills it.
      c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, at::DataPtr(nullptr, at::Device(at::kCPU)),
                           nullptr, false);
      impl_->records.emplace(storage.unsafeGetStorageImpl(), Impl::Record{record, nbytes});
      return storage;
    });
  });
}

LazyCheckpoint::~LazyCheckpoint() = default;

const PyObjectPtr& LazyCheckpoint::root() const { return impl_->root; }
const std::string& LazyCheckpoint::path() const { return impl_->path; }

void LazyCheckpoint::fetch(const at::Tensor& tensor) {
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  const auto it = impl_->records.find(storage);
  if (it == impl_->records.end() || storage->data() != nullptr || it->second.nbytes == 0) return;
  storage->set_data_ptr_noswap(
      reading(impl_->path, [&] { return read_record(*impl_->reader, impl_->path, it->second.name, it->second.nbytes); }));
}

void LazyCheckpoint::release(const at::Tensor& tensor) {
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  if (impl_->records.count(storage)) storage->set_data_ptr_noswap(at::DataPtr(nullptr, at::Device(at::kCPU)));
}

bool LazyCheckpoint::read_into(const at::Tensor& tensor, at::Tensor& destination) {
  if (!impl_->reader) return false;
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  const auto it = impl_->records.find(storage);
  if (it == impl_->records.end() || storage->data() != nullptr) return false;
  const Impl::Record& record = it->second;
  if (!destination.device().is_cpu() || destination.scalar_type() != tensor.scalar_type() ||
      destination.sizes() != tensor.sizes() || !destination.is_contiguous() || !tensor.is_contiguous() ||
      tensor.storage_offset() != 0 || tensor.nbytes() != record.nbytes || record.nbytes == 0)
    return false;
  const std::string& path = impl_->path;
  const size_t offset = reading(path, [&] { return impl_->reader->getRecordOffset(record.name); });
  if (!impl_->file.is_open()) impl_->file.open(path, std::ios::binary);
  // Compressed records (which torch.save does not write) take the reader's path.
  const std::optional<uint32_t> expected_crc = stored_record_crc(impl_->file, offset, record.nbytes);
  if (!expected_crc) return false;
  auto* data = static_cast<char*>(destination.data_ptr());
  impl_->file.clear();
  impl_->file.seekg(static_cast<std::streamoff>(offset));
  impl_->file.read(data, static_cast<std::streamsize>(record.nbytes));
  if (!impl_->file) fail(path, ": storage record '", record.name, "' is cut short");
  const uLong crc = crc32_z(crc32_z(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data), record.nbytes);
  if (crc != *expected_crc) fail(path, ": storage record '", record.name, "' is corrupt (CRC-32 mismatch)");
  return true;
}

void write_torch_file(const std::string& path, const PyObjectPtr& root) {
  try {
    Pickler pickler(path);
    const std::string pickle = pickler.dump(root);
    write_atomically(path, [&](const std::string& tmp) { write_archive(path, tmp, pickle, pickler.records()); });
  } catch (const c10::Error& error) {
    fail(path, ": write failed (", error.what_without_backtrace(), ")");
  }
}

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

PyObjectPtr state_dict_to_object(const StateDict& state) {
  PyObjectPtr dict = PyObject::new_dict(true);
  for (const auto& [name, tensor] : state)
    dict->entries.emplace_back(PyObject::from_string(name), PyObject::from_tensor(tensor));
  return dict;
}

}  // namespace albef::io
