#include "tasks/classification/classifier.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "train/contrastive_step.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>

#include <fstream>

namespace albef::classification {

HeadSpec classifier_head(int64_t classes) {
  HeadSpec spec;
  spec.name = "cls_head";
  spec.momentum = true;
  spec.make = [classes](const Config& config) -> std::shared_ptr<torch::nn::Module> {
    const int64_t width = config.bert.hidden_size;
    return torch::nn::Sequential(torch::nn::Linear(width, width), torch::nn::ReLU(),
                                 torch::nn::Linear(width, classes))
        .ptr();
  };
  return spec;
}

at::Tensor classify(AlbefModel& model, const std::string& head, const at::Tensor& fused_states) {
  return model->head_as<torch::nn::SequentialImpl>(head).forward(fused_states.select(1, 0));
}

at::Tensor distilled_loss(const at::Tensor& prediction, const at::Tensor& prediction_m, const at::Tensor& targets,
                          double alpha) {
  ALBEF_CHECK(prediction.dim() == 2 && targets.dim() == 1 && prediction.size(0) == targets.size(0),
              "predictions ", prediction.sizes(), " do not match targets ", targets.sizes());
  const at::Tensor ce = at::cross_entropy_loss(prediction, targets);
  if (!prediction_m.defined()) return ce;
  const at::Tensor distill = (at::log_softmax(prediction, 1) * at::softmax(prediction_m, 1)).sum(1).mean();
  return (1.0 - alpha) * ce - alpha * distill;
}

double SplitPredictions::accuracy() const {
  if (targets.numel() == 0) return 0.0;
  return logits.argmax(1).eq(targets).to(at::kDouble).mean().item<double>();
}

void write_predictions(const std::string& path, const at::Tensor& logits) {
  const at::Tensor probabilities = at::softmax(logits.to(at::kDouble), 1).contiguous();
  const at::Tensor classes = logits.argmax(1).contiguous();
  nlohmann::json out = nlohmann::json::array();
  const auto p = probabilities.accessor<double, 2>();
  for (int64_t i = 0; i < logits.size(0); ++i) {
    std::vector<double> row(p[i].data(), p[i].data() + logits.size(1));
    out.push_back({{"prediction", classes[i].item<int64_t>()}, {"probabilities", row}});
  }
  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream file(tmp);
    file << out.dump() << "\n";
    if (!file) fail(path, ": cannot write");
  });
}

at::Tensor fuse_items(AlbefModel& model, bool momentum, const at::Tensor& images, const at::Tensor& input_ids,
                      const at::Tensor& attention_mask) {
  const int64_t per_text = model->options().images_per_text, texts = input_ids.size(0);
  ALBEF_CHECK(images.dim() == 4 && images.size(0) == per_text * texts, "expected ", per_text, " x ", texts,
              " images [", per_text * texts, ", 3, R, R] for ", texts, " texts, got ", images.sizes());
  const at::Tensor embeds = momentum ? model->visual_encoder_m->forward(images) : model->encode_image(images);
  std::vector<FusionImages> sources;
  sources.reserve(static_cast<size_t>(per_text));
  for (int64_t k = 0; k < per_text; ++k) sources.emplace_back(embeds.slice(0, k * texts, (k + 1) * texts));
  std::vector<FusionImages*> pointers;
  for (FusionImages& source : sources) pointers.push_back(&source);
  BertModel& bert = momentum ? model->text_bert_m() : model->text_bert();
  return bert->forward_multimodal(input_ids, attention_mask, pointers);
}

TrainOutputs train_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                           const at::Tensor& attention_mask, const at::Tensor& targets, double alpha, bool distill) {
  ALBEF_CHECK(!distill || model->options().momentum_encoders, "distillation needs the momentum encoders");
  TrainOutputs out;
  out.last_hidden_state = fuse_items(model, false, images, input_ids, attention_mask);
  out.prediction = classify(model, "cls_head", out.last_hidden_state);
  if (distill) {
    at::NoGradGuard no_grad;
    momentum_update(model, model->config().momentum);
    out.prediction_m = classify(model, "cls_head_m", fuse_items(model, true, images, input_ids, attention_mask));
  }
  out.loss = distilled_loss(out.prediction.to(at::kFloat),
                            out.prediction_m.defined() ? out.prediction_m.to(at::kFloat) : at::Tensor(), targets, alpha);
  return out;
}

std::pair<int64_t, int64_t> share_of(int64_t rows, int rank, int world_size) {
  const int64_t step = (rows + world_size - 1) / world_size;
  const int64_t begin = std::min<int64_t>(rows, rank * step);
  return {begin, std::min(rows, begin + step)};
}

}  // namespace albef::classification
