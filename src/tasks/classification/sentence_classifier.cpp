// SentenceClassifier: the fine-tuned NLVR2 / SNLI-VE model of --predict and
// the Python module, with its tokenizer.

#include "albef/tasks/classification.h"
#include "albef/core/error.h"
#include "albef/text/tokenizer.h"
#include "tasks/classification/classifier.h"
#include "tasks/classification/fine_tune.h"

#include <ATen/ATen.h>

namespace albef {

struct SentenceClassifier::Impl {
  Config config;
  text::BertTokenizer tokenizer;
  c10::Device device;
  Precision precision;
  std::vector<std::string> class_names;
  int64_t images_per_item;
  AlbefModel model{nullptr};
};

SentenceClassifier::SentenceClassifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentenceClassifier::~SentenceClassifier() = default;
SentenceClassifier::SentenceClassifier(SentenceClassifier&&) noexcept = default;
SentenceClassifier& SentenceClassifier::operator=(SentenceClassifier&&) noexcept = default;

at::Tensor SentenceClassifier::probabilities(const std::vector<at::Tensor>& images,
                                             const std::vector<std::string>& sentences) const {
  Impl& m = *impl_;
  ALBEF_CHECK(static_cast<int64_t>(images.size()) == m.images_per_item, "this model reads ", m.images_per_item,
              " image(s) per sentence, got ", images.size());
  const int64_t res = m.config.image_res;
  for (const at::Tensor& image : images)
    ALBEF_CHECK(image.dim() == 3 && image.size(0) == 3 && image.size(1) == res && image.size(2) == res,
                "an image must be [3, ", res, ", ", res, "] (the test transform), got ", image.sizes());
  const auto texts = static_cast<int64_t>(sentences.size());
  if (texts == 0) return at::empty({0, static_cast<int64_t>(m.class_names.size())}, at::kDouble);
  // The scripts' batch order: every text's first image, then every text's second.
  std::vector<at::Tensor> batch;
  for (const at::Tensor& image : images) batch.push_back(image.unsqueeze(0).expand({texts, -1, -1, -1}));
  std::vector<std::string> cleaned;
  for (const std::string& sentence : sentences) cleaned.push_back(text::pre_caption(sentence, 30));
  const text::BatchEncoding encoding = m.tokenizer.encode_batch(
      cleaned, static_cast<int>(m.config.bert.max_position_embeddings), text::Padding::Longest);
  at::NoGradGuard no_grad;
  PrecisionGuard guard(m.precision, m.device);
  const at::Tensor fused =
      classification::fuse_items(m.model, false, at::cat(batch).to(m.device), encoding.input_ids.to(m.device),
                                 encoding.attention_mask.to(m.device));
  return at::softmax(classification::classify(m.model, "cls_head", fused).to(at::kCPU, at::kDouble), 1);
}

const std::vector<std::string>& SentenceClassifier::class_names() const { return impl_->class_names; }
int64_t SentenceClassifier::images_per_item() const { return impl_->images_per_item; }
const Config& SentenceClassifier::config() const { return impl_->config; }

namespace classification {

SentenceClassifier make_sentence_classifier(const ClassificationTask& task, const std::string& config_path,
                                            const std::string& checkpoint, const std::string& text_encoder,
                                            const std::string& device, Precision precision) {
  Config config = load_config(config_path, text_encoder);
  text::BertTokenizer tokenizer(config.vocab);
  const c10::Device on = parse_device(device);
  AlbefModel model = load_inference_model(config, task.model(config, false), checkpoint, on, precision);
  auto impl = std::unique_ptr<SentenceClassifier::Impl>(new SentenceClassifier::Impl{
      std::move(config), std::move(tokenizer), on, precision, task.class_names, task.images_per_item, model});
  return SentenceClassifier(std::move(impl));
}

}  // namespace classification
}  // namespace albef
