#pragma once
/// @file image_index.h
/// @brief A searchable gallery: the normalised ITC features of many images
/// in a faiss inner-product index, with each image's path, on disk as three
/// files written atomically: `INDEX` (faiss), `INDEX.paths` (one path per
/// line, line n = id n) and `INDEX.json` (what built it).
///
/// The official evaluation scores every image against every text in memory
/// (images x texts floats); an index keeps only images x embed_dim floats
/// (or less) and answers a query in well under a millisecond per 10k images,
/// so galleries of millions fit.

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace faiss {
struct Index;
}

namespace albef::serve {

/// Which faiss structure holds the features.
enum class IndexKind {
  Auto,  ///< Flat (exact) below kAutoIvfThreshold images, else IVF
  Flat,  ///< exact inner product over every image
  Ivf,   ///< inverted lists over k-means cells (trained on the first images added); approximate
  Hnsw,  ///< graph search; approximate, no training, fast appends
};

/// Galleries of at least this many images get an IVF index under Auto.
/// Below it exact search is cheap (100k images: 98 MB, 0.4 ms a caption in
/// batches, 12 ms alone, measured by `albef bench --suite index`).
constexpr int64_t kAutoIvfThreshold = 250000;

/// Parses "auto", "flat", "ivf" or "hnsw"; throws albef::Error otherwise.
IndexKind parse_index_kind(const std::string& name);

/// One search result.
struct IndexHit {
  int64_t id = -1;    ///< position in the gallery (line of INDEX.paths)
  float score = 0.f;  ///< inner product of the normalised features (ITC similarity)
};

/// A gallery of image features with their paths.
class ImageIndex {
 public:
  /// An empty index of `dim`-d features. `expected_size` (the number of
  /// images about to be added) decides the structure under Auto and the IVF
  /// cell count (about 4 sqrt(n)).
  ImageIndex(int64_t dim, IndexKind kind, int64_t expected_size);
  ~ImageIndex();
  ImageIndex(ImageIndex&&) noexcept;
  ImageIndex& operator=(ImageIndex&&) noexcept;

  /// Reads the three files of `path`; errors name the file.
  static ImageIndex load(const std::string& path);
  /// Writes the three files of `path` as one: a save cut short leaves the
  /// previous gallery, or one load() completes (see image_index.cpp).
  void save(const std::string& path) const;

  /// Adds float32 features [n, dim] (normalised) and their paths. An IVF
  /// index not trained yet is trained on these first.
  void add(const at::Tensor& features, const std::vector<std::string>& paths);
  /// How many features the first add() should bring: an untrained IVF index
  /// learns its cells from them (at most ~256 per cell); 0 once trained and
  /// for the structures that need no training.
  int64_t training_size() const;
  /// The k best images of each query [q, dim], best first (fewer when the
  /// gallery is smaller).
  std::vector<std::vector<IndexHit>> search(const at::Tensor& queries, int64_t k) const;

  int64_t size() const { return static_cast<int64_t>(paths_.size()); }
  int64_t dim() const { return dim_; }
  const std::string& path(int64_t id) const;
  /// "flat", "ivf<cells>" or "hnsw<M>".
  std::string kind_name() const;
  /// Free-form facts stored in INDEX.json (config, checkpoint, ...).
  nlohmann::json& info() { return info_; }
  const nlohmann::json& info() const { return info_; }

 private:
  ImageIndex() = default;
  int64_t dim_ = 0;
  int64_t expected_size_ = 0;
  std::unique_ptr<faiss::Index> index_;
  std::vector<std::string> paths_;
  nlohmann::json info_ = nlohmann::json::object();
};

}  // namespace albef::serve
