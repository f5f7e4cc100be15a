#include "tasks/nlvr/model.h"

#include "albef/core/error.h"
#include "albef/tasks/nlvr.h"
#include "tasks/classification/classifier.h"

#include <ATen/ATen.h>

namespace albef {
namespace {

constexpr const char* kTaHead = "ta_head";

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

std::vector<std::string> split_dots(const std::string& key) {
  std::vector<std::string> parts;
  for (size_t begin = 0, dot;; begin = dot + 1) {
    dot = key.find('.', begin);
    parts.push_back(key.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin));
    if (dot == std::string::npos) return parts;
  }
}

std::string join_dots(const std::vector<std::string>& parts) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? "." : "") + parts[i];
  return out;
}

}  // namespace

std::vector<std::string> ta_checkpoint_keys(const std::string& key, int64_t fusion_layer) {
  if (!contains(key, "bert")) return {key};
  const std::string plain = replace_all(key, "bert.", "");
  if (!contains(plain, "layer")) return {plain};  // 'LayerNorm' has no lower-case 'layer'
  // Pretrain_nlvr.py: the 4th field of 'text_encoder.encoder.layer.N...' is N.
  std::vector<std::string> parts = split_dots(plain);
  int64_t layer = -1;
  try {
    if (parts.size() > 3) layer = std::stoll(parts[3]);
  } catch (const std::exception&) {
  }
  if (layer < 0) fail("checkpoint key '", key, "': expected text_encoder.bert.encoder.layer.N");
  if (layer < fusion_layer) return {plain};
  std::vector<std::string> keys;
  for (int64_t copy = 0; copy < 2; ++copy) {
    parts[3] = std::to_string(2 * (layer - fusion_layer) + fusion_layer + copy);
    keys.push_back(join_dots(parts));
  }
  return keys;
}

bool is_simla_config(const Config& config) {
  return config.bert.single_stream || config.raw.contains("vit_mask_token");
}

namespace {

// Text-encoder layer N of 'text_encoder[_m].[bert.]encoder.layer.N...', or -1.
int64_t text_layer_of(const std::string& key) {
  const std::vector<std::string> parts = split_dots(replace_all(key, "bert.", ""));
  if (parts.size() < 5 || parts[0].rfind("text_encoder", 0) != 0 || parts[1] != "encoder" || parts[2] != "layer") return -1;
  try {
    return std::stoll(parts[3]);
  } catch (const std::exception&) {
    return -1;
  }
}

// The model's text encoder and how a checkpoint reaches it, ALBEF's or SIMLA's.
void set_text_encoder(const Config& config, ModelOptions& options) {
  options.images_per_text = 2;
  if (is_simla_config(config)) {
    options.text_bert = simla_nlvr_bert(config.bert);
    // Pretrain_NLVR.py doubles the checkpoint's layers from where the pairs start (its literal 6).
    options.checkpoint_keys = [first = options.text_bert->shared_cross_attention_from](
                                  const std::string& key) -> std::vector<std::string> {
      return contains(key, "bert.") ? ta_checkpoint_keys(key, first) : std::vector<std::string>{key};
    };
    return;
  }
  options.checkpoint_keys = [path = config.path, fusion_layer = config.bert.fusion_layer](
                                const std::string& key) -> std::vector<std::string> {
    const int64_t layer = text_layer_of(key);
    if (layer >= 0 && layer < fusion_layer && contains(key, ".crossattention."))
      fail("checkpoint key '", key, "': a cross-attention below fusion_layer ", fusion_layer,
           " is SIMLA's; give SIMLA's NLVR config (its vit_mask_token key, or a single-stream bert_config) instead of ",
           path);
    // Only a pretraining checkpoint has 'bert.' keys: convert it as Pretrain_nlvr.py would.
    return contains(key, "bert.") ? ta_checkpoint_keys(key, fusion_layer) : std::vector<std::string>{key};
  };
}

}  // namespace

