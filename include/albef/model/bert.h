#pragma once
/// @file bert.h
/// @brief ALBEF's text encoder (xbert.py): BERT whose layers from
/// `fusion_layer` on carry a cross-attention to the image tokens, so that
/// one stack serves as the text encoder (layers [0, fusion_layer)) and the
/// multimodal fusion encoder (layers [fusion_layer, num_hidden_layers)).
/// Module and parameter names are the official state_dict names.

#include "albef/config/config.h"
#include "albef/model/layers.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <map>
#include <utility>
#include <vector>

namespace albef {

/// `embeddings`: word + position + token type (always 0), LayerNorm.
/// SIMLA's single-stream BERT (med.py) has no token-type embeddings.
class BertEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit BertEmbeddingsImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& input_ids);
  /// From embeddings [B, L, H] instead of ids (SIMLA's MIM feeds image
  /// tokens): + position embeddings, LayerNorm.
  at::Tensor forward_embeds(const at::Tensor& inputs_embeds);
  at::Tensor position_ids;  // buffer [1, max_position_embeddings], in the state_dict as in HF
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr}, token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  double dropout;  // hidden_dropout_prob, active in train mode
};
TORCH_MODULE(BertEmbeddings);

class BertSelfAttentionImpl;

/// The image tokens [N, P, encoder_width] that fusion layers attend to.
///
/// With `keep_key_values`, each cross-attention projects the images' keys
/// and values once and every later pass over the same images reuses them.
/// Pretraining fuses one batch of images three times (ITM positives, ITM
/// negatives, MLM): sharing the projections saves two thirds of their
/// FLOPs, forward and backward, and autograd sums their gradients exactly as
/// the official per-pair projections would. Without it nothing is kept, so
/// inference holds one layer's keys and values at a time. In bf16 inference
/// the images are converted to bf16 once, for every layer's key and value
/// products, at their first use: one object serves one precision scope.
class FusionImages {
 public:
  /// `attention_mask` ([N, P], 1 = attend) masks padded positions, for
  /// states that have padding (the VQA decoder attends to the question's
  /// states): they get -1e9, as HF's invert_attention_mask. Images need none.
  explicit FusionImages(at::Tensor embeds, bool keep_key_values = false, const at::Tensor& attention_mask = {});
  const at::Tensor& embeds() const { return embeds_; }
  /// [N, 1, 1, P] float32, or undefined without an attention mask.
  const at::Tensor& additive_mask() const { return additive_mask_; }
  /// `attention`'s keys and values of every image, [N, P, hidden] each.
  std::pair<at::Tensor, at::Tensor> key_values(BertSelfAttentionImpl& attention);
  /// Those of images [begin, end) alone, computed for them.
  std::pair<at::Tensor, at::Tensor> key_values(BertSelfAttentionImpl& attention, int64_t begin, int64_t end);

 private:
  at::Tensor embeds_;
  at::Tensor product_embeds_;  // embeds_ as the key/value products read them (ops::product_input), made once
  at::Tensor additive_mask_;
  bool keep_;
  std::map<const BertSelfAttentionImpl*, std::pair<at::Tensor, at::Tensor>> kept_;
};

/// `attention.self` / `crossattention.self`: query, key, value projections.
/// Cross-attention keys/values read `encoder_width`-wide image tokens.
class BertSelfAttentionImpl : public torch::nn::Module {
 public:
  BertSelfAttentionImpl(const BertConfig& config, bool is_cross_attention);
  /// With `class_token_only`, the [CLS] row alone: [B, 1, H].
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& additive_mask, bool class_token_only = false);
  /// Text row i attends to image `image_rows[i]`; with no rows, to image i
  /// (or to the only image, whose keys then serve every row).
  at::Tensor forward_cross(const at::Tensor& hidden, FusionImages& images, const at::Tensor& image_rows);
  /// Grad-CAM (xbert's save_attention): while on, every forward keeps its
  /// attention probabilities [B, heads, Lq, Lk] (before dropout) in
  /// `attention_map`, and when they take part in a backward pass their
  /// gradient is kept too (`attention_gradients`). Off by default; on, the
  /// layer runs the generic attention path instead of the fused kernel.
  void save_attention(bool on) { save_attention_ = on; }
  const at::Tensor& attention_map() const { return attention_map_; }
  /// d loss / d attention_map after backward (undefined before).
  at::Tensor attention_gradients() const;

  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  int64_t num_heads;
  double dropout;  // attention_probs_dropout_prob, active in train mode

 private:
  /// Where multi_head_attention stores the probabilities: null when off.
  at::Tensor* recording();
  /// Keeps the gradient of the probabilities just recorded.
  void retain_recorded_gradient();
  bool save_attention_ = false;
  at::Tensor attention_map_;
};
TORCH_MODULE(BertSelfAttention);

