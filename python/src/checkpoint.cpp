// albef.load_checkpoint / albef.save_checkpoint: `.pth` files as plain Python
// objects with numpy arrays, through the safe unpickler (nothing named in the
// file is ever run), and albef.read_image.

#include "arrays.h"
#include "bindings.h"

#include "albef/core/error.h"
#include "albef/io/checkpoint.h"
#include "albef/vision/image.h"

#include <ATen/ATen.h>

namespace albef::python {
namespace {

using py::literals::operator""_a;
using Kind = io::PyObject::Kind;

py::object to_python(const io::PyObject& object) {
  switch (object.kind) {
    case Kind::None: return py::none();
    case Kind::Bool: return py::bool_(object.boolean);
    case Kind::Int: return py::int_(object.integer);
    case Kind::Float: return py::float_(object.real);
    case Kind::String: return py::str(object.text);
    case Kind::Bytes: return py::bytes(object.text);
    case Kind::List: {
      py::list out;
      for (const auto& item : object.items) out.append(to_python(*item));
      return std::move(out);
    }
    case Kind::Tuple: {
      py::tuple out(object.items.size());
      for (size_t i = 0; i < object.items.size(); ++i) out[i] = to_python(*object.items[i]);
      return std::move(out);
    }
    case Kind::Dict: {
      py::object out = object.ordered_dict ? py::module_::import("collections").attr("OrderedDict")() : py::dict();
      for (const auto& [key, value] : object.entries) out[to_python(*key)] = to_python(*value);
      return out;
    }
    case Kind::Tensor: return to_numpy(object.tensor);
  }
  throw Error("unknown checkpoint object kind");
}

std::string describe(const py::handle& value) {
  return py::str(py::type::of(value).attr("__name__")).cast<std::string>();
}

// `where` names the entry for messages ("['model']['temp']"); `arrays` keeps
// the arrays whose buffers the tensors view alive until the file is written.
io::PyObjectPtr from_python(const py::handle& value, const std::string& where, py::list& arrays) {
  const py::object ordered_dict = py::module_::import("collections").attr("OrderedDict");
  if (value.is_none()) return io::PyObject::none();
  if (py::isinstance<py::bool_>(value)) return io::PyObject::from_bool(value.cast<bool>());
  if (py::isinstance<py::int_>(value)) {
    try {
      return io::PyObject::from_int(value.cast<int64_t>());
    } catch (const py::cast_error&) {
      throw py::value_error("save_checkpoint: the int at " + where + " does not fit in 64 bits");
    }
  }
  if (py::isinstance<py::float_>(value)) return io::PyObject::from_float(value.cast<double>());
  if (py::isinstance<py::str>(value)) return io::PyObject::from_string(value.cast<std::string>());
  if (py::isinstance<py::bytes>(value)) {
    auto out = io::PyObject::from_string(value.cast<std::string>());
    out->kind = Kind::Bytes;
    return out;
  }
  if (py::isinstance<py::dict>(value)) {
    auto out = io::PyObject::new_dict(py::isinstance(value, ordered_dict));
    for (const auto& [key, item] : value.cast<py::dict>()) {
      const std::string name = py::isinstance<py::str>(key) ? "'" + key.cast<std::string>() + "'" : py::repr(key).cast<std::string>();
      out->entries.emplace_back(from_python(key, where + "[key " + name + "]", arrays),
                                from_python(item, where + "[" + name + "]", arrays));
    }
    return out;
  }
  if (py::isinstance<py::list>(value) || py::isinstance<py::tuple>(value)) {
    std::vector<io::PyObjectPtr> items;
    size_t i = 0;
    for (const py::handle item : value) items.push_back(from_python(item, where + "[" + std::to_string(i++) + "]", arrays));
    return py::isinstance<py::list>(value) ? io::PyObject::new_list(std::move(items)) : io::PyObject::new_tuple(std::move(items));
  }
  if (py::isinstance<py::array>(value) || py::hasattr(value, "__array__")) {
    // numpy scalars become 0-d tensors (np.float32(0.05) as a `temp`);
    // np.asarray also takes a CPU torch.Tensor without copying.
    const py::array array = py::array::ensure(py::module_::import("numpy").attr("asarray")(value), py::array::c_style);
    if (!array) throw py::value_error("save_checkpoint: " + where + " (" + describe(value) + ") is no array numpy can read");
    arrays.append(array);
    return io::PyObject::from_tensor(tensor_view(array, "save_checkpoint: " + where));
  }
  throw py::value_error("save_checkpoint: cannot store the " + describe(value) + " at " + where +
                        " (dicts, lists, tuples, str, bytes, numbers, None and numpy arrays can be stored)");
}

}  // namespace

void bind_checkpoint(py::module_& module) {
  module.def(
      "load_checkpoint",
      [](const py::object& path) {
        const std::string file = fspath(path);
        io::PyObjectPtr root;
        {
          py::gil_scoped_release release;
          root = io::read_torch_file(file);
        }
        return to_python(*root);
      },
      "path"_a, R"doc(
Reads a `.pth` file (torch.save's zip or legacy format) with albef's safe
unpickler: nothing the file names is run, and only dicts, lists, tuples,
numbers, strings and tensors are rebuilt. Tensors become numpy arrays that
share the file's loaded storage (tied weights stay one array; bfloat16 becomes
float32); state_dicts are collections.OrderedDict. Official checkpoints hold
{'model': state_dict, 'optimizer': ..., 'config': ..., 'epoch': ...}.
)doc");
  module.def(
      "save_checkpoint",
      [](const py::object& path, const py::object& checkpoint) {
        const std::string file = fspath(path);
        py::list arrays;
        const io::PyObjectPtr root = from_python(checkpoint, "the checkpoint", arrays);
        py::gil_scoped_release release;
        io::write_torch_file(file, root);
      },
      "path"_a, "checkpoint"_a, R"doc(
Writes `checkpoint` (dicts, lists, tuples, str, bytes, numbers, None and
numpy arrays, nested) as a zip-format `.pth` that torch.load reads back:
numpy arrays and scalars become tensors (Python numbers stay numbers),
collections.OrderedDict stays one. Atomic: the
file is replaced only once it is whole.
)doc");
  module.def(
      "read_image",
      [](const py::object& path) {
        const std::string file = fspath(path);
        cv::Mat rgb;
        {
          py::gil_scoped_release release;
          rgb = vision::read_rgb(file);
        }
        return to_numpy(rgb);
      },
      "path"_a,
      "An image file's RGB pixels, uint8 [H, W, 3], decoded as the models read files (as PIL's convert('RGB')).");
}

}  // namespace albef::python