BertConfig simla_nlvr_bert(const BertConfig& bert) {
  BertConfig doubled = bert;
  // The layers doubled start at ALBEF's fusion_layer, or the single-stream BERT's middle (6 of 12).
  doubled.fusion_layer = bert.single_stream ? bert.num_hidden_layers / 2 : bert.fusion_layer;
  doubled = with_fusion_per_image(doubled, 2);
  doubled.shared_cross_attention_from = doubled.fusion_layer;
  doubled.fusion_layer = 0;
  doubled.single_stream = false;  // models/xbert.py: token-type embeddings, and no text-only mode is used
  return doubled;
}

ModelOptions nlvr_model_options(const Config& config, bool momentum_encoders) {
  ModelOptions options;
  options.text_encoder = TextEncoderLayout::Plain;
  options.contrastive = false;  // model_nlvr.py has no projections, queues or temp
  options.momentum_encoders = momentum_encoders;
  options.heads = {classification::classifier_head(2)};
  set_text_encoder(config, options);
  return options;
}

ModelOptions text_assignment_model_options(const Config& config) {
  ModelOptions options;
  options.text_encoder = TextEncoderLayout::Plain;
  options.contrastive = true;  // vision_proj, text_proj and temp (the sampling uses vision_proj)
  options.momentum_encoders = false;
  HeadSpec head;
  head.name = kTaHead;
  head.make = [](const Config& config) -> std::shared_ptr<torch::nn::Module> {
    return torch::nn::Linear(config.bert.hidden_size, 3).ptr();
  };
  options.heads = {head};
  set_text_encoder(config, options);
  return options;
}

TextAssignmentOutputs text_assignment_forward(AlbefModel& model, const at::Tensor& images,
                                              const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  const int64_t batch = images.size(0);
  ALBEF_CHECK(batch >= 3, "text assignment draws two other images per text: it needs a batch of at least 3, got ",
              batch);
  ALBEF_CHECK(input_ids.size(0) == batch, batch, " images but ", input_ids.size(0), " texts");
  const at::Tensor image_embeds = model->encode_image(images);
  at::Tensor weights;
  {
    at::NoGradGuard no_grad;
    const at::Tensor feature = l2_normalize(model->vision_proj->forward(image_embeds.select(1, 0)).to(at::kFloat));
    weights = at::softmax(feature.mm(feature.t()) / 0.07, 1);
    weights.fill_diagonal_(0);
  }
  std::vector<int64_t> first, second, labels;
  for (int64_t b = 0; b < batch; ++b) {
    if ((at::rand({1}) > 1.0 / 3).item<bool>()) {
      const int64_t other = at::multinomial(weights[b], 1).item<int64_t>();
      const bool own_first = (at::rand({1}) > 0.5).item<bool>();
      first.push_back(own_first ? b : other);
      second.push_back(own_first ? other : b);
      labels.push_back(own_first ? 0 : 1);
    } else {
      const at::Tensor two = at::multinomial(weights[b], 2);
      first.push_back(two[0].item<int64_t>());
      second.push_back(two[1].item<int64_t>());
      labels.push_back(2);
    }
  }
  const at::Device device = images.device();
  FusionImages image0(image_embeds.index_select(0, at::tensor(first, at::kLong).to(device)));
  FusionImages image1(image_embeds.index_select(0, at::tensor(second, at::kLong).to(device)));
  const at::Tensor hidden = model->text_bert()->forward_multimodal(input_ids, attention_mask, {&image0, &image1});
  TextAssignmentOutputs out;
  out.logits = model->head_as<torch::nn::LinearImpl>(kTaHead).forward(hidden.select(1, 0));
  out.labels = at::tensor(labels, at::kLong).to(device);
  out.loss = at::cross_entropy_loss(out.logits.to(at::kFloat), out.labels);
  return out;
}

}  // namespace albef