/// `*.output` after attention and after the FFN: dense, residual, LayerNorm.
class BertResidualOutputImpl : public torch::nn::Module {
 public:
  BertResidualOutputImpl(int64_t in_features, const BertConfig& config);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& residual);
  /// The same from dense(x) computed by the caller (BertLayer's feed-forward
  /// block); in inference the sum goes over `product` (ops::add_into).
  at::Tensor add_and_norm(at::Tensor product, const at::Tensor& residual);
  /// forward(), and its output as the next sublayer's products read it
  /// (bf16 in bf16 inference), written in the same pass (ops::layer_norm_of_sum).
  std::pair<at::Tensor, at::Tensor> forward_for_products(const at::Tensor& x, const at::Tensor& residual);
  torch::nn::Linear dense{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  double dropout;  // hidden_dropout_prob, active in train mode
};
TORCH_MODULE(BertResidualOutput);

/// `attention` / `crossattention`: `self` then `output`.
class BertAttentionImpl : public torch::nn::Module {
 public:
  BertAttentionImpl(const BertConfig& config, bool is_cross_attention);
  BertSelfAttention self{nullptr};
  BertResidualOutput output{nullptr};
};
TORCH_MODULE(BertAttention);

/// `intermediate`: dense + GELU, which BertLayer applies with `output`'s
/// dense as one feed-forward block (ops::feed_forward).
class BertIntermediateImpl : public torch::nn::Module {
 public:
  explicit BertIntermediateImpl(const BertConfig& config);
  torch::nn::Linear dense{nullptr};
};
TORCH_MODULE(BertIntermediate);

/// `encoder.layer.N`.
class BertLayerImpl : public torch::nn::Module {
 public:
  BertLayerImpl(const BertConfig& config, int64_t layer_index);
  /// Null `images` skips the cross-attention (SIMLA's text mode);
  /// `image_rows` as in BertSelfAttentionImpl::forward_cross. With
  /// `class_token_only`, the [CLS] row alone [B, 1, H]: the layer's products
  /// on that row, besides every token's keys and values. `hidden` is let go
  /// once the attention has read it (moved in, it is freed before the
  /// feed-forward runs).
  at::Tensor forward(at::Tensor hidden, const at::Tensor& additive_mask, FusionImages* images,
                     const at::Tensor& image_rows, bool class_token_only = false);
  bool has_cross_attention() const { return !crossattention.is_empty(); }
  BertAttention attention{nullptr};
  BertAttention crossattention{nullptr};
  BertIntermediate intermediate{nullptr};
  BertResidualOutput output{nullptr};
};
TORCH_MODULE(BertLayer);

/// Which layers a forward pass runs (xbert's `mode`).
enum class BertMode {
  Text,        ///< layers [0, fusion_layer): the unimodal text encoder
  Fusion,      ///< layers [fusion_layer, N): input is the text encoder's output
  Multimodal,  ///< all layers, from token ids
};

/// `BertModel` without pooler (`embeddings`, `encoder.layer.N`).
class BertModelImpl : public torch::nn::Module {
 public:
  explicit BertModelImpl(const BertConfig& config);
  /// Text mode: ids [B, L] + mask [B, L] -> [B, L, H]. Single-stream
  /// (SIMLA): every layer, each without its cross-attention.
  at::Tensor forward_text(const at::Tensor& input_ids, const at::Tensor& attention_mask);
  /// forward_text's [CLS] row [B, 1, H], all a feature needs: the last text
  /// layer computes only that row (about 14% of BERT-base's text products saved).
  at::Tensor forward_text_class_token(const at::Tensor& input_ids, const at::Tensor& attention_mask);
  /// Fusion mode: text states from forward_text + image tokens -> [B, L, H].
  /// Text row i reads image `image_rows[i]` ([B] int64) if given, else image i
  /// (or the only image).
  /// `class_token_only`: the last layer computes the [CLS] row alone ([B, 1,
  /// H]; all the ITM head reads). States moved in are freed once the first
  /// layer has read them.
  at::Tensor forward_fusion(at::Tensor text_embeds, const at::Tensor& attention_mask, FusionImages& images,
                            const at::Tensor& image_rows = {}, bool class_token_only = false);
  at::Tensor forward_fusion(const at::Tensor& text_embeds, const at::Tensor& attention_mask,
                            const at::Tensor& image_embeds);
  /// Fusion layers [begin, end) only, on the states of layer begin - 1 (or
  /// of the text encoder): Grad-CAM runs the layers below its block without
  /// gradients and the rest with them.
  at::Tensor forward_fusion_layers(const at::Tensor& hidden, const at::Tensor& attention_mask, FusionImages& images,
                                   int64_t begin, int64_t end);
  /// SIMLA's MIM pass: embeddings [B, L, H] (no padding) through
  /// forward_embeds and every layer, cross-attending to `states`.
  at::Tensor forward_inputs_embeds(const at::Tensor& inputs_embeds, FusionImages& states);
  /// Multimodal mode: ids through every layer; text row i reads image
  /// `image_rows[i]` if given, the [CLS] row alone with `class_token_only`
  /// (as forward_fusion).
  at::Tensor forward_multimodal(const at::Tensor& input_ids, const at::Tensor& attention_mask, FusionImages& images,
                                const at::Tensor& image_rows = {}, bool class_token_only = false);
  /// The same against several images per text (config().images_per_text of
  /// them): fusion layer i reads `images[(i - fusion_layer) % n]`.
  at::Tensor forward_multimodal(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                const std::vector<FusionImages*>& images);
  /// Decoder mode (xbert's is_decoder): ids through every layer under a
  /// causal self-attention mask (position i sees positions j <= i that are
  /// not padding), layers from fusion_layer cross-attending to
  /// `encoder_states` (text row i to row `encoder_rows[i]` if given).
  at::Tensor forward_causal(const at::Tensor& input_ids, const at::Tensor& attention_mask, FusionImages& encoder_states,
                            const at::Tensor& encoder_rows = {});
  /// HF BERT init: normal(0, initializer_range) weights, zero biases, unit LayerNorm.
  void init_weights();
  const BertConfig& config() const { return config_; }

