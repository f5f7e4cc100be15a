#include "unpickler.h"

#include "pickle_checks.h"
#include "pickle_globals.h"
#include "pickle_keys.h"
#include "pickle_text.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace albef::io {
namespace {

using Kind = PyObject::Kind;

PyObjectPtr bytes_object(std::string value) {
  auto bytes = std::make_shared<PyObject>();
  bytes->kind = Kind::Bytes;
  bytes->text = std::move(value);
  return bytes;
}

// The storage (or legacy storage view) a BINPERSID resolved to.
struct StorageSlice {
  c10::Storage storage;
  at::ScalarType dtype;
  int64_t offset;  // elements of dtype
  int64_t numel;
};

struct Item;
using ItemTuple = std::vector<Item>;

// One value on the VM stack or in the memo. Plain data lives in `object`;
// globals and storages never leave the VM, and a tuple holding one of them
// (a persistent id, the arguments of a call) is kept as `tuple`.
struct Item {
  PyObjectPtr object;
  std::shared_ptr<const Global> global;
  std::shared_ptr<const StorageSlice> storage;
  std::shared_ptr<const ItemTuple> tuple;
};

class Unpickler {
 public:
  Unpickler(std::string_view data, size_t pos, const std::string& source, const StorageLoader& load,
            const ObjectClasses& object_classes)
      : data_(data), pos_(pos), source_(source), load_storage_(load), object_classes_(object_classes) {}

  // Releases every container without recursion (see release()).
  ~Unpickler() { release(); }

  PyObjectPtr run();
  size_t position() const { return pos_; }

 private:
  [[noreturn]] void corrupt(const char* why) const {
    fail(source_, ": truncated or corrupt pickle at byte ", op_pos_, " (", why, ")");
  }

  // --- reading the byte stream ---
  std::string_view take(size_t n) {
    if (n > data_.size() - pos_) corrupt("unexpected end of data");
    const std::string_view bytes = data_.substr(pos_, n);
    pos_ += n;
    return bytes;
  }
  uint64_t read_le(size_t n) {
    const std::string_view bytes = take(n);
    uint64_t value = 0;
    for (size_t i = 0; i < n; ++i) value |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
    return value;
  }
  std::string_view read_line() {
    const size_t end = data_.find('\n', pos_);
    if (end == std::string_view::npos) corrupt("unterminated line");
    const std::string_view line = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return line;
  }
  int64_t read_long1();
  double read_binfloat();
  template <typename T>
  T text_value(std::optional<T> value, const char* why) const {
    if (!value) corrupt(why);
    return std::move(*value);
  }

