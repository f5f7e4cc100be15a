#include "albef/model/albef.h"

#include "albef/model/checkpoint_layout.h"

#include "albef/core/error.h"
#include "albef/core/runtime.h"
#include "core/autocast.h"
#include "core/rows.h"
#include "core/tensor_heap.h"
#include "ops/linear.h"
#include "ops/linear_int8.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <set>
#include <unordered_map>

namespace albef {
namespace nn = torch::nn;

// In float32 (and int8 without bf16 autocast), 512: on Zen 3 (AVX2) 32 images, 64 texts and 64 ITM pairs
// run at the rate of 1024-token passes with peaks 34-57 MB lower (256 costs texts 13%). Under bf16
// autocast (bf16, and int8 where the CPU has oneDNN's bf16 GEMM), 1024: on Zen 5 (AVX-512 BF16) 512 costs
// 32 images 4-8% and ITM up to 8%, while 2048 gains within the noise for 30-85 MB more. None while a
// backward pass is recorded or in train mode, where dropout would draw its masks per slice.
int64_t inference_tokens_per_pass(const nn::Module& module) {
  if (at::GradMode::is_enabled() || module.is_training()) return 0;
  return autocast::enabled(c10::DeviceType::CPU) ? 1024 : 512;
}

namespace {

// Builds the text encoder in the options' layout, registered as `name`;
// returns the BERT inside it.
BertModel add_text_encoder(AlbefModelImpl& model, const std::string& name, const Config& config,
                           BertForMaskedLM& mlm_holder) {
  if (model.options().text_encoder == TextEncoderLayout::MaskedLM) {
    mlm_holder = model.register_module(name, BertForMaskedLM(config.bert));
    return mlm_holder->bert;
  }
  return model.register_module(name, BertModel(config.bert));
}

// The text encoder's and itm_logits' inference passes: with int8 layers, 512 tokens under bf16 autocast
// too. A pass's activations are those of a bf16 pass beside weights half as large: text int8 holds 1.23x
// its weights with 1,024-token passes, 1.19x with 512, for about 4% of its rate (five-round runs on
// AVX-512: 287 against 296-304 texts/s); itm_logits' passes too (a gallery's re-ranking), where the
// retrieval evaluation then holds 1.19x its weights instead of 1.22x, its rate within the noise on Zen 5
// (8-15% lower for COCO-5k's on the second AVX-512 host). The ViT keeps 1,024 (512 is one 257-token
// image, 5% slower), and so does `fuse` with an image per text: 64 ITM pairs ran 10% slower in passes of
// 512, their peak unchanged (set while their images are encoded).
int64_t text_tokens_per_pass(const nn::Module& model, const BertModel& bert) {
  const int64_t budget = inference_tokens_per_pass(model);
  if (budget == 0 || bert->layer->size() == 0) return budget;
  for (const auto& module : bert->layer->ptr(0)->modules(/*include_self=*/false))
    if (const auto* linear = module->as<nn::Linear>()) return ops::int8_weight_scales(*linear).defined() ? 512 : budget;
  return budget;
}

/// A batch of `rows` rows of `tokens` tokens each runs `pass(begin, end)` over
/// slices of about `budget` tokens (inference_tokens_per_pass; 0: one pass):
/// this many rows a slice.
int64_t rows_per_slice(int64_t budget, int64_t rows, int64_t tokens) {
  return budget == 0 ? rows : std::max<int64_t>(1, budget / std::max<int64_t>(1, tokens));
}

/// The slices of `pass`, each handed to `each_pass(begin, output)` as it ends.
void for_each_slice(int64_t budget, int64_t rows, int64_t tokens,
                    const std::function<at::Tensor(int64_t, int64_t)>& pass,
                    const std::function<void(int64_t, const at::Tensor&)>& each_pass) {
  const int64_t per_slice = rows_per_slice(budget, rows, tokens);
  for (int64_t begin = 0; begin < rows; begin += per_slice) each_pass(begin, pass(begin, std::min(rows, begin + per_slice)));
}

/// The same slices joined (one slice: its output as it is, no copy).
at::Tensor in_slices(int64_t budget, int64_t rows, int64_t tokens,
                     const std::function<at::Tensor(int64_t, int64_t)>& pass) {
  if (rows <= rows_per_slice(budget, rows, tokens)) return pass(0, rows);
  at::Tensor joined;
  for_each_slice(budget, rows, tokens, pass,
                 [&](int64_t begin, const at::Tensor& output) { write_rows(joined, rows, begin, output); });
  return joined;
}

}  // namespace

at::Tensor l2_normalize(const at::Tensor& x, int64_t dim) {
  return x / x.norm(2, {dim}, /*keepdim=*/true).clamp_min(1e-12);
}

AlbefModelImpl::AlbefModelImpl(const Config& config, const ModelOptions& options)
    : config_(config), options_(options) {
  ALBEF_CHECK(options.text_side || !options.momentum_encoders,
              "an image-only model (text_side = false) is for inference: it takes no momentum encoders");
  ALBEF_CHECK(options.image_side || !options.momentum_encoders,
              "a text-only model (image_side = false) is for inference: it takes no momentum encoders");
  ALBEF_CHECK(options.image_side || options.text_side, "a model needs its image side, its text side or both");
  ALBEF_CHECK((options.image_side && options.text_side) || options.heads.empty(),
              "heads need both the image and the text side");
  Config encoder_config = config;
  if (options.text_bert)
    encoder_config.bert = *options.text_bert;
  else if (options.images_per_text != 1)
    encoder_config.bert = with_fusion_per_image(config.bert, options.images_per_text);
  ALBEF_CHECK(encoder_config.bert.images_per_text == options.images_per_text, "the text encoder reads ",
              encoder_config.bert.images_per_text, " image(s) per text, the model ", options.images_per_text);
  // Without images the fusion layers have nothing to attend to: the text side stops at fusion_layer.
  Config text_config = encoder_config;
  if (!options.image_side) text_config.bert.num_hidden_layers = config.bert.fusion_layer;
  const int64_t text_width = config.bert.hidden_size;
  const int64_t vision_width = config.vision_width;
  const bool queues = options.contrastive && options.momentum_encoders;
  if (options.contrastive) temp = register_parameter("temp", at::full({}, config.temp, at::kFloat));
  if (queues) {
    image_queue = register_buffer("image_queue", l2_normalize(at::randn({config.embed_dim, config.queue_size}), 0));
    text_queue = register_buffer("text_queue", l2_normalize(at::randn({config.embed_dim, config.queue_size}), 0));
    if (options.id_queue) idx_queue = register_buffer("idx_queue", at::full({1, config.queue_size}, -100, at::kLong));
    queue_ptr = register_buffer("queue_ptr", at::zeros({1}, at::kLong));
  }
  if (options.image_side)
    visual_encoder = register_module("visual_encoder",
                                     VisionTransformer(config.vision, config.image_res, options.vision_mask_token));
  if (options.text_side) text_bert_ = add_text_encoder(*this, "text_encoder", text_config, text_encoder_mlm);
  if (options.contrastive && options.image_side)
    vision_proj = register_module("vision_proj", nn::Linear(vision_width, config.embed_dim));
  if (options.contrastive && options.text_side)
    text_proj = register_module("text_proj", nn::Linear(text_width, config.embed_dim));
  auto add_head = [&](const HeadSpec& spec, bool with_copy) {
    ALBEF_CHECK(spec.make != nullptr, "head '", spec.name, "' has no constructor");
    heads_.emplace(spec.name, register_module(spec.name, spec.make(config)));
    if (with_copy && spec.momentum && options.momentum_encoders)
      heads_.emplace(spec.name + "_m", register_module(spec.name + "_m", spec.make(config)));
  };
  for (const HeadSpec& spec : options.heads)
    if (!spec.after_momentum) add_head(spec, spec.momentum_beside);
  if (options.momentum_encoders) {
    visual_encoder_m = register_module("visual_encoder_m",
                                       VisionTransformer(config.vision, config.image_res, options.vision_mask_token));
    if (options.contrastive) vision_proj_m = register_module("vision_proj_m", nn::Linear(vision_width, config.embed_dim));
    text_bert_m_ = add_text_encoder(*this, "text_encoder_m", encoder_config, text_encoder_mlm_m);
    if (options.contrastive) text_proj_m = register_module("text_proj_m", nn::Linear(text_width, config.embed_dim));
    for (const HeadSpec& spec : options.heads)
      if (spec.momentum && !spec.momentum_beside && !spec.after_momentum)
        heads_.emplace(spec.name + "_m", register_module(spec.name + "_m", spec.make(config)));
  }
  for (const HeadSpec& spec : options.heads)
    if (spec.after_momentum) add_head(spec, true);
  if (options.momentum_encoders) {
    // Everything registered as a momentum copy (name ending in _m) is frozen.
    for (const auto& child : named_children()) {
      const std::string& name = child.key();
      if (name.size() > 2 && name.compare(name.size() - 2, 2, "_m") == 0)
        for (auto& p : child.value()->parameters()) p.set_requires_grad(false);
    }
  }
}

std::shared_ptr<nn::Module> AlbefModelImpl::head(const std::string& name) const {
  const auto it = heads_.find(name);
  ALBEF_CHECK(it != heads_.end(), "the model has no head '", name, "'");
  return it->second;
}

at::Tensor AlbefModelImpl::encode_image(const at::Tensor& images) {
  require_image_side("encode_image");
  const int64_t tokens = visual_encoder->num_patches() + 1;
  return in_slices(inference_tokens_per_pass(*this), images.size(0), tokens, [&](int64_t begin, int64_t end) {
    return visual_encoder->forward(images.slice(0, begin, end));
  });
}

void AlbefModelImpl::encode_image(const at::Tensor& images,
                                  const std::function<void(int64_t, const at::Tensor&)>& each_pass) {
  require_image_side("encode_image");
  const int64_t tokens = visual_encoder->num_patches() + 1;
  for_each_slice(inference_tokens_per_pass(*this), images.size(0), tokens,
                 [&](int64_t begin, int64_t end) { return visual_encoder->forward(images.slice(0, begin, end)); },
                 each_pass);
}

void AlbefModelImpl::require_text_side(const char* what) const {
  ALBEF_CHECK(options_.text_side, what, " needs the text side, and this model was built for images only (text_side = false)");
}

void AlbefModelImpl::require_image_side(const char* what) const {
  ALBEF_CHECK(options_.image_side, what,
              " needs the image side, and this model was built for texts only (image_side = false)");
}

at::Tensor AlbefModelImpl::encode_text(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  require_text_side("encode_text");
  return in_slices(text_tokens_per_pass(*this, text_bert_), input_ids.size(0), input_ids.size(1), [&](int64_t begin, int64_t end) {
    return text_bert_->forward_text(input_ids.slice(0, begin, end), attention_mask.slice(0, begin, end));
  });
}

void AlbefModelImpl::encode_text(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                 const std::function<void(int64_t, const at::Tensor&)>& each_pass) {
  require_text_side("encode_text");
  for_each_slice(text_tokens_per_pass(*this, text_bert_), input_ids.size(0), input_ids.size(1),
                 [&](int64_t begin, int64_t end) {
                   return text_bert_->forward_text(input_ids.slice(0, begin, end), attention_mask.slice(0, begin, end));
                 },
                 each_pass);
}

int64_t AlbefModelImpl::fusion_tokens_per_pass() const {
  return text_bert_ ? text_tokens_per_pass(*this, text_bert_) : inference_tokens_per_pass(*this);
}

// Features are normalised in float32 whatever the compute precision: the
// contrastive similarities are made of them.
at::Tensor AlbefModelImpl::image_feature(const at::Tensor& image_embeds) {
  require_image_side("image_feature");
  ALBEF_CHECK(options_.contrastive, "image_feature needs the contrastive projections (ModelOptions::contrastive)");
  return l2_normalize(ops::linear(*vision_proj, image_embeds.select(1, 0)).to(at::kFloat));
}

at::Tensor AlbefModelImpl::text_feature(const at::Tensor& text_embeds) {
  require_text_side("text_feature");
  ALBEF_CHECK(options_.contrastive, "text_feature needs the contrastive projections (ModelOptions::contrastive)");
  return l2_normalize(ops::linear(*text_proj, text_embeds.select(1, 0)).to(at::kFloat));
}

// The features of each slice are taken before the next one runs: a batch
// then never holds all its tokens (25 MB for 32 images at 256 px).
at::Tensor AlbefModelImpl::encode_image_features(const at::Tensor& images) {
  require_image_side("encode_image_features");
  const int64_t tokens = visual_encoder->num_patches() + 1;
  return in_slices(inference_tokens_per_pass(*this), images.size(0), tokens, [&](int64_t begin, int64_t end) {
    return image_feature(visual_encoder->forward_class_token(images.slice(0, begin, end)));
  });
}

at::Tensor AlbefModelImpl::encode_text_features(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  require_text_side("encode_text_features");
  return in_slices(text_tokens_per_pass(*this, text_bert_), input_ids.size(0), input_ids.size(1), [&](int64_t begin, int64_t end) {
    return text_feature(
        text_bert_->forward_text_class_token(input_ids.slice(0, begin, end), attention_mask.slice(0, begin, end)));
  });
}

at::Tensor AlbefModelImpl::fuse(const at::Tensor& text, const at::Tensor& attention_mask,
                                const at::Tensor& image_embeds, bool class_token_only) {
  require_text_side("fuse");
  require_image_side("fuse");
  // One image shared by every text keeps its keys and values for all of them: no slicing then.
  if (image_embeds.size(0) != text.size(0)) {
    FusionImages images(image_embeds);
    return fuse(text, attention_mask, images, {}, class_token_only);
  }
  return in_slices(inference_tokens_per_pass(*this), text.size(0), text.size(1), [&](int64_t begin, int64_t end) {
    FusionImages images(image_embeds.slice(0, begin, end));
    return fuse(text.slice(0, begin, end), attention_mask.slice(0, begin, end), images, {}, class_token_only);
  });
}

at::Tensor AlbefModelImpl::fuse(at::Tensor text, const at::Tensor& attention_mask, FusionImages& images,
                                const at::Tensor& image_rows, bool class_token_only) {
  require_text_side("fuse");
  require_image_side("fuse");
  if (config_.bert.single_stream) {
    ALBEF_CHECK(!at::isFloatingType(text.scalar_type()),
                "the single-stream BERT fuses token ids [B, L], got floating-point states ", text.sizes());
    return text_bert_->forward_multimodal(text, attention_mask, images, image_rows, class_token_only);
  }
  return text_bert_->forward_fusion(std::move(text), attention_mask, images, image_rows, class_token_only);
}

at::Tensor AlbefModelImpl::mlm_logits(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                      const at::Tensor& image_embeds) {
  ALBEF_CHECK(!text_encoder_mlm.is_empty(), "the MLM head exists only in the MaskedLM text encoder layout");
  require_image_side("mlm_logits");
  return text_encoder_mlm->forward(input_ids, attention_mask, image_embeds);
}

at::Tensor AlbefModelImpl::mlm_logits(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                      FusionImages& images, const at::Tensor& positions) {
  ALBEF_CHECK(!text_encoder_mlm.is_empty(), "the MLM head exists only in the MaskedLM text encoder layout");
  require_image_side("mlm_logits");
  return text_encoder_mlm->forward(input_ids, attention_mask, images, positions);
}

void AlbefModelImpl::init_weights() {
  at::NoGradGuard no_grad;
  if (!visual_encoder.is_empty()) visual_encoder->init_weights();
  if (!text_encoder_mlm.is_empty())
    text_encoder_mlm->init_weights();
  else if (!text_bert_.is_empty())
    text_bert_->init_weights();
  for (const HeadSpec& spec : options_.heads)
    if (spec.init) spec.init(*head(spec.name));
  if (options_.momentum_encoders) copy_params();
}

std::vector<std::pair<at::Tensor, at::Tensor>> AlbefModelImpl::momentum_pairs() {
  ALBEF_CHECK(options_.momentum_encoders, "the model was built without momentum encoders");
  std::vector<std::pair<at::Tensor, at::Tensor>> pairs;
  std::set<const void*> seen;
  auto add = [&](const nn::Module& online, const nn::Module& momentum) {
    // parameters() walks both trees in the same order and lists a tied
    // tensor under each of its names; PyTorch's lists it once, so skip the
    // repeats (an EMA step applied twice would be wrong).
    const auto a = online.parameters(), b = momentum.parameters();
    ALBEF_CHECK(a.size() == b.size(), "online and momentum encoders differ: ", a.size(), " vs ", b.size());
    for (size_t i = 0; i < a.size(); ++i)
      if (seen.insert(a[i].unsafeGetTensorImpl()).second) pairs.emplace_back(a[i], b[i]);
  };
  add(*visual_encoder, *visual_encoder_m);
  if (options_.contrastive) add(*vision_proj, *vision_proj_m);
  if (!text_encoder_mlm.is_empty())
    add(*text_encoder_mlm, *text_encoder_mlm_m);
  else
    add(*text_bert_, *text_bert_m_);
  if (options_.contrastive) add(*text_proj, *text_proj_m);
  for (const HeadSpec& spec : options_.heads)
    if (spec.momentum) add(*head(spec.name), *head(spec.name + "_m"));
  return pairs;
}

void AlbefModelImpl::copy_params() {
  at::NoGradGuard no_grad;
  for (auto& [online, momentum] : momentum_pairs()) momentum.copy_(online);
}

io::StateDict state_dict(const nn::Module& module) {
  io::StateDict out;
  std::function<void(const nn::Module&, const std::string&)> visit = [&](const nn::Module& m,
                                                                        const std::string& prefix) {
    for (const auto& item : m.named_parameters(/*recurse=*/false)) out.emplace_back(prefix + item.key(), item.value());
    for (const auto& item : m.named_buffers(/*recurse=*/false)) out.emplace_back(prefix + item.key(), item.value());
    for (const auto& child : m.named_children()) visit(*child.value(), prefix + child.key() + ".");
  };
  visit(module, "");
  return out;
}

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

// Pretraining checkpoints have `text_encoder.bert.*`; models with a plain
// BertModel drop `bert.`, exactly as Retrieval.py renames keys containing 'bert'.
std::string adapt_text_encoder_key(const std::string& key, TextEncoderLayout layout) {
  for (const std::string encoder : {"text_encoder.", "text_encoder_m."}) {
    if (!starts_with(key, encoder)) continue;
    const std::string rest = key.substr(encoder.size());
    if (layout == TextEncoderLayout::Plain && starts_with(rest, "bert.")) return encoder + rest.substr(5);
    if (layout == TextEncoderLayout::MaskedLM && (starts_with(rest, "embeddings.") || starts_with(rest, "encoder.")))
      return encoder + "bert." + rest;
  }
  return key;
}

namespace {

/// Reads checkpoint tensor `stored` into `target` of another dtype (a bf16 model's linear weights; an int8
/// layer's values, with `int8_scales` its scales) a block of rows at a time, converting each as it comes: the
/// float32 tensor is never whole in memory (a 3072 x 768 layer: 9 MB beside its 2.3 MB of int8). False,
/// having read nothing, where the file's record cannot be read so.
bool read_converted(io::LazyCheckpoint& lazy, const at::Tensor& stored, at::Tensor& target, at::Tensor* int8_scales) {
  if (target.scalar_type() == stored.scalar_type() || target.sizes() != stored.sizes() || !target.is_contiguous() ||
      !target.device().is_cpu() || stored.dim() < 1 || stored.numel() == 0)
    return false;
  constexpr int64_t kBlockBytes = 1 << 20;
  const int64_t row_bytes = stored.numel() / stored.size(0) * static_cast<int64_t>(stored.element_size());
  return lazy.read_in_rows(stored, std::max<int64_t>(1, kBlockBytes / row_bytes), [&](const at::Tensor& block, int64_t begin) {
    const int64_t end = begin + block.size(0);
    if (int8_scales)
      ops::quantize_weight_int8_into(block, target.slice(0, begin, end), int8_scales->slice(0, begin, end));
    else
      target.slice(0, begin, end).copy_(block);
  });
}

/// load_state_dict, reading each tensor through `lazy` (when given) just before
/// it is copied (converted as it is read where the model holds it in another
/// dtype) and freeing it right after.
LoadReport load_entries(AlbefModel& model, const io::StateDict& state, const std::string& source, bool strict,
                        io::LazyCheckpoint* lazy, bool momentum_from_online) {
  at::NoGradGuard no_grad;
  const ModelOptions& options = model->options();
  std::unordered_map<std::string, at::Tensor> targets;
  const io::StateDict own = state_dict(*model);
  for (const auto& [name, tensor] : own) targets.emplace(name, tensor);

  const CheckpointKeyMap model_keys = options.checkpoint_keys
                                          ? options.checkpoint_keys
                                          : [layout = options.text_encoder](const std::string& key) {
                                              return std::vector<std::string>{adapt_text_encoder_key(key, layout)};
                                            };
  LoadReport report;
  std::set<std::string> loaded;
  for (const auto& [raw_key, raw_value] : state) {
    std::vector<std::pair<std::string, at::Tensor*>> destinations;
    for (const std::string& key : model_keys(raw_key))
      if (auto it = targets.find(key); it != targets.end()) destinations.emplace_back(key, &it->second);
    if (destinations.empty()) {
      report.unexpected_keys.push_back(raw_key);
      continue;
    }
    bool fetched = false;
    for (auto& [key, target] : destinations) {
      if (lazy && !fetched && lazy->read_into(raw_value, *target)) {  // no buffer in between
        loaded.insert(key);
        continue;
      }
      // An int8 layer (Int8Construction) holds its scales beside the values.
      const bool int8 = target->scalar_type() == at::kChar && raw_value.is_floating_point();
      const std::string scale_key = int8 ? key.substr(0, key.size() - std::string("weight").size()) + "weight_scale" : "";
      if (lazy && !fetched && read_converted(*lazy, raw_value, *target, int8 ? &targets.at(scale_key) : nullptr)) {
        loaded.insert(key);
        if (int8) loaded.insert(scale_key);
        continue;
      }
      if (lazy && !fetched) {
        lazy->fetch(raw_value);
        fetched = true;
      }
      at::Tensor value = raw_value;
      if (key == "visual_encoder.pos_embed" || key == "visual_encoder_m.pos_embed") {
        const int64_t patches = (key == "visual_encoder.pos_embed" ? model->visual_encoder : model->visual_encoder_m)
                                    ->num_patches();
        value = interpolate_pos_embed(value, patches);
      }
      if (value.sizes() != target->sizes())
        fail(source, ": '", raw_key, "' has shape ", value.sizes(), " but the model's '", key, "' expects ",
             target->sizes(), " (does the config match the checkpoint?)");
      if (int8) {
        ops::quantize_weight_int8_into(value, *target, targets.at(scale_key));
        loaded.insert(scale_key);
      } else {
        target->copy_(value);
      }
      loaded.insert(key);
    }
    if (fetched) lazy->release(raw_value);
  }
  // LAVIS's runner saves no momentum parameters: start them as copies of
  // the online ones (what LAVIS's NLVR model does after such a load).
  if (momentum_from_online)
    for (const auto& [name, tensor] : own) {
      const std::string online = online_twin(name);
      if (loaded.count(name) || online.empty() || !loaded.count(online)) continue;
      targets.at(name).copy_(targets.at(online));
      loaded.insert(name);
    }
  for (const auto& [name, tensor] : own)
    if (!loaded.count(name)) report.missing_keys.push_back(name);
  if (strict && !report.missing_keys.empty())
    fail(source, ": ", report.missing_keys.size(), " model entries are missing from the checkpoint, first '",
         report.missing_keys.front(), "'");
  return report;
}

// The encoders' layers, where the products are (the small projections and
// heads, the features' last step and the classifiers, are read elsewhere).
bool in_encoders(const std::string& module_name) {
  return module_name.rfind("visual_encoder.", 0) == 0 || module_name.rfind("text_encoder.", 0) == 0 ||
         module_name.rfind("text_decoder.", 0) == 0;
}

// The layers a bf16 model keeps packed: the encoders' and the contrastive projections (read only through
// ops::linear; in int8 they stay float32, which oneDNN reads as stored).
bool packed_at_inference(const std::string& module_name) {
  return in_encoders(module_name) || module_name == "vision_proj" || module_name == "text_proj";
}

}  // namespace

void prepare_for_inference(AlbefModel& model, Precision precision) {
  model->eval();
  for (auto& parameter : model->parameters()) parameter.set_requires_grad(false);
  at::NoGradGuard no_grad;
  if (precision == Precision::Fp32) return;
  if (precision == Precision::Bf16) {
    for (const auto& module : model->modules(/*include_self=*/false))
      if (auto* linear = module->as<nn::Linear>(); linear && !ops::is_packed(*linear))
        if (linear->weight.device().is_cpu()) linear->weight.set_data(linear->weight.to(at::kBFloat16));
  } else if (precision == Precision::Int8) {
    if (!model->parameters().empty() && !model->parameters().front().device().is_cpu())
      fail("--precision int8 runs on the CPU only (use bf16 on a GPU)");
    // The encoders' layers; the projections and heads stay in float32.
    for (const auto& item : model->named_modules("", /*include_self=*/false))
      if (auto* linear = item.value()->as<nn::Linear>())
        if (in_encoders(item.key()) && !ops::is_packed(*linear) && linear->weight.scalar_type() != at::kChar)
          ops::quantize_linear_int8(*linear);
  }
  // The encoders' and projections' weights are then kept in oneDNN's blocked layout alone, not beside a
  // packed copy made at first use.
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    if (auto* linear = item.value()->as<nn::Linear>(); linear && packed_at_inference(item.key()))
      ops::pack_for_inference(*linear);
    else if (auto* patches = item.value()->as<PatchEmbed>())
      patches->pack_for_inference();  // bf16 and int8 encoders read their images' patches in bf16
  }
}

