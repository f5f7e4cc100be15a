#include "albef/serve/image_index.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"

#include <ATen/ATen.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>

#include <unistd.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace albef::serve {
namespace {

constexpr int kHnswNeighbours = 32;
constexpr int kHnswSearchDepth = 128;
// faiss wants about 39 training points per cell.
constexpr int64_t kTrainPointsPerCell = 39;

int64_t ivf_cells(int64_t expected_size) {
  const auto cells = static_cast<int64_t>(std::lround(4.0 * std::sqrt(static_cast<double>(expected_size))));
  return std::max<int64_t>(1, std::min(cells, expected_size / kTrainPointsPerCell));
}

// Cells probed per query: recall over speed for the gallery sizes an
// albef user meets (a tenth of a 100k gallery's cells still answers in ~1 ms).
void set_search_depth(faiss::Index* index) {
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index))
    ivf->nprobe = std::max<size_t>(8, ivf->nlist / 16);
  else if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index))
    hnsw->hnsw.efSearch = kHnswSearchDepth;
}

at::Tensor contiguous_float(const at::Tensor& features, int64_t dim, const char* what) {
  ALBEF_CHECK(features.dim() == 2 && features.size(1) == dim, what, " must be [n, ", dim, "], got ",
              features.sizes());
  return features.to(at::kCPU, at::kFloat).contiguous();
}

// A gallery is three files whose counts must agree: the faiss index, .paths
// and .json. save() writes the new three beside the old ones, then a commit
// note naming them, then renames them into place and removes the note. A save
// killed before the note leaves the previous gallery; one killed after it is
// finished by the next load(), so a gallery is never half old, half new.
std::array<std::string, 3> gallery_files(const std::string& path) { return {path, path + ".paths", path + ".json"}; }

std::string commit_note(const std::string& path) { return path + ".commit"; }

void finish_save(const std::string& path) {
  const std::string note = commit_note(path);
  std::string suffix = read_file(note);
  while (!suffix.empty() && std::isspace(static_cast<unsigned char>(suffix.back()))) suffix.pop_back();
  if (suffix.rfind(".new.", 0) != 0) fail(note, ": not a gallery commit note; remove it and build the gallery again");
  for (const std::string& file : gallery_files(path)) {
    const std::string fresh = file + suffix;
    if (!std::filesystem::exists(fresh)) continue;  // renamed before the interruption
    if (std::rename(fresh.c_str(), file.c_str()) != 0)
      fail(path, ": cannot finish the save that was interrupted (", fresh, ": ", std::strerror(errno), ")");
  }
  std::remove(note.c_str());
}

// Left by a save that stopped before its commit note was in place (its new
// files, or the note's own temporary file, write_atomically's): the previous
// gallery stands.
void remove_unfinished_saves(const std::string& path) {
  const std::filesystem::path folder = std::filesystem::absolute(path).parent_path();
  const std::string note = std::filesystem::path(commit_note(path)).filename().string();
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(folder, error)) {
    const std::string name = entry.path().filename().string();
    const auto temporary = atomic_temporary_target(name);
    if (temporary && temporary->first == note) std::filesystem::remove(entry.path(), error);
    for (const std::string& file : gallery_files(path)) {
      const std::string prefix = std::filesystem::path(file).filename().string() + ".new.";
      if (name.rfind(prefix, 0) == 0) std::filesystem::remove(entry.path(), error);
    }
  }
}

}  // namespace

IndexKind parse_index_kind(const std::string& name) {
  if (name == "auto") return IndexKind::Auto;
  if (name == "flat") return IndexKind::Flat;
  if (name == "ivf") return IndexKind::Ivf;
  if (name == "hnsw") return IndexKind::Hnsw;
  fail("unknown index type '", name, "' (auto, flat, ivf or hnsw)");
}

ImageIndex::ImageIndex(int64_t dim, IndexKind kind, int64_t expected_size) : dim_(dim), expected_size_(expected_size) {
  ALBEF_CHECK(dim > 0, "index dimension must be positive, got ", dim);
  if (kind == IndexKind::Auto) kind = expected_size >= kAutoIvfThreshold ? IndexKind::Ivf : IndexKind::Flat;
  switch (kind) {
    case IndexKind::Flat:
      index_ = std::make_unique<faiss::IndexFlatIP>(dim);
      break;
    case IndexKind::Ivf: {
      auto ivf = std::make_unique<faiss::IndexIVFFlat>(new faiss::IndexFlatIP(dim), dim,
                                                       ivf_cells(expected_size), faiss::METRIC_INNER_PRODUCT);
      ivf->own_fields = true;
      index_ = std::move(ivf);
      break;
    }
    case IndexKind::Hnsw:
      index_ = std::make_unique<faiss::IndexHNSWFlat>(dim, kHnswNeighbours, faiss::METRIC_INNER_PRODUCT);
      break;
    case IndexKind::Auto:
      break;
  }
  set_search_depth(index_.get());
}

ImageIndex::~ImageIndex() = default;
ImageIndex::ImageIndex(ImageIndex&&) noexcept = default;
ImageIndex& ImageIndex::operator=(ImageIndex&&) noexcept = default;

