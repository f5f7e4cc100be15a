#include "arrays.h"

#include "albef/vision/image.h"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

namespace albef::python {
namespace {

py::dtype numpy_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return py::dtype::of<float>();
    case at::kDouble: return py::dtype::of<double>();
    case at::kHalf: return py::dtype("float16");
    case at::kLong: return py::dtype::of<int64_t>();
    case at::kInt: return py::dtype::of<int32_t>();
    case at::kShort: return py::dtype::of<int16_t>();
    case at::kChar: return py::dtype::of<int8_t>();
    case at::kByte: return py::dtype::of<uint8_t>();
    case at::kBool: return py::dtype::of<bool>();
    default: throw py::value_error(std::string("no numpy dtype for tensors of ") + c10::toString(type));
  }
}

at::ScalarType tensor_dtype(const py::dtype& dtype, const std::string& what) {
  const char kind = dtype.kind();
  const auto size = dtype.itemsize();
  if (kind == 'f' && size == 4) return at::kFloat;
  if (kind == 'f' && size == 8) return at::kDouble;
  if (kind == 'f' && size == 2) return at::kHalf;
  if (kind == 'i' && size == 8) return at::kLong;
  if (kind == 'i' && size == 4) return at::kInt;
  if (kind == 'i' && size == 2) return at::kShort;
  if (kind == 'i' && size == 1) return at::kChar;
  if (kind == 'u' && size == 1) return at::kByte;
  if (kind == 'b') return at::kBool;
  throw py::value_error(what + ": numpy dtype " + py::str(static_cast<const py::object&>(dtype)).cast<std::string>() +
                        " has no tensor type (float16/32/64, int8/16/32/64, uint8 or bool)");
}

std::string describe(const py::handle& value) {
  return py::str(py::type::of(value).attr("__name__")).cast<std::string>();
}

bool is_path(const py::handle& value) {
  return py::isinstance<py::str>(value) || py::isinstance(value, py::module_::import("os").attr("PathLike"));
}

// One HxWx3 / HxW uint8 array (or each image of an NxHxWx3 array).
void add_array(std::vector<ImageInput>& out, const py::array& array, const std::string& argument) {
  const auto shape_text = [&] {
    std::string text = "(";
    for (py::ssize_t d = 0; d < array.ndim(); ++d) text += (d ? ", " : "") + std::to_string(array.shape(d));
    return text + (array.ndim() == 1 ? ",)" : ")");
  };
  if (array.dtype().kind() != 'u' || array.dtype().itemsize() != 1)
    throw py::value_error(argument + ": an image array must be uint8 RGB pixels (np.asarray(pil_image)), got dtype " +
                          py::str(static_cast<const py::object&>(array.dtype())).cast<std::string>());
  const bool grey = array.ndim() == 2;
  const bool rgb = array.ndim() == 3 && array.shape(2) == 3;
  const bool batch = array.ndim() == 4 && array.shape(3) == 3;
  if (!grey && !rgb && !batch)
    throw py::value_error(argument + ": an image array must be HxWx3 (RGB), HxW (grey) or NxHxWx3, got shape " +
                          shape_text());
  if (batch) {
    for (py::ssize_t i = 0; i < array.shape(0); ++i) add_array(out, array[py::int_(i)], argument);
    return;
  }
  if (array.shape(0) == 0 || array.shape(1) == 0)
    throw py::value_error(argument + ": an empty image array, shape " + shape_text());
  // Pixels as OpenCV needs them (rows contiguous): a view where numpy's layout is that already.
  const auto contiguous = py::array::ensure(array, py::array::c_style);
  ImageInput input;
  input.owner = contiguous;
  input.name = "image array #" + std::to_string(out.size());
  const auto rows = static_cast<int>(contiguous.shape(0)), cols = static_cast<int>(contiguous.shape(1));
  const cv::Mat view(rows, cols, grey ? CV_8UC1 : CV_8UC3, const_cast<void*>(contiguous.data()));
  if (grey)
    cv::cvtColor(view, input.pixels, cv::COLOR_GRAY2RGB);  // as PIL's convert('RGB')
  else
    input.pixels = view;
  out.push_back(std::move(input));
}

}  // namespace

std::string fspath(const py::handle& path) {
  return py::module_::import("os").attr("fspath")(path).cast<std::string>();
}

