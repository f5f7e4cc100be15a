#pragma once
/// @file module_pickle.h
/// @brief Reading a whole pickled `nn.Module` (`torch.save(model)`, as
/// DALL-E ships its `encoder.pkl`) as data, without running any of it.
///
/// Such a pickle names the model's classes (`dall_e.encoder.Encoder`,
/// `torch.nn.modules.container.Sequential`, ...) and rebuilds each object
/// from its pickled `__dict__`. Here the caller lists the classes it accepts;
/// an object of one of them becomes a dict holding its `__dict__` (with
/// `_parameters`, `_buffers`, `_modules` and its plain attributes) plus
/// "__class__" -> "module.name". Any other class or function named in the
/// file is refused by name, as read_torch_file refuses it, and nothing named
/// in the file is imported or called.

#include "albef/io/checkpoint.h"
#include "albef/io/pyobject.h"

#include <cstdint>
#include <string>
#include <vector>

namespace albef::io {

/// Reads `path` (zip or legacy torch.save format), accepting objects of
/// `module_classes` ("module.name" each). The root must be one of them.
PyObjectPtr read_module_file(const std::string& path, const std::vector<std::string>& module_classes);

/// The class ("module.name") of a module read by read_module_file; throws
/// albef::Error naming `path` and `where` when `module` is no such object.
std::string module_class(const PyObjectPtr& module, const std::string& path, const std::string& where);

/// An attribute of a module's `__dict__`; an error naming `path`, `where`
/// and `name` when it is missing.
PyObjectPtr module_attribute(const PyObjectPtr& module, const std::string& name, const std::string& path,
                             const std::string& where);

/// module_attribute that must be a Python int.
int64_t module_int(const PyObjectPtr& module, const std::string& name, const std::string& path,
                   const std::string& where);

/// The submodules (`_modules`) of a module, in their order; None entries
/// (unset submodules) are skipped.
std::vector<std::pair<std::string, PyObjectPtr>> module_children(const PyObjectPtr& module, const std::string& path,
                                                                 const std::string& where);

/// `module.state_dict()`: every parameter and persistent buffer of the tree,
/// named "child.grandchild.name" in module order, shared tensors shared.
StateDict module_state_dict(const PyObjectPtr& module, const std::string& path);

}  // namespace albef::io
