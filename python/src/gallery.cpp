#include "gallery.h"

#include "arrays.h"
#include "bindings.h"

#include <ATen/ATen.h>
#include <pybind11/stl.h>

#include <limits>

namespace albef::python {

Gallery::Gallery(const std::string& path)
    : path_(path), index_(std::make_shared<serve::ImageIndex>(serve::ImageIndex::load(path))) {}

namespace {

using py::literals::operator""_a;

// faiss's answer: scores float32 [M, k] and ids int64 [M, k], best first,
// padded with -inf and -1 where the gallery has fewer than k images.
py::tuple search_features(const Gallery& gallery, const py::object& queries, int64_t k) {
  if (k < 1) throw py::value_error("search: k must be at least 1, got " + std::to_string(k));
  const auto array = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(queries);
  if (!array) throw py::value_error("search: queries must be a float array [M, dim] (Model.embed_texts gives one)");
  const int64_t dim = gallery.index().dim();
  const bool one = array.ndim() == 1;
  if (!((one && array.shape(0) == dim) || (array.ndim() == 2 && array.shape(1) == dim)))
    throw py::value_error("search: queries must be [M, " + std::to_string(dim) + "] or [" + std::to_string(dim) +
                          "] (the gallery's features are " + std::to_string(dim) + "-d), got " +
                          std::to_string(array.ndim()) + "-d array of shape (" + std::to_string(array.shape(0)) +
                          (array.ndim() > 1 ? ", " + std::to_string(array.shape(1)) : std::string(",")) + ")");
  const int64_t rows = one ? 1 : array.shape(0);
  at::Tensor scores = at::full({rows, k}, -std::numeric_limits<float>::infinity(), at::kFloat);
  at::Tensor ids = at::full({rows, k}, -1, at::kLong);
  {
    py::gil_scoped_release release;
    const at::Tensor features = at::from_blob(const_cast<float*>(array.data()), {rows, dim}, at::kFloat);
    const auto hits = gallery.index().search(features, k);
    for (int64_t q = 0; q < rows; ++q)
      for (size_t j = 0; j < hits[static_cast<size_t>(q)].size(); ++j) {
        scores[q][static_cast<int64_t>(j)] = hits[static_cast<size_t>(q)][j].score;
        ids[q][static_cast<int64_t>(j)] = hits[static_cast<size_t>(q)][j].id;
      }
  }
  return py::make_tuple(to_numpy(scores), to_numpy(ids));
}

}  // namespace

void bind_gallery(py::module_& module) {
  py::class_<Gallery>(module, "Gallery", R"doc(
An image gallery indexed by `albef index` (the index file and its .json and
.paths beside it): normalised ITC image features in a faiss index.

Gallery(path)
)doc")
      .def(py::init([](const py::object& path) {
             return std::make_unique<Gallery>(fspath(path));
           }),
           "path"_a)
      .def("search", &search_features, "queries"_a, "k"_a = 10,
           "The k images closest to each query feature (ITC similarity), as faiss answers:\n"
           "(scores float32 [M, k], ids int64 [M, k]), best first, -inf / -1 where fewer than k exist.\n"
           "queries: float [M, dim] or [dim], e.g. Model.embed_texts(captions).")
      .def("path", [](const Gallery& g, int64_t id) {
             if (id < 0 || id >= g.index().size())
               throw py::index_error("image id " + std::to_string(id) + " is not in the gallery (0.." +
                                     std::to_string(g.index().size() - 1) + ")");
             return g.index().path(id);
           }, "id"_a, "The image file of an id.")
      .def_property_readonly("paths", [](const Gallery& g) {
             std::vector<std::string> paths;
             for (int64_t i = 0; i < g.index().size(); ++i) paths.push_back(g.index().path(i));
             return paths;
           }, "Every image's file, in id order.")
      .def_property_readonly("dim", [](const Gallery& g) { return g.index().dim(); }, "The features' width.")
      .def_property_readonly("kind", [](const Gallery& g) { return g.index().kind_name(); },
                             "The faiss structure (flat, ivfN, hnsw).")
      .def("__len__", [](const Gallery& g) { return g.index().size(); })
      .def("__repr__", [](const Gallery& g) {
        return "albef.Gallery('" + g.path() + "', images=" + std::to_string(g.index().size()) +
               ", dim=" + std::to_string(g.index().dim()) + ", kind='" + g.index().kind_name() + "')";
      });
}

}  // namespace albef::python
