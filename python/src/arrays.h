#pragma once
// Arrays across the boundary: tensors leave as numpy arrays that share their
// memory (the array keeps the tensor alive), numpy arrays enter as tensors
// over their buffer where the layout allows, and images come as paths or
// HxWx3 uint8 arrays.

#include <ATen/core/Tensor.h>
#include <opencv2/core.hpp>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

namespace albef::python {

namespace py = pybind11;

/// A numpy array over `tensor`'s memory (any strides; no copy) that keeps the
/// tensor alive. bfloat16, which numpy lacks, is widened to float32 (a copy).
py::array to_numpy(const at::Tensor& tensor);

/// A numpy uint8 array HxWx3 over an RGB image's pixels (no copy).
py::array to_numpy(const cv::Mat& rgb);

/// A tensor over a numpy array's buffer (no copy; valid while `array` lives),
/// for the dtypes a checkpoint can hold. Anything numpy can convert
/// (np.asarray) is accepted; other dtypes raise ValueError naming `what`.
at::Tensor tensor_view(const py::array& array, const std::string& what);

/// A str or os.PathLike as a path (os.fspath); anything else raises TypeError.
std::string fspath(const py::handle& path);

/// One image argument: a file path, or RGB pixels held by a numpy array.
struct ImageInput {
  std::string path;  ///< empty for pixels
  cv::Mat pixels;    ///< CV_8UC3 over `owner`'s buffer
  py::object owner;  ///< keeps the array alive
  std::string name;  ///< for messages: the path, or "image array #i"
};

/// Reads `images`: a path (str or os.PathLike), an HxWx3 (or HxW grey)
/// uint8 array, an NxHxWx3 array, or a list or tuple of paths and arrays.
/// Anything else raises ValueError naming `argument` and what was given.
/// Needs the GIL.
std::vector<ImageInput> image_inputs(const py::handle& images, const std::string& argument);

/// `texts`: a str or a list/tuple of str (ValueError naming `argument` otherwise).
std::vector<std::string> text_inputs(const py::handle& texts, const std::string& argument);

/// The official test transform of each image up to its 8-bit pixels, uint8
/// [N, 3, res, res] (the image encoder normalises them); paths are decoded on
/// every core. Runs without the GIL.
at::Tensor transform_images(const std::vector<ImageInput>& images, int64_t begin, int64_t end, int image_res);

}  // namespace albef::python
