// A whole pickled nn.Module read as data: the object tree the unpickler
// builds for listed classes (unpickler.h), and state_dict() over it.
#include "albef/io/module_pickle.h"

#include "albef/core/error.h"
#include "io/checkpoint_internal.h"

#include <algorithm>

namespace albef::io {
namespace {

using Kind = PyObject::Kind;

std::string child_path(const std::string& where, const std::string& name) {
  return where.empty() ? name : where + "." + name;
}

// A dict attribute of a module (`_parameters`, `_modules`, ...).
const PyObject& dict_attribute(const PyObjectPtr& module, const std::string& name, const std::string& path,
                               const std::string& where) {
  const PyObjectPtr value = module_attribute(module, name, path, where);
  if (!value->is_dict())
    fail(path, ": ", where.empty() ? "the root module" : "module '" + where + "'", "'s ", name, " is a ",
         value->kind_name(), ", not a dict");
  return *value;
}

void collect_state(const PyObjectPtr& module, const std::string& path, const std::string& where, StateDict& state) {
  std::vector<std::string> non_persistent;
  if (const PyObjectPtr names = module->get("_non_persistent_buffers_set"))
    for (const PyObjectPtr& name : names->items)
      if (name->kind == Kind::String) non_persistent.push_back(name->text);
  for (const char* table : {"_parameters", "_buffers"}) {
    for (const auto& [key, value] : dict_attribute(module, table, path, where).entries) {
      if (key->kind != Kind::String) fail(path, ": a name in ", child_path(where, table), " is not a str");
      if (value->kind == Kind::None) continue;  // registered but unset, as state_dict() skips it
      if (value->kind != Kind::Tensor)
        fail(path, ": '", child_path(where, key->text), "' is a ", value->kind_name(), ", not a tensor");
      if (std::string(table) == "_buffers" &&
          std::find(non_persistent.begin(), non_persistent.end(), key->text) != non_persistent.end())
        continue;
      state.emplace_back(child_path(where, key->text), value->tensor);
    }
  }
  for (const auto& [name, child] : module_children(module, path, where))
    collect_state(child, path, child_path(where, name), state);
}

}  // namespace

PyObjectPtr read_module_file(const std::string& path, const std::vector<std::string>& module_classes) {
  PyObjectPtr root = detail::read_torch_file_with_objects(path, module_classes);
  module_class(root, path, "");
  return root;
}

std::string module_class(const PyObjectPtr& module, const std::string& path, const std::string& where) {
  const PyObjectPtr cls = module && module->is_dict() ? module->get("__class__") : nullptr;
  if (!cls || cls->kind != Kind::String)
    fail(path, ": ", where.empty() ? "the root" : "'" + where + "'", " is a ", module ? module->kind_name() : "nothing",
         ", not a pickled module");
  return cls->text;
}

PyObjectPtr module_attribute(const PyObjectPtr& module, const std::string& name, const std::string& path,
                             const std::string& where) {
  const std::string cls = module_class(module, path, where);
  PyObjectPtr value = module->get(name);
  if (!value)
    fail(path, ": ", where.empty() ? "the root module" : "module '" + where + "'", " (", cls, ") has no attribute '",
         name, "'");
  return value;
}

int64_t module_int(const PyObjectPtr& module, const std::string& name, const std::string& path,
                   const std::string& where) {
  const PyObjectPtr value = module_attribute(module, name, path, where);
  if (value->kind != Kind::Int)
    fail(path, ": '", child_path(where, name), "' is a ", value->kind_name(), ", not an int");
  return value->integer;
}

std::vector<std::pair<std::string, PyObjectPtr>> module_children(const PyObjectPtr& module, const std::string& path,
                                                                 const std::string& where) {
  std::vector<std::pair<std::string, PyObjectPtr>> children;
  for (const auto& [key, value] : dict_attribute(module, "_modules", path, where).entries) {
    if (key->kind != Kind::String) fail(path, ": a submodule name in ", child_path(where, "_modules"), " is not a str");
    if (value->kind == Kind::None) continue;
    module_class(value, path, child_path(where, key->text));
    children.emplace_back(key->text, value);
  }
  return children;
}

StateDict module_state_dict(const PyObjectPtr& module, const std::string& path) {
  StateDict state;
  collect_state(module, path, "", state);
  return state;
}

}  // namespace albef::io
