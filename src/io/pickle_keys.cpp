#include "pickle_keys.h"

#include <cmath>
#include <functional>
#include <string>

namespace albef::io {
namespace {

using Kind = PyObject::Kind;

bool is_number(const PyObject& o) { return o.kind == Kind::Bool || o.kind == Kind::Int || o.kind == Kind::Float; }

// A float with an integral value in int64 range, as Python compares numbers.
std::optional<int64_t> integral_value(const PyObject& o) {
  if (o.kind != Kind::Float) return o.kind == Kind::Bool ? int64_t{o.boolean} : o.integer;
  if (std::trunc(o.real) != o.real || o.real < -9.2233720368547758e18 || o.real >= 9.2233720368547758e18)
    return std::nullopt;
  return static_cast<int64_t>(o.real);
}

bool is_scalar_key(const PyObject& o) {
  return o.kind != Kind::List && o.kind != Kind::Dict && o.kind != Kind::Tuple;
}

}  // namespace

bool keys_equal(const PyObjectPtr& a, const PyObjectPtr& b) {
  if (is_number(*a) && is_number(*b)) {
    if (a->kind == Kind::Float && b->kind == Kind::Float) return a->real == b->real;
    const auto x = integral_value(*a), y = integral_value(*b);
    return x && y && *x == *y;
  }
  if (a->kind != b->kind) return false;
  switch (a->kind) {
    case Kind::None: return true;
    case Kind::String:
    case Kind::Bytes: return a->text == b->text;
    case Kind::Tuple:
      if (a->items.size() != b->items.size()) return false;
      for (size_t i = 0; i < a->items.size(); ++i)
        if (!keys_equal(a->items[i], b->items[i])) return false;
      return true;
    default: return a == b;
  }
}

std::optional<size_t> key_hash(const PyObject& key) {
  switch (key.kind) {
    case Kind::None: return 0x5bd1e995;
    case Kind::Bool:
    case Kind::Int:
    case Kind::Float: {
      const auto integral = integral_value(key);
      return integral ? std::hash<int64_t>()(*integral) : std::hash<double>()(key.real);
    }
    case Kind::String: return std::hash<std::string>()(key.text);
    case Kind::Bytes: return ~std::hash<std::string>()(key.text);
    case Kind::Tensor: return std::hash<const void*>()(&key);
    case Kind::Tuple: {
      size_t hash = key.items.size();
      for (const PyObjectPtr& item : key.items) {
        const std::optional<size_t> part = is_scalar_key(*item) ? key_hash(*item) : std::nullopt;
        if (!part) return std::nullopt;
        hash = hash * 1000003 ^ *part;
      }
      return hash;
    }
    default: return std::nullopt;
  }
}

}  // namespace albef::io