LoadReport load_state_dict(AlbefModel& model, const io::StateDict& state, const std::string& source, bool strict) {
  return load_entries(model, state, source, strict, nullptr, /*momentum_from_online=*/false);
}

LoadReport load_checkpoint(AlbefModel& model, const std::string& path, bool strict) {
  const TransientBuffersToOs transient;  // each tensor's buffer is freed once copied
  io::LazyCheckpoint checkpoint(path);
  const io::StateDict state = io::state_dict_from(checkpoint.root(), path);
  // The single-stream BERT has no token-type embeddings to fill in. (SIMLA's
  // NLVR model has: from a SIMLA checkpoint they start as zeros, adding none.)
  const BertModel& bert = model->text_bert();
  if (bert ? bert->config().single_stream : model->config().bert.single_stream)
    return load_entries(model, state, path, strict, &checkpoint, false);
  const bool lavis = detect_layout(state, checkpoint.root()) == CheckpointLayout::Lavis;
  return load_entries(model, to_official_layout(state, checkpoint.root()), path, strict, &checkpoint, lavis);
}

namespace {

// A model whose linear weights are bfloat16 from the start (the rest
// float32, as prepare_for_inference leaves a bf16 model): its parameters are
// created under a bfloat16 default dtype, so the float32 model never exists
// and the checkpoint's float32 tensors are rounded as they are copied in.
// BertEmbeddings makes its tables in float32 whatever the default (the word
// table is the largest of the rest); the small others are widened below.
// The default dtype is process-wide: one such construction at a time.
AlbefModel build_bf16_model(const Config& config, const ModelOptions& options) {
  static std::mutex construction;
  const std::lock_guard<std::mutex> lock(construction);
  // The linear weights are mapped from the OS, not the heap: prepare_for_inference replaces them by
  // their packed layout, and their memory must then go back rather than stay in the heap beside it.
  const TransientBuffersToOs transient;
  const caffe2::TypeMeta before = at::get_default_dtype();
  at::set_default_dtype(caffe2::TypeMeta::Make<at::BFloat16>());
  AlbefModel model{nullptr};
  try {
    model = AlbefModel(config, options);
  } catch (...) {
    at::set_default_dtype(before);
    throw;
  }
  at::set_default_dtype(before);
  std::set<const c10::TensorImpl*> linear_weights;
  for (const auto& module : model->modules(/*include_self=*/false))
    if (auto* linear = module->as<nn::Linear>()) linear_weights.insert(linear->weight.unsafeGetTensorImpl());
  at::NoGradGuard no_grad;
  for (auto& parameter : model->parameters())
    if (parameter.scalar_type() == at::kBFloat16 && !linear_weights.count(parameter.unsafeGetTensorImpl()))
      parameter.set_data(parameter.to(at::kFloat));
  for (auto& buffer : model->buffers())
    if (buffer.scalar_type() == at::kBFloat16) buffer.set_data(buffer.to(at::kFloat));
  return model;
}

// A model whose encoder layers are int8 from the start (Int8Construction):
// each layer's float32 weight exists only while it is built, and the loader
// quantises the checkpoint's tensors into the int8 ones one at a time.
AlbefModel build_int8_model(const Config& config, const ModelOptions& options) {
  const TransientBuffersToOs transient;  // each layer's float32 weight goes back to the OS once replaced
  const ops::Int8Construction int8;
  return AlbefModel(config, options);
}

}  // namespace