py::array to_numpy(const at::Tensor& tensor) {
  at::Tensor held = tensor.device().is_cpu() ? tensor : tensor.cpu();
  if (held.scalar_type() == at::kBFloat16) held = held.to(at::kFloat);
  const py::dtype dtype = numpy_dtype(held.scalar_type());
  std::vector<py::ssize_t> shape(held.sizes().begin(), held.sizes().end());
  std::vector<py::ssize_t> strides;
  for (const int64_t stride : held.strides()) strides.push_back(stride * static_cast<py::ssize_t>(held.element_size()));
  auto* owner = new at::Tensor(held);
  const py::capsule keep(owner, [](void* pointer) { delete static_cast<at::Tensor*>(pointer); });
  return py::array(dtype, shape, strides, held.data_ptr(), keep);
}

py::array to_numpy(const cv::Mat& rgb) {
  auto* owner = new cv::Mat(rgb.isContinuous() ? rgb : rgb.clone());
  const py::capsule keep(owner, [](void* pointer) { delete static_cast<cv::Mat*>(pointer); });
  return py::array_t<uint8_t>({owner->rows, owner->cols, 3}, owner->data, keep);
}

at::Tensor tensor_view(const py::array& array, const std::string& what) {
  const at::ScalarType type = tensor_dtype(array.dtype(), what);
  std::vector<int64_t> sizes, strides;
  for (py::ssize_t d = 0; d < array.ndim(); ++d) {
    if (array.strides(d) % array.itemsize() != 0)
      throw py::value_error(what + ": an array whose strides are not whole elements (np.ascontiguousarray it)");
    sizes.push_back(array.shape(d));
    strides.push_back(array.strides(d) / array.itemsize());
  }
  return at::from_blob(const_cast<void*>(array.data()), sizes, strides, at::TensorOptions(type));
}

std::vector<ImageInput> image_inputs(const py::handle& images, const std::string& argument) {
  std::vector<ImageInput> out;
  auto add = [&](const py::handle& item) {
    if (is_path(item)) {
      ImageInput input;
      input.path = input.name = fspath(item);
      out.push_back(std::move(input));
    } else if (py::isinstance<py::array>(item) || py::hasattr(item, "__array_interface__")) {
      add_array(out, py::array::ensure(item), argument);
    } else {
      throw py::value_error(argument + ": an image is a path or an HxWx3 uint8 array, got " + describe(item));
    }
  };
  if (py::isinstance<py::list>(images) || py::isinstance<py::tuple>(images)) {
    for (const py::handle item : images) add(item);
  } else {
    add(images);
  }
  if (out.empty()) throw py::value_error(argument + ": no images given");
  return out;
}

std::vector<std::string> text_inputs(const py::handle& texts, const std::string& argument) {
  std::vector<std::string> out;
  auto add = [&](const py::handle& item) {
    if (!py::isinstance<py::str>(item))
      throw py::value_error(argument + ": a text is a str, got " + describe(item));
    out.push_back(item.cast<std::string>());
  };
  if (py::isinstance<py::str>(texts)) {
    add(texts);
  } else if (py::isinstance<py::list>(texts) || py::isinstance<py::tuple>(texts)) {
    for (const py::handle item : texts) add(item);
  } else {
    throw py::value_error(argument + ": give a str or a list of str, got " + describe(texts));
  }
  if (out.empty()) throw py::value_error(argument + ": no texts given");
  return out;
}

at::Tensor transform_images(const std::vector<ImageInput>& images, int64_t begin, int64_t end, int image_res) {
  std::vector<std::string> paths;
  for (int64_t i = begin; i < end; ++i)
    if (!images[static_cast<size_t>(i)].path.empty()) paths.push_back(images[static_cast<size_t>(i)].path);
  // Files are decoded in parallel, as the CLI decodes them.
  const at::Tensor decoded = paths.empty() ? at::Tensor() : vision::load_test_pixels(paths, image_res);
  if (static_cast<int64_t>(paths.size()) == end - begin) return decoded;
  std::vector<at::Tensor> out;
  int64_t next_path = 0;
  for (int64_t i = begin; i < end; ++i) {
    const ImageInput& image = images[static_cast<size_t>(i)];
    out.push_back(image.path.empty()
                      ? vision::to_pixel_tensor(vision::resize_bicubic_pil(image.pixels, image_res, image_res))
                      : decoded[next_path++]);
  }
  return at::stack(out);
}

}  // namespace albef::python
