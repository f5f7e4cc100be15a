#include "tasks/retrieval/step.h"

#include "albef/core/error.h"

namespace albef {

StepOutputs retrieval_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                              const at::Tensor& attention_mask, double alpha, const at::Tensor& image_ids,
                              bool distill, const StepChoices* injected, const FeatureGather& gather) {
  ALBEF_CHECK(model->options().id_queue && model->options().momentum_encoders,
              "retrieval fine-tuning needs the id queue (retrieval_model_options) and momentum encoders");
  ALBEF_CHECK(image_ids.defined() && image_ids.numel() == images.size(0), "one image id per pair is needed, got ",
              image_ids.defined() ? image_ids.numel() : 0, " for ", images.size(0), " pairs");
  StepOutputs out;
  contrast_and_match(model, images, input_ids, attention_mask, alpha, image_ids, distill, injected, gather, out);
  return out;
}

std::function<std::unique_ptr<TrainData>(data::TrainLoaderOptions, c10::Device)> retrieval_train_data(
    std::shared_ptr<data::TrainDataset> dataset, data::SampleTransform transform, int64_t batch_size,
    std::shared_ptr<const text::BertTokenizer> tokenizer, const Config& config) {
  const int max_tokens = static_cast<int>(config.bert.max_position_embeddings);
  const bool distill = config.distill;
  return [dataset, transform, batch_size, tokenizer, max_tokens, distill](data::TrainLoaderOptions loader,
                                                                          c10::Device device) {
    loader.batch_size = batch_size;
    auto pairs = std::make_unique<data::TrainLoader>(std::move(*dataset), transform, loader);
    return bind_train_data(std::move(pairs), [tokenizer, device, max_tokens, distill](
                                                 AlbefModel& model, const data::TrainBatch& batch, double alpha,
                                                 const FeatureGather& gather) {
      const text::BatchEncoding text = tokenizer->encode_batch(batch.captions, max_tokens, text::Padding::Longest);
      const StepOutputs out = retrieval_forward(model, batch.images.to(device), text.input_ids.to(device),
                                                text.attention_mask.to(device), alpha, batch.image_idx.to(device),
                                                distill, nullptr, gather);
      return std::vector<at::Tensor>{out.loss_ita, out.loss_itm};
    });
  };
}

}  // namespace albef
