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

ModelOptions nlvr_model_options(const Config& config, bool momentum_encoders) {
  // SIMLA's NLVR.py runs xbert with 18 layers and no text-only ones: not reproduced yet.
  if (config.bert.single_stream)
    fail(config.path, ": ", config.bert_config, " is SIMLA's single-stream BERT; albef nlvr fine-tunes ALBEF's "
         "two-stream model only (SIMLA models fine-tune with albef retrieval, vqa and ve, docs/simla.md)");
  ModelOptions options;
  options.text_encoder = TextEncoderLayout::Plain;
  options.contrastive = false;  // model_nlvr.py has no projections, queues or temp
  options.momentum_encoders = momentum_encoders;
  options.images_per_text = 2;
  options.heads = {classification::classifier_head(2)};
  const int64_t fusion_layer = config.bert.fusion_layer;
  options.checkpoint_keys = [fusion_layer](const std::string& key) -> std::vector<std::string> {
    // Only a pretraining checkpoint has 'bert.' keys: convert it as Pretrain_nlvr.py would.
    return contains(key, "bert.") ? ta_checkpoint_keys(key, fusion_layer) : std::vector<std::string>{key};
  };
  return options;
}

ModelOptions text_assignment_model_options(int64_t fusion_layer) {
  ModelOptions options;
  options.text_encoder = TextEncoderLayout::Plain;
  options.contrastive = true;  // vision_proj, text_proj and temp (the sampling uses vision_proj)
  options.momentum_encoders = false;
  options.images_per_text = 2;
  HeadSpec head;
  head.name = kTaHead;
  head.make = [](const Config& config) -> std::shared_ptr<torch::nn::Module> {
    return torch::nn::Linear(config.bert.hidden_size, 3).ptr();
  };
  options.heads = {head};
  options.checkpoint_keys = [fusion_layer](const std::string& key) { return ta_checkpoint_keys(key, fusion_layer); };
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
