// Zero-shot classification: the label side (templates, prompt ensembling)
// and the scores of a batch of images (ITC softmax, optional ITM re-rank).

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/data/annotations.h"
#include "albef/model/itm.h"
#include "albef/tasks/classify.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>

namespace albef {
namespace {

std::string trimmed(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t\r");
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(" \t\r") - begin + 1);
}

std::string fill(const std::string& template_text, const std::string& label) {
  std::string out = template_text;
  out.replace(out.find("{}"), 2, label);
  return out;
}

}  // namespace

const std::vector<std::string>& default_templates() {
  // CLIP's short ensemble (its notebooks' "7 templates"), the plain photo first.
  static const std::vector<std::string> templates = {
      "a photo of a {}.",       "itap of a {}.",          "a bad photo of the {}.",   "a origami {}.",
      "a photo of the large {}.", "a {} in a video game.", "art of the {}.",           "a photo of the small {}."};
  return templates;
}

std::vector<std::string> read_labels(const std::string& spec) {
  const bool from_file = std::filesystem::is_regular_file(spec);
  std::vector<std::string> labels;
  std::vector<size_t> where;  // line (file) or position (list) of each label
  if (from_file) {
    std::istringstream in(read_file(spec));
    std::string line;
    for (size_t number = 1; std::getline(in, line); ++number) {
      const std::string label = trimmed(line);
      if (label.empty()) continue;
      labels.push_back(label);
      where.push_back(number);
    }
  } else {
    std::istringstream in(spec);
    std::string item;
    for (size_t position = 1; std::getline(in, item, ','); ++position) {
      const std::string label = trimmed(item);
      if (label.empty()) continue;
      labels.push_back(label);
      where.push_back(position);
    }
  }
  const std::string source = from_file ? spec : "--labels";
  if (labels.empty()) fail(source, ": no labels (give \"cat,dog,horse\" or a file with one label per line)");
  std::map<std::string, size_t> first;
  for (size_t i = 0; i < labels.size(); ++i) {
    const auto [it, inserted] = first.emplace(labels[i], where[i]);
    if (!inserted)
      fail(source, ": label \"", labels[i], "\" is given twice (", from_file ? "lines " : "items ", it->second, " and ",
           where[i], ")");
  }
  return labels;
}

std::vector<std::string> read_templates(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<std::string> templates;
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    const std::string text = trimmed(line);
    if (text.empty()) continue;
    const size_t at = text.find("{}");
    if (at == std::string::npos)
      fail(path, ": line ", number, ": template \"", text, "\" has no {} where the label goes");
    if (text.find("{}", at + 2) != std::string::npos)
      fail(path, ": line ", number, ": template \"", text, "\" has more than one {}");
    templates.push_back(text);
  }
  if (templates.empty()) fail(path, ": no templates (one per line, e.g. \"a photo of a {}.\")");
  return templates;
}

ZeroShotLabels embed_labels(AlbefInference& albef, const std::vector<std::string>& labels,
                            const std::vector<std::string>& templates, bool for_rerank) {
  ALBEF_CHECK(!labels.empty() && !templates.empty(), "zero-shot classification needs labels and templates");
  ZeroShotLabels out;
  out.names = labels;
  std::vector<std::string> captions;
  for (const std::string& label : labels)
    for (const std::string& t : templates) captions.push_back(fill(t, label));
  const auto count = static_cast<int64_t>(labels.size()), per_label = static_cast<int64_t>(templates.size());
  const at::Tensor features = albef.text_features(captions);  // normalised, [L * T, D]
  out.features = l2_normalize(features.view({count, per_label, -1}).mean(1));
  if (!for_rerank) return out;

  std::vector<std::string> first;
  for (const std::string& label : labels) first.push_back(fill(templates[0], label));
  const text::BatchEncoding encoding = albef.tokenize(first);  // one padding for all, so rows gather freely
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> states;
  const int64_t batch = albef.options().batch_size;
  for (int64_t begin = 0; begin < count; begin += batch) {
    const int64_t end = std::min(count, begin + batch);
    PrecisionGuard precision(albef.options().precision, albef.device());
    states.push_back(albef.model()->encode_text(encoding.input_ids.slice(0, begin, end).to(albef.device()),
                                                encoding.attention_mask.slice(0, begin, end).to(albef.device())));
  }
  out.rerank_states = at::cat(states);
  out.rerank_mask = encoding.attention_mask.to(albef.device());
  return out;
}

ZeroShotScores classify_images(AlbefModel& model, const ZeroShotLabels& labels, const at::Tensor& images,
                               int64_t top, int64_t rerank, Precision precision) {
  const auto count = static_cast<int64_t>(labels.names.size());
  ALBEF_CHECK(rerank == 0 || labels.rerank_states.defined(),
              "ITM re-ranking needs labels embedded with for_rerank");
  const c10::Device device = model->temp.device();
  at::NoGradGuard no_grad;
  PrecisionGuard guard(precision, device);
  // The image tokens only where ITM re-ranks; the features alone cost less (encode_image_features).
  const at::Tensor embeds = rerank > 0 ? model->encode_image(images.to(device)) : at::Tensor();
  const at::Tensor image_feat =
      rerank > 0 ? model->image_feature(embeds) : model->encode_image_features(images.to(device));
  ZeroShotScores out;
  {
    // The similarities stay in float32: in bf16, logits near 1/temp move in steps of 1/16.
    const AutocastOff fp32;
    const at::Tensor logits = at::matmul(image_feat, labels.features.to(device).t()) / model->temp.to(at::kFloat);
    out.probabilities = at::softmax(logits, 1).to(at::kCPU, at::kFloat);
  }
  const int64_t k = std::min(count, std::max<int64_t>(top, rerank));
  auto [values, indices] = out.probabilities.topk(k, 1);
  out.ranking = indices.contiguous();
  out.ranked_probabilities = values.contiguous();
  if (rerank <= 0) return out;

  const int64_t depth = std::min(count, rerank);
  out.ranked_match = at::full({images.size(0), k}, std::numeric_limits<float>::quiet_NaN());
  for (int64_t b = 0; b < images.size(0); ++b) {
    const at::Tensor rows = out.ranking[b].slice(0, 0, depth).to(device);
    // One image for all its candidates: its keys and values are computed once (FusionImages).
    FusionImages image(embeds.slice(0, b, b + 1));
    const at::Tensor match =
        at::softmax(itm_logits(model, labels.rerank_states, labels.rerank_mask, image, {}, 0, rows), 1)
            .select(1, 1)
            .to(at::kCPU, at::kFloat);
    const at::Tensor order = match.argsort(0, /*descending=*/true);
    out.ranking[b].slice(0, 0, depth).copy_(out.ranking[b].slice(0, 0, depth).index_select(0, order));
    out.ranked_probabilities[b].slice(0, 0, depth).copy_(
        out.ranked_probabilities[b].slice(0, 0, depth).index_select(0, order));
    out.ranked_match[b].slice(0, 0, depth).copy_(match.index_select(0, order));
  }
  return out;
}

}  // namespace albef
