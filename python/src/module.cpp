// The `albef._albef` extension: albef-cpp for Python (see python/albef/__init__.py).

#include "bindings.h"

#include "albef/core/error.h"

#include <pybind11/numpy.h>

namespace py = pybind11;

PYBIND11_MODULE(_albef, module) {
  module.doc() = "albef-cpp's ALBEF models, checkpoints and galleries (import albef).";
  module.attr("__version__") = ALBEF_VERSION;
  // albef.Error, created once and never freed: an object freed by a C++
  // static destructor at exit would be released after the interpreter is gone.
  static PyObject* error = PyErr_NewException("albef.Error", PyExc_RuntimeError, nullptr);
  py::handle(error).attr("__doc__") =
      "An error albef-cpp reports: bad input (naming the file, line or key) or a broken precondition.";
  module.attr("Error") = py::handle(error);
  py::register_exception_translator([](std::exception_ptr raised) {
    try {
      if (raised) std::rethrow_exception(raised);
    } catch (const albef::FileNotFound& e) {
      PyErr_SetString(PyExc_FileNotFoundError, e.what());
    } catch (const albef::Error& e) {
      PyErr_SetString(error, e.what());
    }
  });
  // pybind11 reaches numpy's C API on first use, behind a C++ static guard:
  // first used from two threads at once (one holding that guard while it
  // waits for the GIL, the other holding the GIL) they would deadlock.
  py::array_t<float> warm_up(0);
  albef::python::bind_gallery(module);
  albef::python::bind_model(module);
  albef::python::bind_checkpoint(module);
}
