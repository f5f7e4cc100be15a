#include "albef/api/inference.h"

#include "albef/core/error.h"
#include "albef/io/checkpoint.h"
#include "albef/model/itm.h"
#include "albef/vision/image.h"

#include <ATen/ATen.h>

#include <unordered_map>

namespace albef {
namespace {

// LAVIS's albef_feature_extractor saves the encoders and projections only:
// such a checkpoint embeds, but has no ITM head to score pairs with.
bool has_itm_head(const std::string& checkpoint) {
  const io::LazyCheckpoint lazy(checkpoint);  // names only: no tensor data is read
  for (const auto& [name, tensor] : io::state_dict_from(lazy.root(), checkpoint))
    if (name == "itm_head.weight") return true;
  return false;
}

}  // namespace

AlbefInference::AlbefInference(const InferenceOptions& options)
    : options_(options),
      config_(load_config(options.config_path, options.text_encoder)),
      tokenizer_(config_.vocab),
      device_(parse_device(options.device)) {
  ALBEF_CHECK(options.batch_size > 0, "batch_size must be positive, got ", options.batch_size);
  init_runtime(options.threads);
  if (tokenizer_.vocab_size() != config_.bert.vocab_size)
    fail(config_.vocab, ": the vocabulary has ", tokenizer_.vocab_size(), " tokens but ", config_.bert_config,
         " says vocab_size ", config_.bert.vocab_size);
  ALBEF_CHECK(!(options.images_only && options.texts_only), "images_only and texts_only exclude each other");
  // Inference needs neither the momentum encoders nor the MLM head; features of one modality not even the other side.
  ModelOptions model;
  model.text_encoder = TextEncoderLayout::Plain;
  model.text_side = !options.images_only;
  model.image_side = !options.texts_only;
  if (model.text_side && model.image_side && has_itm_head(options.checkpoint_path)) model.heads = {itm_head_spec()};
  model_ = load_inference_model(config_, model, options.checkpoint_path, device_, options.precision, &load_report_);
}

at::Tensor AlbefInference::load_images(const std::vector<std::string>& image_paths) const {
  return vision::load_test_pixels(image_paths, config_.image_res);
}

text::BatchEncoding AlbefInference::tokenize(const std::vector<std::string>& captions) const {
  std::vector<std::string> cleaned;
  cleaned.reserve(captions.size());
  for (const auto& caption : captions) cleaned.push_back(text::pre_caption(caption, options_.max_words));
  return tokenizer_.encode_batch(cleaned, options_.max_text_length, text::Padding::Longest);
}

at::Tensor AlbefInference::image_features(const std::vector<std::string>& image_paths) {
  std::vector<at::Tensor> features;
  for (size_t begin = 0; begin < image_paths.size(); begin += options_.batch_size) {
    const size_t end = std::min(image_paths.size(), begin + options_.batch_size);
    features.push_back(image_features(load_images({image_paths.begin() + begin, image_paths.begin() + end})));
  }
  if (features.empty()) return at::empty({0, config_.embed_dim});
  return at::cat(features);
}

at::Tensor AlbefInference::text_features(const std::vector<std::string>& captions) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> features;
  for (size_t begin = 0; begin < captions.size(); begin += options_.batch_size) {
    const size_t end = std::min(captions.size(), begin + options_.batch_size);
    const text::BatchEncoding batch = tokenize({captions.begin() + begin, captions.begin() + end});
    PrecisionGuard precision(options_.precision, device_);
    features.push_back(model_->encode_text_features(batch.input_ids.to(device_), batch.attention_mask.to(device_))
                           .to(at::kCPU, at::kFloat));
  }
  if (features.empty()) return at::empty({0, config_.embed_dim});
  return at::cat(features);
}

std::vector<PairScore> AlbefInference::score_pairs(const std::vector<std::string>& image_paths,
                                                   const std::vector<std::string>& captions) {
  ALBEF_CHECK(image_paths.size() == captions.size(), "got ", image_paths.size(), " images but ", captions.size(),
              " captions");
  std::vector<PairScore> scores;
  for (size_t begin = 0; begin < captions.size(); begin += options_.batch_size) {
    const size_t end = std::min(captions.size(), begin + options_.batch_size);
    // An image paired with several captions is read and encoded once.
    std::vector<std::string> distinct;
    std::unordered_map<std::string, int64_t> row_of;
    std::vector<int64_t> rows;
    for (size_t i = begin; i < end; ++i) {
      const auto [it, added] = row_of.emplace(image_paths[i], static_cast<int64_t>(distinct.size()));
      if (added) distinct.push_back(image_paths[i]);
      rows.push_back(it->second);
    }
    const std::vector<PairScore> batch =
        score_images(load_images(distinct), rows, {captions.begin() + begin, captions.begin() + end});
    scores.insert(scores.end(), batch.begin(), batch.end());
  }
  return scores;
}

at::Tensor AlbefInference::image_features(const at::Tensor& images) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> features;
  for (int64_t begin = 0; begin < images.size(0); begin += options_.batch_size) {
    const at::Tensor batch = images.slice(0, begin, std::min(images.size(0), begin + options_.batch_size)).to(device_);
    PrecisionGuard precision(options_.precision, device_);
    features.push_back(model_->encode_image_features(batch).to(at::kCPU, at::kFloat));
  }
  if (features.empty()) return at::empty({0, config_.embed_dim});
  return at::cat(features);
}

std::vector<PairScore> AlbefInference::score_images(const at::Tensor& images, const std::vector<int64_t>& image_rows,
                                                    const std::vector<std::string>& captions) {
  ALBEF_CHECK(image_rows.size() == captions.size(), "got ", image_rows.size(), " image rows but ", captions.size(),
              " captions");
  for (int64_t row : image_rows)
    ALBEF_CHECK(row >= 0 && row < images.size(0), "image row ", row, " outside the ", images.size(0), " images");
  if (!model_->has_head("itm_head"))
    fail(options_.checkpoint_path, ": no itm_head (a feature extractor's checkpoint: its features embed, but scoring "
         "pairs needs a pretraining or retrieval checkpoint)");
  if (captions.empty()) return {};
  at::NoGradGuard no_grad;
  const at::Tensor rows = at::tensor(image_rows, at::TensorOptions().dtype(at::kLong)).to(device_);
  const text::BatchEncoding batch = tokenize(captions);
  const at::Tensor mask = batch.attention_mask.to(device_);
  PrecisionGuard precision(options_.precision, device_);
  const at::Tensor image_embeds = model_->encode_image(images.to(device_));
  const at::Tensor text_embeds = model_->encode_text(batch.input_ids.to(device_), mask);
  const at::Tensor itc = (model_->image_feature(image_embeds).index_select(0, rows) * model_->text_feature(text_embeds))
                             .sum(-1)
                             .to(at::kCPU, at::kDouble);
  // Each image's cross-attention keys and values serve all its captions
  // (one image for the whole batch: broadcast without a copy per caption).
  FusionImages fusion_images(image_embeds);
  const at::Tensor logits = itm_logits(model_, text_embeds, mask, fusion_images, images.size(0) == 1 ? at::Tensor() : rows);
  const at::Tensor itm = at::softmax(logits, -1).select(1, 1).to(at::kCPU, at::kDouble);
  std::vector<PairScore> scores;
  for (int64_t i = 0; i < itc.size(0); ++i) scores.push_back({itc[i].item<double>(), itm[i].item<double>()});
  return scores;
}

}  // namespace albef