  // --- the stack ---
  size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(PyObjectPtr object) { stack_.push_back(Item{std::move(object), nullptr, nullptr, nullptr}); }
  Item pop() {
    if (stack_.size() <= fence()) corrupt("stack underflow");
    Item item = std::move(stack_.back());
    stack_.pop_back();
    return item;
  }
  Item& top() {
    if (stack_.size() <= fence()) corrupt("stack underflow");
    return stack_.back();
  }
  std::vector<Item> pop_mark() {
    if (marks_.empty()) corrupt("no MARK");
    std::vector<Item> items(std::make_move_iterator(stack_.begin() + marks_.back()),
                            std::make_move_iterator(stack_.end()));
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  PyObjectPtr object_of(const Item& item) const {
    if (!item.object) corrupt("a class or storage where data was expected");
    return item.object;
  }
  PyObject& container(Kind kind, const char* why) {
    const Item& item = top();
    if (!item.object || item.object->kind != kind) corrupt(why);
    return *item.object;
  }

  // --- building values ---
  PyObjectPtr track(PyObjectPtr container) {
    containers_.push_back(container);
    return container;
  }
  Item make_tuple(std::vector<Item> items);
  std::vector<Item> tuple_items(const Item& item) const;
  void dict_set(PyObject& dict, PyObjectPtr key, PyObjectPtr value);
  int64_t int_arg(const Item& item, const char* what) const;
  std::vector<int64_t> int_tuple_arg(const Item& item, const char* what) const;

  // --- the opcodes that need more than a line ---
  void op_global(std::string_view module, std::string_view name);
  void op_reduce(bool newobj);
  void op_build();
  void op_persid();
  Item call(const Global& global, const std::vector<Item>& args);
  PyObjectPtr rebuild_tensor(const std::vector<Item>& args);
  PyObjectPtr rebuild_parameter(const std::vector<Item>& args);

  void release();

  std::string_view data_;
  size_t pos_;
  size_t op_pos_ = 0;
  const std::string& source_;
  const StorageLoader& load_storage_;
  const ObjectClasses& object_classes_;

  std::vector<Item> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Item> memo_;
  // hash -> entry index, per dict being filled, so SETITEMS stays linear.
  std::unordered_map<const PyObject*, std::unordered_multimap<size_t, size_t>> dict_index_;
  // Every container built, so release() can take them apart iteratively.
  std::vector<PyObjectPtr> containers_;
  std::unordered_set<const PyObject*> keep_;
  // The dicts standing for objects of object_classes_, which BUILD fills.
  std::unordered_set<const PyObject*> objects_;
};

int64_t Unpickler::read_long1() {
  const size_t n = static_cast<uint8_t>(take(1)[0]);
  const std::string_view bytes = take(n);
  if (n == 0) return 0;
  uint64_t value = 0;
  for (size_t i = 0; i < std::min<size_t>(n, 8); ++i)
    value |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
  const bool negative = static_cast<uint8_t>(bytes[std::min<size_t>(n, 8) - 1]) & 0x80;
  if (n < 8 && negative) value |= ~uint64_t{0} << (8 * n);
  // Bytes past the eighth must only repeat the sign.
  for (size_t i = 8; i < n; ++i)
    if (static_cast<uint8_t>(bytes[i]) != (negative ? 0xff : 0x00))
      fail(source_, ": integer at byte ", op_pos_, " of the pickle does not fit in 64 bits");
  return static_cast<int64_t>(value);
}

double Unpickler::read_binfloat() {
  const std::string_view bytes = take(8);
  uint64_t bits = 0;
  for (char c : bytes) bits = (bits << 8) | static_cast<uint8_t>(c);  // big-endian
  double value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

Item Unpickler::make_tuple(std::vector<Item> items) {
  bool plain = true;
  for (const Item& item : items) {
    if (item.tuple) corrupt("unsupported nesting of class or storage references");
    plain = plain && item.object;
  }
  if (!plain) return Item{nullptr, nullptr, nullptr, std::make_shared<const ItemTuple>(std::move(items))};
  std::vector<PyObjectPtr> objects;
  objects.reserve(items.size());
  for (Item& item : items) objects.push_back(std::move(item.object));
  return Item{track(PyObject::new_tuple(std::move(objects))), nullptr, nullptr, nullptr};
}

std::vector<Item> Unpickler::tuple_items(const Item& item) const {
  if (item.tuple) return *item.tuple;
  if (!item.object || item.object->kind != Kind::Tuple) corrupt("expected a tuple of arguments");
  std::vector<Item> items;
  items.reserve(item.object->items.size());
  for (const PyObjectPtr& object : item.object->items) items.push_back(Item{object, nullptr, nullptr, nullptr});
  return items;
}

void Unpickler::dict_set(PyObject& dict, PyObjectPtr key, PyObjectPtr value) {
  auto& index = dict_index_[&dict];
  const std::optional<size_t> found = key_hash(*key);
  if (!found) corrupt("unhashable dict key");
  const size_t hash = *found;
  // An object's class is set once, by NEWOBJ; SETITEM or BUILD may not change it.
  if (objects_.count(&dict) && key->kind == Kind::String && key->text == "__class__")
    corrupt("an object's __class__ set from the data");
  const auto [first, last] = index.equal_range(hash);
  size_t colliding = 0;
  for (auto it = first; it != last; ++it) {
    auto& entry = dict.entries[it->second];
    if (keys_equal(entry.first, key)) {
      entry.second = std::move(value);  // Python keeps the first position
      return;
    }
    // Distinct keys sharing a hash are rare by chance; many are crafted to make loading quadratic.
    if (++colliding > 64) corrupt("too many dict keys with the same hash");
  }
  index.emplace(hash, dict.entries.size());
  dict.entries.emplace_back(std::move(key), std::move(value));
}

int64_t Unpickler::int_arg(const Item& item, const char* what) const {
  if (!item.object || item.object->kind != Kind::Int) corrupt(what);
  return item.object->integer;
}

std::vector<int64_t> Unpickler::int_tuple_arg(const Item& item, const char* what) const {
  if (!item.object || item.object->kind != Kind::Tuple) corrupt(what);
  std::vector<int64_t> values;
  for (const PyObjectPtr& element : item.object->items) {
    if (element->kind != Kind::Int) corrupt(what);
    values.push_back(element->integer);
  }
  return values;
}

void Unpickler::op_global(std::string_view module, std::string_view name) {
  auto global = find_global(module, name, object_classes_);
  if (!global) {
    // A hostile name may be huge or binary: show a printable prefix.
    std::string shown = str_cat(module, ".", name).substr(0, 200);
    for (char& c : shown)
      if (static_cast<uint8_t>(c) < 0x20 || static_cast<uint8_t>(c) >= 0x7f) c = '?';
    fail(source_, ": refusing to load global '", shown, "' (only tensors and plain containers",
         object_classes_.empty() ? "" : " and the module classes of this kind of file", " are allowed)");
  }
  stack_.push_back(Item{nullptr, std::make_shared<const Global>(std::move(*global)), nullptr, nullptr});
}

void Unpickler::op_reduce(bool newobj) {
  const Item args = pop();
  const Item callable = pop();
  if (!callable.global) corrupt("call of something that is not an allowed class or function");
  std::vector<Item> arguments = tuple_items(args);
  if (newobj) {
    if (callable.global->callable == Callable::kObjectClass) {
      // object.__new__(cls): an object with an empty __dict__ until BUILD.
      if (!arguments.empty()) corrupt("NEWOBJ of an object class with arguments");
      PyObjectPtr object = track(PyObject::new_dict());
      object->set("__class__", PyObject::from_string(callable.global->name));
      objects_.insert(object.get());
      stack_.push_back(Item{std::move(object), nullptr, nullptr, nullptr});
      return;
    }
    if (callable.global->callable != Callable::kOrderedDict && callable.global->callable != Callable::kSet)
      corrupt("NEWOBJ of a class that is not a container");
    arguments.clear();  // cls.__new__ ignores them for these classes: the object starts empty
  }
  stack_.push_back(call(*callable.global, arguments));
}

Item Unpickler::call(const Global& global, const std::vector<Item>& args) {
  const auto plain = [](PyObjectPtr object) { return Item{std::move(object), nullptr, nullptr, nullptr}; };
  switch (global.callable) {
    case Callable::kOrderedDict:
      if (!args.empty()) corrupt("OrderedDict with arguments");
      return plain(track(PyObject::new_dict(true)));
    case Callable::kSet: {
      if (args.empty()) return plain(track(PyObject::new_list()));
      const PyObjectPtr source = args.size() == 1 ? args[0].object : nullptr;
      if (!source || (source->kind != Kind::List && source->kind != Kind::Tuple))
        corrupt("set of something that is not a list");
      return plain(track(PyObject::new_list(source->items)));
    }
    case Callable::kBytes: {
      if (!args.empty()) corrupt("bytes() with arguments");
      return plain(bytes_object({}));
    }
    case Callable::kCodecsEncode: {
      const bool valid = args.size() == 2 && args[0].object && args[0].object->kind == Kind::String &&
                         args[1].object && args[1].object->kind == Kind::String &&
                         (args[1].object->text == "latin1" || args[1].object->text == "latin-1");
      if (!valid) corrupt("_codecs.encode other than latin-1 text to bytes");
      return plain(
          bytes_object(text_value(pickle_text::latin1_bytes(args[0].object->text), "bytes that are not latin-1 text")));
    }
    case Callable::kDevice: {
      const auto text_at = [&](size_t i) { return args[i].object && args[i].object->kind == Kind::String; };
      const auto int_at = [&](size_t i) { return args[i].object && args[i].object->kind == Kind::Int; };
      if (args.size() == 1 && text_at(0)) return plain(PyObject::from_string(args[0].object->text));
      if (args.size() == 2 && text_at(0) && int_at(1))
        return plain(PyObject::from_string(str_cat(args[0].object->text, ":", args[1].object->integer)));
      corrupt("torch.device of something other than a type and an index");
    }
    case Callable::kRebuildTensorV2:
    case Callable::kRebuildTensor: return plain(rebuild_tensor(args));
    case Callable::kRebuildParameter:
    case Callable::kRebuildParameterWithState: return plain(rebuild_parameter(args));
    case Callable::kStorageClass: break;
    case Callable::kObjectClass:
      fail(source_, ": refusing to call '", global.name, "' (objects are only rebuilt from their pickled state)");
  }
  fail(source_, ": refusing to call '", global.name, "' (storages may only appear in tensor references)");
}

// _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
// and _rebuild_tensor(storage, offset, size, stride). requires_grad, hooks and
// metadata do not matter for loading weights.
PyObjectPtr Unpickler::rebuild_tensor(const std::vector<Item>& args) {
  if (args.size() != 4 && args.size() != 6 && args.size() != 7) corrupt("wrong number of tensor arguments");
  if (!args[0].storage) corrupt("tensor without a storage");
  const StorageSlice& slice = *args[0].storage;
  const int64_t offset = int_arg(args[1], "tensor offset is not an int");
  const std::vector<int64_t> sizes = int_tuple_arg(args[2], "tensor size is not a tuple of ints");
  const std::vector<int64_t> strides = int_tuple_arg(args[3], "tensor stride is not a tuple of ints");
  if (sizes.size() != strides.size()) corrupt("tensor size and stride differ in length");

  // set_() would grow a storage that is too small.
  if (const char* why = tensor_view_error(offset, slice.numel, sizes, strides)) corrupt(why);
  at::Tensor tensor = at::empty({0}, at::TensorOptions().dtype(slice.dtype));
  tensor.set_(slice.storage, slice.offset + offset, sizes, strides);
  return PyObject::from_tensor(std::move(tensor));
}

// _rebuild_parameter(data, requires_grad, hooks[, state])
PyObjectPtr Unpickler::rebuild_parameter(const std::vector<Item>& args) {
  if (args.size() != 3 && args.size() != 4) corrupt("wrong number of parameter arguments");
  if (!args[0].object || args[0].object->kind != Kind::Tensor) corrupt("parameter data is not a tensor");
  PyObjectPtr parameter = PyObject::from_tensor(args[0].object->tensor);
  parameter->parameter = true;
  return parameter;
}

// Dicts carry the `_metadata` of state_dict(), parameters their Python state:
// neither matters for the weights, so the state is dropped. An object's state
// is its __dict__, kept.
void Unpickler::op_build() {
  const Item state = pop();
  const Item& target = top();
  if (!target.object || (target.object->kind != Kind::Dict && target.object->kind != Kind::Tensor))
    corrupt("BUILD on something other than a dict or tensor");
  if (!objects_.count(target.object.get())) return;
  if (!state.object || state.object->kind != Kind::Dict) corrupt("object state that is not a dict");
  PyObject& object = *target.object;
  for (const auto& [key, value] : state.object->entries) {
    if (key->kind != Kind::String) corrupt("object attribute that is not a str");
    dict_set(object, key, value);
  }
}

// ('storage', <torch.XStorage>, key, location, numel[, view_metadata]), or in
// a legacy file holding a whole module, ('module', <class>, source file,
// source): the class itself (its source is ignored).
void Unpickler::op_persid() {
  const std::vector<Item> id = tuple_items(pop());
  const auto string_at = [&](size_t i) -> const std::string* {
    return id[i].object && id[i].object->kind == Kind::String ? &id[i].object->text : nullptr;
  };
  if (id.size() == 4 && string_at(0) && *string_at(0) == "module") {
    if (!id[1].global || id[1].global->callable != Callable::kObjectClass)
      corrupt("module reference without an allowed class");
    stack_.push_back(id[1]);
    return;
  }
  if ((id.size() != 5 && id.size() != 6) || !string_at(0) || *string_at(0) != "storage" || !id[1].global ||
      id[1].global->callable != Callable::kStorageClass || !string_at(2) || !string_at(3))
    corrupt("persistent id is not a storage reference");
  StorageRef ref{*string_at(2), id[1].global->dtype, int_arg(id[4], "storage size is not an int"), *string_at(3)};
  const int64_t element_size = static_cast<int64_t>(c10::elementSize(ref.dtype));
  if (ref.numel < 0 || ref.numel > std::numeric_limits<int64_t>::max() / element_size)
    corrupt("invalid storage size");

  StorageSlice slice{load_storage_(ref), ref.dtype, 0, ref.numel};
  if (slice.storage.nbytes() < static_cast<size_t>(ref.numel * element_size))
    fail(source_, ": storage '", ref.key, "' holds fewer bytes than a reference to it claims");
  // Legacy files may reference a view (view_key, offset, size) of the storage.
  if (id.size() == 6 && id[5].object && id[5].object->kind != Kind::None) {
    const std::vector<Item> view = tuple_items(id[5]);
    if (view.size() != 3) corrupt("invalid storage view");
    slice.offset = int_arg(view[1], "invalid storage view");
    slice.numel = int_arg(view[2], "invalid storage view");
    if (slice.offset < 0 || slice.numel < 0 || slice.offset > ref.numel || slice.numel > ref.numel - slice.offset)
      corrupt("storage view outside its storage");
  }
  stack_.push_back(Item{nullptr, nullptr, std::make_shared<const StorageSlice>(std::move(slice)), nullptr});
}

PyObjectPtr Unpickler::run() {
  while (true) {
    op_pos_ = pos_;
    const auto op = static_cast<uint8_t>(take(1)[0]);
    switch (op) {
      case 0x80:  // PROTO
        if (static_cast<uint8_t>(take(1)[0]) > 5) corrupt("unsupported pickle protocol");
        break;
      case 0x95:  // FRAME: only a size hint for buffered readers
        if (read_le(8) > data_.size() - pos_) corrupt("frame longer than the data");
        break;
      case '.': {  // STOP
        PyObjectPtr result = object_of(pop());
        keep_ = checked_graph(result, source_);
        return result;
      }
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case '0':  // POP (of an item, or of an empty mark as pickle.py does)
        if (stack_.size() > fence()) pop();
        else if (!marks_.empty()) marks_.pop_back();
        else corrupt("stack underflow");
        break;
      case '1': pop_mark(); break;  // POP_MARK
      case '2': {  // DUP (copied first: push_back may move the stack)
        Item copy = top();
        stack_.push_back(std::move(copy));
        break;
      }
      case 'N': push(PyObject::none()); break;
      case 0x88: push(PyObject::from_bool(true)); break;   // NEWTRUE
      case 0x89: push(PyObject::from_bool(false)); break;  // NEWFALSE
      case 'J': push(PyObject::from_int(static_cast<int32_t>(read_le(4)))); break;  // BININT
      case 'K': push(PyObject::from_int(static_cast<int64_t>(read_le(1)))); break;  // BININT1
      case 'M': push(PyObject::from_int(static_cast<int64_t>(read_le(2)))); break;  // BININT2
      case 0x8a: push(PyObject::from_int(read_long1())); break;                     // LONG1
      case 'G': push(PyObject::from_float(read_binfloat())); break;                 // BINFLOAT
      case 'X': push(PyObject::from_string(std::string(take(read_le(4))))); break;  // BINUNICODE
      case 0x8c: push(PyObject::from_string(std::string(take(read_le(1))))); break; // SHORT_BINUNICODE
      case 0x8d: push(PyObject::from_string(std::string(take(read_le(8))))); break; // BINUNICODE8
      case 'T': {  // BINSTRING (Python 2 str, loaded as text like pickle's default)
        const auto length = static_cast<int32_t>(read_le(4));
        if (length < 0) corrupt("negative string length");
        push(PyObject::from_string(std::string(take(static_cast<size_t>(length)))));
        break;
      }
      case 'U': push(PyObject::from_string(std::string(take(read_le(1))))); break;  // SHORT_BINSTRING
      case 'B':                                                                     // BINBYTES
      case 'C':                                                                     // SHORT_BINBYTES
      case 0x8e:                                                                    // BINBYTES8
        push(bytes_object(std::string(take(read_le(op == 'B' ? 4 : op == 'C' ? 1 : 8)))));
        break;
      case '}': push(track(PyObject::new_dict())); break;  // EMPTY_DICT
      case 'd': {                                          // DICT
        std::vector<Item> items = pop_mark();
        if (items.size() % 2) corrupt("odd number of dict items");
        PyObjectPtr dict = track(PyObject::new_dict());
        for (size_t i = 0; i < items.size(); i += 2) dict_set(*dict, object_of(items[i]), object_of(items[i + 1]));
        push(std::move(dict));
        break;
      }
      case 's': {  // SETITEM
        PyObjectPtr value = object_of(pop());
        PyObjectPtr key = object_of(pop());
        dict_set(container(Kind::Dict, "SETITEM on a non-dict"), std::move(key), std::move(value));
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<Item> items = pop_mark();
        if (items.size() % 2) corrupt("odd number of dict items");
        PyObject& dict = container(Kind::Dict, "SETITEMS on a non-dict");
        for (size_t i = 0; i < items.size(); i += 2) dict_set(dict, object_of(items[i]), object_of(items[i + 1]));
        break;
      }
      case ']': push(track(PyObject::new_list())); break;  // EMPTY_LIST
      case 0x8f: push(track(PyObject::new_list())); break;  // EMPTY_SET (loaded as a list)
      case 'l':                                            // LIST
      case 0x91: {                                         // FROZENSET (loaded as a list)
        std::vector<PyObjectPtr> objects;
        for (const Item& item : pop_mark()) objects.push_back(object_of(item));
        push(track(PyObject::new_list(std::move(objects))));
        break;
      }
      case 'a': {  // APPEND
        PyObjectPtr value = object_of(pop());
        container(Kind::List, "APPEND to a non-list").items.push_back(std::move(value));
        break;
      }
      case 'e':     // APPENDS
      case 0x90: {  // ADDITEMS (sets are lists here)
        std::vector<Item> items = pop_mark();
        PyObject& list = container(Kind::List, "APPENDS to a non-list");
        for (const Item& item : items) list.items.push_back(object_of(item));
        break;
      }
      case ')': stack_.push_back(make_tuple({})); break;         // EMPTY_TUPLE
      case 't': stack_.push_back(make_tuple(pop_mark())); break;  // TUPLE
      case 0x85:                                                  // TUPLE1
      case 0x86:                                                  // TUPLE2
      case 0x87: {                                                // TUPLE3
        std::vector<Item> items(op - 0x84);
        for (size_t i = items.size(); i-- > 0;) items[i] = pop();
        stack_.push_back(make_tuple(std::move(items)));
        break;
      }
      case 'q': memo_[read_le(1)] = top(); break;         // BINPUT
      case 'r': memo_[read_le(4)] = top(); break;         // LONG_BINPUT
      case 0x94: memo_[memo_.size()] = top(); break;      // MEMOIZE
      case 'h':                                           // BINGET
      case 'j': {                                         // LONG_BINGET
        const auto it = memo_.find(read_le(op == 'h' ? 1 : 4));
        if (it == memo_.end()) corrupt("unknown memo key");
        stack_.push_back(it->second);
        break;
      }
      case 'c': {  // GLOBAL
        const std::string_view module = read_line();
        op_global(module, read_line());
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const PyObjectPtr name = object_of(pop());
        const PyObjectPtr module = object_of(pop());
        if (name->kind != Kind::String || module->kind != Kind::String) corrupt("STACK_GLOBAL of non-strings");
        op_global(module->text, name->text);
        break;
      }
      case 'R': op_reduce(false); break;    // REDUCE
      case 0x81: op_reduce(true); break;    // NEWOBJ
      case 'b': op_build(); break;          // BUILD
      case 'Q': op_persid(); break;         // BINPERSID
      // Protocols 0 and 1: Python 2's default (REFER's refs(unc).p).
      case 'I': {  // INT ("01" / "00" are True / False)
        const std::string_view line = read_line();
        if (line == "01" || line == "00") {
          push(PyObject::from_bool(line == "01"));
          break;
        }
        push(PyObject::from_int(text_value(pickle_text::parse_int(line), "malformed INT")));
        break;
      }
      case 'L': push(PyObject::from_int(text_value(pickle_text::parse_int(read_line(), true), "malformed LONG"))); break;
      case 'F': push(PyObject::from_float(text_value(pickle_text::parse_float(read_line()), "malformed FLOAT"))); break;
      case 'S': push(PyObject::from_string(text_value(pickle_text::parse_string(read_line()), "malformed STRING"))); break;
      case 'V': push(PyObject::from_string(text_value(pickle_text::parse_unicode(read_line()), "malformed UNICODE"))); break;
      case 'p': memo_[static_cast<uint64_t>(text_value(pickle_text::parse_int(read_line()), "malformed PUT"))] = top(); break;
      case 'g': {  // GET
        const auto it = memo_.find(static_cast<uint64_t>(text_value(pickle_text::parse_int(read_line()), "malformed GET")));
        if (it == memo_.end()) corrupt("unknown memo key");
        stack_.push_back(it->second);
        break;
      }
      default:
        fail(source_, ": unsupported pickle opcode 0x", "0123456789abcdef"[op >> 4], "0123456789abcdef"[op & 15],
             " at byte ", op_pos_);
    }
  }
}

// Hostile data can nest containers a million deep or make them cycle; letting
// shared_ptr free that would recurse without bound or leak. Containers_ still
// holds every container, so emptying those outside the result first makes
// every later release shallow. The result (keep_) is untouched.
void Unpickler::release() {
  for (const PyObjectPtr& container : containers_) {
    if (keep_.count(container.get())) continue;
    container->items.clear();
    container->entries.clear();
  }
  stack_.clear();
  memo_.clear();
  containers_.clear();
}

}  // namespace

PyObjectPtr unpickle(std::string_view data, size_t& pos, const std::string& source,
                     const StorageLoader& load_storage, const ObjectClasses& object_classes) {
  Unpickler unpickler(data, pos, source, load_storage, object_classes);
  PyObjectPtr result = unpickler.run();
  pos = unpickler.position();
  return result;
}

}  // namespace albef::io
