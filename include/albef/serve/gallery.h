#pragma once
/// @file gallery.h
/// @brief `albef index` and `albef search`: embed a gallery of images into an
/// ImageIndex, then answer captions with the best images, ranked by ITC and
/// optionally re-ranked by the ITM head as the official evaluation does.

#include "albef/data/loader.h"
#include "albef/serve/image_index.h"
#include "albef/api/inference.h"

#include <optional>
#include <string>
#include <vector>

namespace albef::serve {

/// How `build_image_index` runs.
struct IndexBuildOptions {
  IndexKind kind = IndexKind::Auto;
  bool append = false;       ///< add to the index at the path (skipping images already in it)
  int workers = 0;           ///< image-decoding threads (0 = one per core)
  int64_t save_every = 10000;  ///< also save after every this many new images (an interrupted run loses less)
  bool progress = true;      ///< a progress line on stdout
};

/// What `build_image_index` did.
struct IndexBuildReport {
  int64_t added = 0;
  int64_t already_indexed = 0;  ///< with append: paths the index had already
  int64_t skipped = 0;          ///< unreadable images
  std::vector<data::BadSample> first_skipped;  ///< up to 10 of them
  int64_t total = 0;            ///< images in the index now
  std::string kind;             ///< the index structure ("flat", "ivf1264", ...)
  double seconds = 0;
};

/// Embeds `image_paths` (in batches of the model's batch size, decoded on
/// worker threads) and writes them to the index at `index_path`
/// (ImageIndex's three files). Unreadable images are skipped and counted.
/// With append, the index must come from a model with the same embed_dim;
/// INDEX.json records the config and checkpoint.
IndexBuildReport build_image_index(AlbefInference& albef, const std::vector<std::string>& image_paths,
                                   const std::string& index_path, const IndexBuildOptions& options);

/// One image found for a caption.
struct SearchResult {
  int64_t id = -1;
  std::string path;
  double itc = 0;                   ///< ITC similarity (normalised features' dot product)
  std::optional<double> itm_logit;  ///< re-ranked: the ITM head's match logit (the official ranking score)
  std::optional<double> itm_match;  ///< re-ranked: the ITM match probability
};

/// How `search_gallery` ranks.
struct SearchOptions {
  int64_t k = 10;       ///< results per query
  int64_t rerank = 0;   ///< re-rank this many ITC candidates with the ITM head (0 = ITC only)
};

/// The best images of the index for each caption: the ITC top
/// max(k, rerank), then (with rerank) the first `rerank` of them ordered by
/// the ITM match logit as Retrieval.py's evaluation orders them, followed by
/// the rest in ITC order. Re-ranking reads the candidate images again (the
/// index keeps only their features); a candidate that is unreadable now is
/// dropped with a warning on stderr.
std::vector<std::vector<SearchResult>> search_gallery(AlbefInference& albef, const ImageIndex& index,
                                                      const std::vector<std::string>& captions,
                                                      const SearchOptions& options);

/// A JSON array with one object per caption: {"query", "results": [{"rank",
/// "id", "path", "itc", ["itm_logit", "itm_match"]}]}.
nlohmann::json search_results_json(const std::vector<std::string>& captions,
                                   const std::vector<std::vector<SearchResult>>& results);

/// Writes a self-contained HTML page (thumbnails embedded as JPEG data) of
/// the results, atomically.
void write_search_html(const std::string& html_path, const std::vector<std::string>& captions,
                       const std::vector<std::vector<SearchResult>>& results);

}  // namespace albef::serve
