// Writing zip-format `.pth` files: write_torch_file, state_dict_to_object, the pickler and the zip writer.
#include "albef/io/checkpoint.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "unpickler.h"

#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace albef::io {
namespace {

using Kind = PyObject::Kind;

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
  // The writer never sees a failed write (a full disk): LibTorch 1.13's
  // writer then throws again from its destructor while finalizing, which
  // terminates the program. The first failure is reported once it is done.
  int write_error = 0;
  // Writing through a function names the archive folder "archive", as
  // torch.save does for file objects.
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t size) -> size_t {
    if (write_error == 0) {
      out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
      if (!out) write_error = errno != 0 ? errno : EIO;
    }
    return size;
  });
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  for (const auto& record : records)
    writer.writeRecord("data/" + record.key, record.storage.data(), record.storage.nbytes());
  writer.writeEndOfFile();
  out.close();
  if (write_error == 0 && !out) write_error = errno != 0 ? errno : EIO;
  if (write_error != 0) fail(path, ": write failed (", std::strerror(write_error), ")");
}

}  // namespace

void write_torch_file(const std::string& path, const PyObjectPtr& root) {
  try {
    Pickler pickler(path);
    const std::string pickle = pickler.dump(root);
    write_atomically(path, [&](const std::string& tmp) { write_archive(path, tmp, pickle, pickler.records()); });
  } catch (const c10::Error& error) {
    fail(path, ": write failed (", error.what_without_backtrace(), ")");
  }
}

PyObjectPtr state_dict_to_object(const StateDict& state) {
  PyObjectPtr dict = PyObject::new_dict(true);
  for (const auto& [name, tensor] : state)
    dict->entries.emplace_back(PyObject::from_string(name), PyObject::from_tensor(tensor));
  return dict;
}

}  // namespace albef::io
