#pragma once
/// @file classify.h
/// @brief Zero-shot image classification with ALBEF's aligned features, as
/// CLIP does it: a caption per label and template ("a photo of a {}."), the
/// label's ITC text features averaged (prompt ensembling), the image's ITC
/// feature compared with each label's, softmax over the labels at the
/// checkpoint's temperature; optionally the best K labels re-scored by the
/// ITM head, which CLIP does not have.

#include "albef/api/inference.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace albef {

/// The templates used without --templates: a short list of CLIP's, the
/// first one "a photo of a {}." (also the ITM re-rank's caption).
const std::vector<std::string>& default_templates();

/// Labels from "cat,dog,horse" or from a file with one label per line (when
/// `spec` names an existing file). Blank entries are skipped; no labels, or a
/// label given twice, is an error naming the file (and lines) or the flag.
std::vector<std::string> read_labels(const std::string& spec);

/// Templates from a file, one per line, each with one "{}" where the label
/// goes; a line without it is an error naming the file and line.
std::vector<std::string> read_templates(const std::string& path);

/// The text side, computed once per run.
struct ZeroShotLabels {
  std::vector<std::string> names;
  /// [L, embed_dim] float32: each label's template captions through
  /// pre_caption and the tokenizer (as AlbefInference::text_features), their
  /// normalised ITC features averaged and normalised again.
  at::Tensor features;
  /// With ITM re-ranking: each label's first-template caption as the text
  /// encoder leaves it ([L, T, H] on the model's device) and its mask [L, T].
  at::Tensor rerank_states, rerank_mask;
};

/// Embeds the labels (texts in batches of the options' batch_size);
/// `for_rerank` also keeps what the ITM re-rank needs.
ZeroShotLabels embed_labels(AlbefInference& albef, const std::vector<std::string>& labels,
                            const std::vector<std::string>& templates, bool for_rerank);

/// Zero-shot scores of one batch of images.
struct ZeroShotScores {
  at::Tensor probabilities;  ///< [B, L] softmax(image_feat . label_feat / temp)
  /// [B, k] label indices, best first: the ITC order, the first `rerank` of
  /// them re-ordered by the ITM match probability.
  at::Tensor ranking;
  at::Tensor ranked_probabilities;  ///< [B, k] the ITC probabilities of `ranking`
  at::Tensor ranked_match;          ///< [B, k] ITM match probability (NaN past `rerank`), with re-ranking
};

/// Scores images [B, 3, R, R] (test transform) against `labels`, keeping the
/// best `top` labels (and at least `rerank`). With `rerank` > 0 each image's
/// best `rerank` labels are fused with it (its cross-attention keys and
/// values computed once for all of them) and re-ordered by the ITM match
/// probability. Runs under `precision` on the model's device.
ZeroShotScores classify_images(AlbefModel& model, const ZeroShotLabels& labels, const at::Tensor& images,
                               int64_t top, int64_t rerank = 0, Precision precision = Precision::Fp32);

/// `albef classify`'s flags.
struct ClassifyOptions {
  InferenceOptions model;
  std::string labels;                  ///< "a,b,c" or a file of labels
  std::string templates;               ///< a file of templates (default_templates() when empty)
  std::vector<std::string> images;     ///< image files
  std::string images_dir;              ///< or a folder (or a list file) of them
  int64_t top = 5;
  int64_t rerank = 0;
  int workers = 0;                     ///< image-decoding threads (0 = one per core)
  bool json = false;                   ///< print JSON instead of a table
  std::string csv;                     ///< write one row per image as it goes
  bool append = false;                 ///< continue `csv`: skip the images it already has
  std::string ground_truth;            ///< image -> label JSON: accuracies and a confusion matrix
  std::string confusion = "confusion_matrix.png";  ///< the confusion matrix PNG (with ground_truth)
};

/// Classifies every image; prints (or writes) the results and, with
/// ground truth, the accuracies. Returns the results as `--json` prints
/// them, plus "accuracy" with ground truth.
nlohmann::json run_classify(const ClassifyOptions& options);

}  // namespace albef
