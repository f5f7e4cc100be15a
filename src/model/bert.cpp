#include "albef/model/bert.h"

#include "albef/core/error.h"
#include "albef/model/albef.h"
#include "core/rows.h"
#include "ops/dropout.h"
#include "ops/linear.h"
#include "ops/linear_int8.h"

#include <ATen/ATen.h>

#include <tuple>

namespace albef {
namespace nn = torch::nn;

at::Tensor extended_attention_mask(const at::Tensor& attention_mask, at::ScalarType dtype) {
  return (1.0 - attention_mask.to(dtype).unsqueeze(1).unsqueeze(2)) * -10000.0;
}

at::Tensor causal_attention_mask(const at::Tensor& attention_mask, at::ScalarType dtype) {
  const int64_t length = attention_mask.size(1);
  const at::Tensor causal = at::ones({length, length}, attention_mask.options().dtype(dtype)).tril();
  return (1.0 - causal.unsqueeze(0).unsqueeze(0) * attention_mask.to(dtype).unsqueeze(1).unsqueeze(2)) * -10000.0;
}

namespace {

// A float32 table whatever the default dtype. A bf16 inference model is built under a bf16 default
// (build_bf16_model) and keeps its tables in float32: made in bf16 first, the word embeddings would then
// be widened with both copies alive, 47 MB above the loaded model's peak.
nn::Embedding float32_table(nn::EmbeddingOptions options) {
  options._weight(at::empty({options.num_embeddings(), options.embedding_dim()}, at::kFloat));
  nn::Embedding table(options);
  table->reset_parameters();  // Embedding's own initialisation, which it skips for a given weight
  table->options._weight({});  // a clone() would otherwise share this tensor rather than copy it
  return table;
}

}  // namespace

BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& config) : dropout(config.hidden_dropout_prob) {
  position_ids = register_buffer("position_ids", at::arange(config.max_position_embeddings).unsqueeze(0));
  word_embeddings = register_module(
      "word_embeddings",
      float32_table(nn::EmbeddingOptions(config.vocab_size, config.hidden_size).padding_idx(config.pad_token_id)));
  position_embeddings = register_module(
      "position_embeddings", float32_table(nn::EmbeddingOptions(config.max_position_embeddings, config.hidden_size)));
  if (!config.single_stream)
    token_type_embeddings = register_module(
        "token_type_embeddings", float32_table(nn::EmbeddingOptions(config.type_vocab_size, config.hidden_size)));
  LayerNorm = register_module("LayerNorm",
                              nn::LayerNorm(nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
}

at::Tensor BertEmbeddingsImpl::forward(const at::Tensor& input_ids) {
  const int64_t length = input_ids.size(1);
  ALBEF_CHECK(length <= position_ids.size(1), "sequence of ", length, " tokens exceeds max_position_embeddings ",
              position_ids.size(1));
  at::Tensor x = word_embeddings->forward(input_ids);
  // Token type is always 0 in ALBEF: add row 0 instead of gathering zeros.
  if (token_type_embeddings) x = x + token_type_embeddings->weight[0];
  return forward_embeds(x);
}

at::Tensor BertEmbeddingsImpl::forward_embeds(const at::Tensor& inputs_embeds) {
  ALBEF_CHECK(inputs_embeds.dim() == 3 && inputs_embeds.size(2) == LayerNorm->options.normalized_shape()[0],
              "inputs_embeds must be [B, L, hidden], got ", inputs_embeds.sizes());
  const int64_t length = inputs_embeds.size(1);
  ALBEF_CHECK(length <= position_ids.size(1), "sequence of ", length, " tokens exceeds max_position_embeddings ",
              position_ids.size(1));
  // med.py:105 adds in place into the caller's tensor; out of place here gives the same values and gradients.
  const at::Tensor x = inputs_embeds + position_embeddings->weight.slice(0, 0, length);
  return ops::dropout(LayerNorm->forward(x), dropout, is_training());
}

BertSelfAttentionImpl::BertSelfAttentionImpl(const BertConfig& config, bool is_cross_attention)
    : num_heads(config.num_attention_heads), dropout(config.attention_probs_dropout_prob) {
  const int64_t kv_width = is_cross_attention ? config.encoder_width : config.hidden_size;
  query = register_module("query", ops::encoder_linear(config.hidden_size, config.hidden_size));
  key = register_module("key", ops::encoder_linear(kv_width, config.hidden_size));
  value = register_module("value", ops::encoder_linear(kv_width, config.hidden_size));
}

at::Tensor* BertSelfAttentionImpl::recording() { return save_attention_ ? &attention_map_ : nullptr; }

void BertSelfAttentionImpl::retain_recorded_gradient() {
  if (save_attention_ && attention_map_.requires_grad()) attention_map_.retain_grad();
}

at::Tensor BertSelfAttentionImpl::attention_gradients() const {
  return attention_map_.defined() ? attention_map_.grad() : at::Tensor();
}

at::Tensor BertSelfAttentionImpl::forward(const at::Tensor& hidden, const at::Tensor& additive_mask,
                                          bool class_token_only) {
  const auto feeds = ops::Feeds::product;
  const at::Tensor input = ops::product_input(hidden);
  // Every token's keys and values; the queries of every token or of [CLS] alone.
  const at::Tensor queries = class_token_only ? input.slice(1, 0, 1).contiguous() : input;
  at::Tensor out = multi_head_attention(ops::linear(*query, queries, feeds), ops::linear(*key, input, feeds),
                                        ops::linear(*value, input, feeds), num_heads, additive_mask,
                                        is_training() ? dropout : 0.0, recording());
  retain_recorded_gradient();
  return out;
}

FusionImages::FusionImages(at::Tensor embeds, bool keep_key_values, const at::Tensor& attention_mask)
    : embeds_(std::move(embeds)), keep_(keep_key_values) {
  if (attention_mask.defined()) {
    ALBEF_CHECK(attention_mask.dim() == 2 && attention_mask.size(0) == embeds_.size(0) &&
                    attention_mask.size(1) == embeds_.size(1),
                "the attention mask [", attention_mask.sizes(), "] does not match the states [", embeds_.sizes(), "]");
    additive_mask_ = (1.0 - attention_mask.to(at::kFloat).unsqueeze(1).unsqueeze(2)) * -1e9;
  }
}

std::pair<at::Tensor, at::Tensor> FusionImages::key_values(BertSelfAttentionImpl& attention) {
  if (auto kept = kept_.find(&attention); kept != kept_.end()) return kept->second;
  std::pair<at::Tensor, at::Tensor> projected = key_values(attention, 0, embeds_.size(0));
  if (keep_) kept_.emplace(&attention, projected);
  return projected;
}

std::pair<at::Tensor, at::Tensor> FusionImages::key_values(BertSelfAttentionImpl& attention, int64_t begin,
                                                           int64_t end) {
  if (!product_embeds_.defined()) product_embeds_ = ops::product_input(embeds_);  // one conversion for all layers
  const at::Tensor images = product_embeds_.slice(0, begin, end);
  return {ops::linear(*attention.key, images, ops::Feeds::product),
          ops::linear(*attention.value, images, ops::Feeds::product)};
}

at::Tensor BertSelfAttentionImpl::forward_cross(const at::Tensor& hidden, FusionImages& images,
                                                const at::Tensor& image_rows) {
  // ALBEF's image attention mask is all ones (no additive mask); padded states have one.
  const at::Tensor& mask = images.additive_mask();
  const int64_t rows = hidden.size(0);
  if (image_rows.defined())
    ALBEF_CHECK(image_rows.dim() == 1 && image_rows.size(0) == rows, "one image row per text is needed: ",
                image_rows.sizes(), " rows for ", rows, " texts");
  // Texts that read an image each (ITM pairs, re-ranking's candidates) attend in inference a few at a time,
  // about the inference tokens per pass of image states: their keys and values (a pass of 34 ITM pairs:
  // 27 MB in bf16 per layer) exist for those texts alone, as they would for a batch of that many.
  const bool image_per_text = image_rows.defined() || (images.embeds().size(0) == rows && rows > 1);
  const int64_t budget = inference_tokens_per_pass(*this);
  const int64_t per_pass = std::max<int64_t>(1, budget / std::max<int64_t>(1, images.embeds().size(1)));
  const int64_t step = image_per_text && budget > 0 && !recording() ? per_pass : rows;
  const at::Tensor queries = ops::linear(*query, hidden, ops::Feeds::product);
  at::Tensor all_keys, all_values;  // every image's, where the texts pick theirs by row or share one
  if (image_rows.defined() || step >= rows) std::tie(all_keys, all_values) = images.key_values(*this);
  const auto attend = [&](int64_t begin, int64_t end) {
    at::Tensor keys = all_keys, values = all_values, pass_mask = mask;
    if (image_rows.defined()) {
      const at::Tensor pass_rows = image_rows.slice(0, begin, end);
      keys = keys.index_select(0, pass_rows);
      values = values.index_select(0, pass_rows);
      if (mask.defined()) pass_mask = mask.index_select(0, pass_rows);
    } else if (!keys.defined()) {
      std::tie(keys, values) = images.key_values(*this, begin, end);
      if (mask.defined()) pass_mask = mask.slice(0, begin, end);
    }
    if (pass_mask.defined() && pass_mask.size(0) != end - begin)
      pass_mask = pass_mask.expand({end - begin, -1, -1, -1}).contiguous();
    return multi_head_attention(queries.slice(0, begin, end), keys, values, num_heads, pass_mask,
                                is_training() ? dropout : 0.0, recording());
  };
  at::Tensor out;
  if (step >= rows) {
    out = attend(0, rows);
  } else {
    for (int64_t begin = 0; begin < rows; begin += step) {
      const int64_t end = std::min(rows, begin + step);
      write_rows(out, rows, begin, attend(begin, end));
    }
  }
  retain_recorded_gradient();
  return out;
}

BertResidualOutputImpl::BertResidualOutputImpl(int64_t in_features, const BertConfig& config)
    : dropout(config.hidden_dropout_prob) {
  dense = register_module("dense", ops::encoder_linear(in_features, config.hidden_size));
  LayerNorm = register_module(
      "LayerNorm", nn::LayerNorm(nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
}

at::Tensor BertResidualOutputImpl::forward(const at::Tensor& x, const at::Tensor& residual) {
  return add_and_norm(ops::linear(*dense, x), residual);
}

at::Tensor BertResidualOutputImpl::add_and_norm(at::Tensor product, const at::Tensor& residual) {
  if (!is_training()) return LayerNorm->forward(ops::add_into(std::move(product), residual));
  return LayerNorm->forward(ops::dropout(product, dropout, /*training=*/true) + residual);
}

std::pair<at::Tensor, at::Tensor> BertResidualOutputImpl::forward_for_products(const at::Tensor& x,
                                                                               const at::Tensor& residual) {
  if (is_training()) {  // dropout
    const at::Tensor out = forward(x, residual);
    return {out, out};
  }
  return ops::layer_norm_of_sum(residual, ops::linear(*dense, x), *LayerNorm);
}

BertAttentionImpl::BertAttentionImpl(const BertConfig& config, bool is_cross_attention) {
  self = register_module("self", BertSelfAttention(config, is_cross_attention));
  output = register_module("output", BertResidualOutput(config.hidden_size, config));
}

BertIntermediateImpl::BertIntermediateImpl(const BertConfig& config) {
  dense = register_module("dense", ops::encoder_linear(config.hidden_size, config.intermediate_size));
}

BertLayerImpl::BertLayerImpl(const BertConfig& config, int64_t layer_index) {
  attention = register_module("attention", BertAttention(config, false));
  if (layer_index >= config.fusion_layer)
    crossattention = register_module("crossattention", BertAttention(config, true));
  intermediate = register_module("intermediate", BertIntermediate(config));
  output = register_module("output", BertResidualOutput(config.intermediate_size, config));
}

at::Tensor BertLayerImpl::forward(at::Tensor hidden, const at::Tensor& additive_mask, FusionImages* images,
                                  const at::Tensor& image_rows, bool class_token_only) {
  // Each sublayer's output twice: the residual stream, and as the next products read it.
  at::Tensor x, x_for_products;
  {
    const at::Tensor residual = class_token_only ? hidden.slice(1, 0, 1).contiguous() : hidden;
    std::tie(x, x_for_products) = attention->output->forward_for_products(
        attention->self->forward(hidden, additive_mask, class_token_only), residual);
  }
  hidden.reset();
  if (has_cross_attention() && images) {
    ALBEF_CHECK(images->embeds().defined(), "a fusion layer needs the image embeddings");
    std::tie(x, x_for_products) = crossattention->output->forward_for_products(
        crossattention->self->forward_cross(x_for_products, *images, image_rows), x);
  }
  return output->add_and_norm(ops::feed_forward(*intermediate->dense, *output->dense, std::move(x_for_products)), x);
}

BertModelImpl::BertModelImpl(const BertConfig& config) : config_(config) {
  embeddings = register_module("embeddings", BertEmbeddings(config));
  encoder = register_module("encoder", std::make_shared<nn::Module>());
  layer = encoder->register_module("layer", nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layer->push_back(BertLayer(config, i));
  // share_cross_attention: in each run of n fusion layers the key and value
  // projections are one module (the last layer's), so one parameter whose
  // gradient sums the n layers'.
  const int64_t n = config.images_per_text;
  const int64_t shared_from =
      config.shared_cross_attention_from < 0 ? config.fusion_layer : config.shared_cross_attention_from;
  ALBEF_CHECK(shared_from >= config.fusion_layer, "layer ", shared_from,
              " cannot share a cross-attention: the first with one is ", config.fusion_layer);
  ALBEF_CHECK(n >= 1 && (config.num_hidden_layers - shared_from) % n == 0, "BERT with ",
              config.num_hidden_layers - shared_from, " fusion layers cannot attend to ", n, " images in turn");
  for (int64_t first = shared_from; n > 1 && first < config.num_hidden_layers; first += n) {
    BertSelfAttentionImpl& owner = *layer[first + n - 1]->as<BertLayer>()->crossattention->self;
    for (int64_t i = first; i < first + n - 1; ++i) {
      BertSelfAttentionImpl& shared = *layer[i]->as<BertLayer>()->crossattention->self;
      shared.key = owner.key;
      shared.value = owner.value;
      shared.replace_module("key", owner.key);
      shared.replace_module("value", owner.value);
    }
  }
}

BertConfig with_fusion_per_image(BertConfig config, int64_t images) {
  ALBEF_CHECK(images >= 1, "images per text must be at least 1, got ", images);
  config.num_hidden_layers = config.fusion_layer + images * (config.num_hidden_layers - config.fusion_layer);
  config.images_per_text = images;
  return config;
}

at::Tensor BertModelImpl::run_layers(at::Tensor hidden, const at::Tensor& additive_mask,
                                     const std::vector<FusionImages*>& images, const at::Tensor& image_rows,
                                     int64_t begin, int64_t end, bool class_token_only) {
  ALBEF_CHECK(images.empty() || static_cast<int64_t>(images.size()) == config_.images_per_text, "this BERT reads ",
              config_.images_per_text, " image(s) per text, got ", images.size());
  for (int64_t i = begin; i < end; ++i) {
    FusionImages* source =
        images.empty() || i < config_.fusion_layer
            ? nullptr
            : images[static_cast<size_t>((i - config_.fusion_layer) % static_cast<int64_t>(images.size()))];
    hidden = layer[i]->as<BertLayer>()->forward(std::move(hidden), additive_mask, source, image_rows,
                                                class_token_only && i + 1 == end);
  }
  return hidden;
}

at::Tensor BertModelImpl::forward_text(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  at::Tensor hidden = embeddings->forward(input_ids);
  const at::Tensor mask = extended_attention_mask(attention_mask, hidden.scalar_type());
  // Moved: the embeddings are freed once the first layer has read them.
  return run_layers(std::move(hidden), mask, {}, {}, 0,
                    config_.single_stream ? config_.num_hidden_layers : config_.fusion_layer);
}

at::Tensor BertModelImpl::forward_text_class_token(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  at::Tensor hidden = embeddings->forward(input_ids);
  const int64_t layers = config_.single_stream ? config_.num_hidden_layers : config_.fusion_layer;
  if (layers == 0) return hidden.slice(1, 0, 1);
  const at::Tensor mask = extended_attention_mask(attention_mask, hidden.scalar_type());
  return run_layers(std::move(hidden), mask, {}, {}, 0, layers, /*class_token_only=*/true);
}

at::Tensor BertModelImpl::forward_inputs_embeds(const at::Tensor& inputs_embeds, FusionImages& states) {
  ALBEF_CHECK(config_.single_stream, "only the single-stream BERT runs from inputs_embeds");
  const at::Tensor hidden = embeddings->forward_embeds(inputs_embeds);
  // Image tokens have no padding: HF's default all-ones mask.
  const at::Tensor mask = at::ones({hidden.size(0), hidden.size(1)}, hidden.options());
  return run_layers(hidden, extended_attention_mask(mask, hidden.scalar_type()), {&states}, {}, 0,
                    config_.num_hidden_layers);
}

at::Tensor BertModelImpl::forward_fusion(at::Tensor text_embeds, const at::Tensor& attention_mask,
                                         FusionImages& images, const at::Tensor& image_rows, bool class_token_only) {
  const at::Tensor mask = extended_attention_mask(attention_mask, text_embeds.scalar_type());
  return run_layers(std::move(text_embeds), mask, {&images}, image_rows, config_.fusion_layer,
                    config_.num_hidden_layers, class_token_only);
}

at::Tensor BertModelImpl::forward_fusion(const at::Tensor& text_embeds, const at::Tensor& attention_mask,
                                         const at::Tensor& image_embeds) {
  FusionImages images(image_embeds);
  return forward_fusion(text_embeds, attention_mask, images);
}

at::Tensor BertModelImpl::forward_fusion_layers(const at::Tensor& hidden, const at::Tensor& attention_mask,
                                                FusionImages& images, int64_t begin, int64_t end) {
  ALBEF_CHECK(config_.fusion_layer <= begin && begin <= end && end <= config_.num_hidden_layers, "fusion layers [",
              begin, ", ", end, ") are outside [", config_.fusion_layer, ", ", config_.num_hidden_layers, ")");
  ALBEF_CHECK(config_.images_per_text == 1, "forward_fusion_layers reads one image per text");
  return run_layers(hidden, extended_attention_mask(attention_mask, hidden.scalar_type()), {&images}, {}, begin, end);
}

at::Tensor BertModelImpl::forward_multimodal(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                             FusionImages& images, const at::Tensor& image_rows,
                                             bool class_token_only) {
  const at::Tensor hidden = embeddings->forward(input_ids);
  return run_layers(hidden, extended_attention_mask(attention_mask, hidden.scalar_type()), {&images}, image_rows, 0,
                    config_.num_hidden_layers, class_token_only);
}

at::Tensor BertModelImpl::forward_multimodal(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                             const std::vector<FusionImages*>& images) {
  const at::Tensor hidden = embeddings->forward(input_ids);
  return run_layers(hidden, extended_attention_mask(attention_mask, hidden.scalar_type()), images, {}, 0,
                    config_.num_hidden_layers);
}

at::Tensor BertModelImpl::forward_causal(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                         FusionImages& encoder_states, const at::Tensor& encoder_rows) {
  const at::Tensor hidden = embeddings->forward(input_ids);
  return run_layers(hidden, causal_attention_mask(attention_mask, hidden.scalar_type()), {&encoder_states},
                    encoder_rows, 0, config_.num_hidden_layers);
}

namespace {
void init_bert_modules(nn::Module& root, double std) {
  at::NoGradGuard no_grad;
  for (const auto& module : root.modules(/*include_self=*/false)) {
    if (auto* linear = module->as<nn::Linear>()) {
      linear->weight.normal_(0.0, std);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* embedding = module->as<nn::Embedding>()) {
      embedding->weight.normal_(0.0, std);
      if (embedding->options.padding_idx()) embedding->weight[*embedding->options.padding_idx()].zero_();
    } else if (auto* layer_norm = module->as<nn::LayerNorm>()) {
      layer_norm->weight.fill_(1.0);
      layer_norm->bias.zero_();
    }
  }
}
}  // namespace

void BertModelImpl::init_weights() { init_bert_modules(*this, config_.initializer_range); }

BertLMPredictionHeadImpl::BertLMPredictionHeadImpl(const BertConfig& config, const at::Tensor& word_embeddings) {
  bias = register_parameter("bias", at::zeros({config.vocab_size}));
  transform = register_module("transform", std::make_shared<nn::Module>());
  transform_dense = transform->register_module("dense", ops::encoder_linear(config.hidden_size, config.hidden_size));
  transform_LayerNorm = transform->register_module(
      "LayerNorm", nn::LayerNorm(nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
  decoder = register_module("decoder", TiedLinear(word_embeddings, bias));
}

at::Tensor BertLMPredictionHeadImpl::forward(const at::Tensor& hidden) {
  // LayerNorm stays in float32 under autocast (its input here has no fp32 residual to promote it).
  const at::Tensor x = at::gelu(ops::linear(*transform_dense, hidden)).to(transform_LayerNorm->weight.scalar_type());
  return decoder->forward(transform_LayerNorm->forward(x));
}

BertForMaskedLMImpl::BertForMaskedLMImpl(const BertConfig& config) {
  bert = register_module("bert", BertModel(config));
  auto cls = register_module("cls", std::make_shared<nn::Module>());
  predictions = cls->register_module("predictions",
                                     BertLMPredictionHead(config, bert->embeddings->word_embeddings->weight));
}

at::Tensor BertForMaskedLMImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                        FusionImages& images, const at::Tensor& positions) {
  const at::Tensor hidden = bert->forward_multimodal(input_ids, attention_mask, images);
  if (!positions.defined()) return predictions->forward(hidden);
  return predictions->forward(hidden.reshape({-1, hidden.size(-1)}).index_select(0, positions));
}

at::Tensor BertForMaskedLMImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                        const at::Tensor& image_embeds) {
  FusionImages images(image_embeds);
  return forward(input_ids, attention_mask, images);
}

at::Tensor BertForMaskedLMImpl::decode(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                       FusionImages& encoder_states, const at::Tensor& encoder_rows) {
  return predictions->forward(bert->forward_causal(input_ids, attention_mask, encoder_states, encoder_rows));
}

void BertForMaskedLMImpl::init_weights() {
  init_bert_modules(*this, bert->config().initializer_range);
  at::NoGradGuard no_grad;
  predictions->bias.zero_();
}

}  // namespace albef
