#pragma once
// What `albef classify` keeps of each image, its CSV file (written as it
// goes, continued with --append) and the accuracy against ground truth.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace albef::classify {

/// One image's best labels, best first.
struct Classified {
  std::string image;
  std::vector<std::string> labels;
  std::vector<double> probabilities;  ///< ITC softmax
  std::vector<double> match;          ///< ITM match probability (re-ranked labels; NaN past them), or empty
};

/// The CSV header for `top` labels (with ITM columns when `rerank`).
std::vector<std::string> csv_header(int64_t top, bool rerank);
/// One row: image, then label_i, probability_i (and match_i) for the first `top` labels.
std::string csv_row(const Classified& result, int64_t top, bool rerank);

/// The rows of a CSV written by classify with this header, for --append. A
/// last line cut off by a kill (no final newline) is removed from the file,
/// so its image is classified again. A header that differs (other --top or
/// --rerank) is an error naming the file.
std::vector<Classified> read_csv_for_append(const std::string& path, const std::vector<std::string>& header);

/// Ground truth: image -> label, from JSON ({"path or file name": "label"}).
/// A label outside `labels` is an error naming the file and the image.
struct GroundTruth {
  std::string file;
  std::vector<std::pair<std::string, std::string>> entries;
  /// The true label of `image` (matched by the path as given, then by its
  /// file name), or empty.
  std::string label_of(const std::string& image) const;
};
GroundTruth read_ground_truth(const std::string& path, const std::vector<std::string>& labels);

/// Top-1 / top-5 accuracy, per-label top-1 accuracy and the confusion matrix
/// (rows: true label, columns: predicted top-1) of `results` that have a true
/// label; writes the matrix as a PNG to `png`.
nlohmann::json accuracy(const std::vector<Classified>& results, const GroundTruth& truth,
                        const std::vector<std::string>& labels, const std::string& png);

}  // namespace albef::classify
