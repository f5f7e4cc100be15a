#pragma once
// The parts of the module, each adding its classes and functions.

#include <pybind11/pybind11.h>

namespace albef::python {

void bind_model(pybind11::module_& module);
void bind_gallery(pybind11::module_& module);
void bind_checkpoint(pybind11::module_& module);

}  // namespace albef::python