ImageIndex ImageIndex::load(const std::string& path) {
  if (std::filesystem::exists(commit_note(path))) finish_save(path);
  if (!std::filesystem::exists(path)) fail_missing(path, ": no such image index (`albef index` writes one)");
  ImageIndex out;
  const nlohmann::json meta = nlohmann::json::parse(read_file(path + ".json"), nullptr, false);
  if (meta.is_discarded() || !meta.is_object() || meta.value("format", "") != "albef-image-index")
    fail(path, ".json: not an albef image index description");
  try {
    out.index_.reset(faiss::read_index(path.c_str()));
  } catch (const faiss::FaissException& e) {
    fail(path, ": not a faiss index (", e.what(), ")");
  }
  out.dim_ = out.index_->d;
  set_search_depth(out.index_.get());
  std::istringstream lines(read_file(path + ".paths"));
  for (std::string line; std::getline(lines, line);) out.paths_.push_back(line);
  if (out.size() != out.index_->ntotal || meta.value("count", int64_t{-1}) != out.size())
    fail(path, ": the index holds ", out.index_->ntotal, " images, ", path, ".paths ", out.size(), " and ", path,
         ".json says ", meta.value("count", int64_t{-1}), "; rebuild it");
  out.info_ = meta.value("info", nlohmann::json::object());
  return out;
}

void ImageIndex::save(const std::string& path) const {
  if (std::filesystem::exists(commit_note(path))) finish_save(path);
  remove_unfinished_saves(path);
  const std::string suffix = str_cat(".new.", ::getpid());
  const std::array<std::string, 3> files = gallery_files(path);
  const nlohmann::json meta = {{"format", "albef-image-index"}, {"version", 1}, {"dim", dim_},
                               {"count", size()},             {"kind", kind_name()}, {"info", info_}};
  try {
    faiss::write_index(index_.get(), (files[0] + suffix).c_str());
    std::ofstream paths(files[1] + suffix);
    for (const auto& image : paths_) paths << image << "\n";
    paths.close();
    if (!paths) fail(files[1] + suffix, ": write failed");
    std::ofstream description(files[2] + suffix);
    description << meta.dump(1) << "\n";
    description.close();
    if (!description) fail(files[2] + suffix, ": write failed");
  } catch (const faiss::FaissException& e) {
    remove_unfinished_saves(path);
    fail(path, ": cannot write the index (", e.what(), ")");
  } catch (...) {
    remove_unfinished_saves(path);
    throw;
  }
  write_atomically(commit_note(path), [&](const std::string& tmp) {
    std::ofstream note(tmp);
    note << suffix << "\n";
    note.close();
    if (!note) fail(tmp, ": write failed");
  });
  finish_save(path);
}

void ImageIndex::add(const at::Tensor& features, const std::vector<std::string>& paths) {
  const at::Tensor x = contiguous_float(features, dim_, "features");
  ALBEF_CHECK(x.size(0) == static_cast<int64_t>(paths.size()), x.size(0), " features for ", paths.size(), " paths");
  for (const auto& image : paths)
    if (image.find('\n') != std::string::npos) fail("image path with a line break cannot be indexed: ", image);
  if (x.size(0) == 0) return;
  if (!index_->is_trained) {
    const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get());
    if (ivf && x.size(0) < static_cast<int64_t>(ivf->nlist))
      fail("an IVF index of ", ivf->nlist, " cells needs at least that many images to train on, got ", x.size(0));
    index_->train(x.size(0), x.data_ptr<float>());
  }
  index_->add(x.size(0), x.data_ptr<float>());
  paths_.insert(paths_.end(), paths.begin(), paths.end());
}

std::vector<std::vector<IndexHit>> ImageIndex::search(const at::Tensor& queries, int64_t k) const {
  const at::Tensor q = contiguous_float(queries, dim_, "queries");
  k = std::min(k, size());
  std::vector<std::vector<IndexHit>> hits(static_cast<size_t>(q.size(0)));
  if (k <= 0 || q.size(0) == 0) return hits;
  std::vector<float> scores(static_cast<size_t>(q.size(0) * k));
  std::vector<faiss::Index::idx_t> ids(scores.size());
  index_->search(q.size(0), q.data_ptr<float>(), k, scores.data(), ids.data());
  for (int64_t i = 0; i < q.size(0); ++i)
    for (int64_t j = 0; j < k; ++j) {
      const size_t at = static_cast<size_t>(i * k + j);
      if (ids[at] >= 0) hits[static_cast<size_t>(i)].push_back({ids[at], scores[at]});  // -1: fewer found
    }
  return hits;
}

int64_t ImageIndex::training_size() const {
  const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get());
  if (!ivf || ivf->is_trained) return 0;
  return std::max(static_cast<int64_t>(ivf->nlist), std::min(expected_size_, static_cast<int64_t>(ivf->nlist) * 256));
}

const std::string& ImageIndex::path(int64_t id) const {
  ALBEF_CHECK(id >= 0 && id < size(), "image id ", id, " outside the index of ", size());
  return paths_[static_cast<size_t>(id)];
}

std::string ImageIndex::kind_name() const {
  if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get())) return "ivf" + std::to_string(ivf->nlist);
  if (dynamic_cast<const faiss::IndexHNSW*>(index_.get())) return "hnsw" + std::to_string(kHnswNeighbours);
  return "flat";
}

}  // namespace albef::serve
