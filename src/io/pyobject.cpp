#include "albef/io/pyobject.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "unpickler.h"

namespace albef::io {
namespace {

PyObjectPtr make(PyObject::Kind kind) {
  auto object = std::make_shared<PyObject>();
  object->kind = kind;
  return object;
}

}  // namespace

PyObjectPtr PyObject::none() { return make(Kind::None); }

PyObjectPtr PyObject::from_bool(bool value) {
  auto object = make(Kind::Bool);
  object->boolean = value;
  return object;
}

PyObjectPtr PyObject::from_int(int64_t value) {
  auto object = make(Kind::Int);
  object->integer = value;
  return object;
}

PyObjectPtr PyObject::from_float(double value) {
  auto object = make(Kind::Float);
  object->real = value;
  return object;
}

PyObjectPtr PyObject::from_string(std::string value) {
  auto object = make(Kind::String);
  object->text = std::move(value);
  return object;
}

PyObjectPtr PyObject::from_tensor(at::Tensor value) {
  auto object = make(Kind::Tensor);
  object->tensor = std::move(value);
  return object;
}

PyObjectPtr PyObject::new_list(std::vector<PyObjectPtr> items) {
  auto object = make(Kind::List);
  object->items = std::move(items);
  return object;
}

PyObjectPtr PyObject::new_tuple(std::vector<PyObjectPtr> items) {
  auto object = make(Kind::Tuple);
  object->items = std::move(items);
  return object;
}

PyObjectPtr PyObject::new_dict(bool ordered) {
  auto object = make(Kind::Dict);
  object->ordered_dict = ordered;
  return object;
}

PyObjectPtr PyObject::get(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (const auto& [name, value] : entries)
    if (name && name->kind == Kind::String && name->text == key) return value;
  return nullptr;
}

void PyObject::set(const std::string& key, PyObjectPtr value) {
  ALBEF_CHECK(kind == Kind::Dict, "set('", key, "') on a ", kind_name());
  for (auto& [name, old] : entries) {
    if (name && name->kind == Kind::String && name->text == key) {
      old = std::move(value);
      return;
    }
  }
  entries.emplace_back(from_string(key), std::move(value));
}

const char* PyObject::kind_name() const {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Dict: return ordered_dict ? "OrderedDict" : "dict";
    case Kind::Tensor: return "tensor";
  }
  return "unknown";
}

PyObjectPtr read_pickle_file(const std::string& path) {
  const std::string data = read_file(path);
  size_t pos = 0;
  PyObjectPtr result = unpickle(data, pos, path, [&path](const StorageRef& ref) -> c10::Storage {
    fail(path, ": holds tensors (storage '", ref.key, "'): this is a torch.save file, not a plain-data pickle");
  });
  if (pos != data.size()) fail(path, ": ", data.size() - pos, " bytes follow the pickle's end");
  return result;
}

}  // namespace albef::io