  BertEmbeddings embeddings{nullptr};
  std::shared_ptr<torch::nn::Module> encoder;  // a plain holder of `layer`, as in HF
  torch::nn::ModuleList layer{nullptr};

 private:
  /// Layers [begin, end); with `class_token_only` the last of them on the [CLS] row alone.
  at::Tensor run_layers(at::Tensor hidden, const at::Tensor& additive_mask, const std::vector<FusionImages*>& images,
                        const at::Tensor& image_rows, int64_t begin, int64_t end, bool class_token_only = false);
  BertConfig config_;
};
TORCH_MODULE(BertModel);

/// `cls.predictions`: transform (dense, GELU, LayerNorm) then the decoder
/// tied to the word embeddings, plus the output bias.
class BertLMPredictionHeadImpl : public torch::nn::Module {
 public:
  BertLMPredictionHeadImpl(const BertConfig& config, const at::Tensor& word_embeddings);
  at::Tensor forward(const at::Tensor& hidden);
  at::Tensor bias;
  std::shared_ptr<torch::nn::Module> transform;  // a plain holder of dense + LayerNorm
  torch::nn::Linear transform_dense{nullptr};
  torch::nn::LayerNorm transform_LayerNorm{nullptr};
  TiedLinear decoder{nullptr};
};
TORCH_MODULE(BertLMPredictionHead);

/// `BertForMaskedLM`: `bert` + `cls.predictions` (the pretraining text encoder).
class BertForMaskedLMImpl : public torch::nn::Module {
 public:
  explicit BertForMaskedLMImpl(const BertConfig& config);
  /// MLM logits [B, L, vocab] of ids run through all layers with the images.
  /// With `positions` ([N] int64 indices into the B * L tokens) only those
  /// tokens go through the head: logits [N, vocab]. The head works token by
  /// token, so this is the full result's rows, at the cost of N rows of the
  /// 30522-wide decoder instead of B * L.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask, FusionImages& images,
                     const at::Tensor& positions = {});
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask, const at::Tensor& image_embeds);
  /// BertLMHeadModel's forward (the same modules): next-token logits [B, L,
  /// vocab] of ids decoded causally against `encoder_states`
  /// (BertModelImpl::forward_causal); position t predicts token t + 1.
  at::Tensor decode(const at::Tensor& input_ids, const at::Tensor& attention_mask, FusionImages& encoder_states,
                    const at::Tensor& encoder_rows = {});
  void init_weights();
  BertModel bert{nullptr};
  BertLMPredictionHead predictions{nullptr};  // registered as cls.predictions
};
TORCH_MODULE(BertForMaskedLM);

/// xbert's BertLMHeadModel (a decoder, such as VQA's `text_decoder`) has
/// BertForMaskedLM's modules and names; it runs them through `decode`.
using BertLMHeadModel = BertForMaskedLM;
using BertLMHeadModelImpl = BertForMaskedLMImpl;

/// model_nlvr.py's text encoder over `images` images per text: every fusion
/// layer repeated `images` times (BERT-base with two images: 6 + 2 x 6 = the
/// official 18 layers), with images_per_text set.
BertConfig with_fusion_per_image(BertConfig config, int64_t images);

/// BERT's additive self-attention mask: (1 - mask) * -10000, shaped [B, 1, 1, L].
at::Tensor extended_attention_mask(const at::Tensor& attention_mask, at::ScalarType dtype);

/// The decoder's: (1 - causal * mask) * -10000, shaped [B, 1, L, L].
at::Tensor causal_attention_mask(const at::Tensor& attention_mask, at::ScalarType dtype);

}  // namespace albef
