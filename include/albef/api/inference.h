#pragma once
/// @file inference.h
/// @brief A loaded ALBEF model ready to embed and score images and captions,
/// with the official retrieval preprocessing (test transform, pre_caption,
/// 30 tokens). This is the entry point most programs need.

#include "albef/config/config.h"
#include "albef/core/runtime.h"
#include "albef/model/albef.h"
#include "albef/text/tokenizer.h"

#include <string>
#include <vector>

namespace albef {

/// How to load and run a model for inference.
struct InferenceOptions {
  std::string config_path;      ///< task YAML (Pretrain.yaml, Retrieval_coco.yaml, ...)
  std::string checkpoint_path;  ///< official or albef-written `.pth`
  std::string text_encoder;     ///< where the vocabulary comes from, as load_config takes it
  int threads = 0;              ///< 0 = every core
  Precision precision = Precision::Fp32;
  std::string device = "cpu";
  int64_t batch_size = 32;      ///< images or texts per forward pass
  int max_text_length = 30;     ///< tokens incl. [CLS], as the official retrieval code
  int max_words = 30;           ///< pre_caption's word limit
  /// Load the image side only (ViT and vision_proj, 328 of 798 MB): for
  /// image features alone, as `albef index` needs. Text calls then throw.
  bool images_only = false;
  /// Load the text side only (embeddings, the 6 unimodal layers and
  /// text_proj, 254 of 798 MB): for text features alone. Image calls then throw.
  bool texts_only = false;
};

/// ITC and ITM scores of one image-caption pair.
struct PairScore {
  double itc;        ///< dot product of the normalised projected CLS features
  double itm_match;  ///< softmax(itm_head(fused CLS))[1]
};

/// An ALBEF model (online encoders only) with its tokenizer, in eval mode.
class AlbefInference {
 public:
  explicit AlbefInference(const InferenceOptions& options);

  /// Normalised image features [N, embed_dim] (float32, CPU), input order.
  at::Tensor image_features(const std::vector<std::string>& image_paths);
  /// Normalised text features [M, embed_dim] (float32, CPU), input order.
  at::Tensor text_features(const std::vector<std::string>& captions);
  /// Scores image_paths[i] against captions[i] for every i. A path that
  /// appears more than once in a batch is read and encoded once.
  std::vector<PairScore> score_pairs(const std::vector<std::string>& image_paths,
                                     const std::vector<std::string>& captions);

  /// Normalised features of images already transformed ([N, 3, R, R]: 8-bit
  /// pixels as load_images gives them, or normalised float32), in batches of
  /// the options' batch size.
  at::Tensor image_features(const at::Tensor& images);
  /// Scores captions[i] against images[image_rows[i]] in one pass: each
  /// image is encoded once however many captions it has.
  std::vector<PairScore> score_images(const at::Tensor& images, const std::vector<int64_t>& image_rows,
                                      const std::vector<std::string>& captions);

  /// The official test transform of a batch of files up to its 8-bit pixels,
  /// which the image encoder normalises a pass at a time: uint8 [B, 3, R, R]
  /// (vision::normalize_pixels gives the float32 the official code feeds).
  at::Tensor load_images(const std::vector<std::string>& image_paths) const;
  /// pre_caption + tokenizer, padded to the longest caption.
  text::BatchEncoding tokenize(const std::vector<std::string>& captions) const;

  const Config& config() const { return config_; }
  const InferenceOptions& options() const { return options_; }
  const text::BertTokenizer& tokenizer() const { return tokenizer_; }
  AlbefModel& model() { return model_; }
  c10::Device device() const { return device_; }
  /// What loading the checkpoint reported (missing / unexpected keys).
  const LoadReport& load_report() const { return load_report_; }

 private:
  InferenceOptions options_;
  Config config_;
  text::BertTokenizer tokenizer_;
  c10::Device device_;
  AlbefModel model_{nullptr};
  LoadReport load_report_;
};

}  // namespace albef