AlbefModel load_inference_model(const Config& config, ModelOptions options, const std::string& checkpoint,
                                c10::Device device, Precision precision, LoadReport* report) {
  options.momentum_encoders = false;
  if (precision == Precision::Int8 && !device.is_cpu())
    fail("--precision int8 runs on the CPU only (use bf16 on a GPU)");
  AlbefModel model = precision == Precision::Bf16 && device.is_cpu() ? build_bf16_model(config, options)
                     : precision == Precision::Int8                  ? build_int8_model(config, options)
                                                                     : AlbefModel(config, options);
  const LoadReport loaded = load_checkpoint(model, checkpoint);
  // The loading's own buffers (the checkpoint's tensors, the quantisation's temporaries) were freed between
  // the model's: their pages go back to the OS before packing adds a layer's copy at a time on top of them
  // (int8 text's peak: 1.33x the weights -> 1.25x), and again after it (the plain weights replaced), or they
  // stay resident for good. What inference reuses of them comes back once, on first touch.
  give_back_free_pages();
  for (const auto& key : loaded.missing_keys)
    if (key != "temp") fail(checkpoint, ": the checkpoint has no '", key, "' (is it an ALBEF checkpoint for this task?)");
  model->to(device);
  prepare_for_inference(model, precision);
  give_back_free_pages();
  if (report) *report = loaded;
  return model;
}

}  // namespace albef
