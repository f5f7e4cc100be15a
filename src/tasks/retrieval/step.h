#pragma once
// One retrieval fine-tuning forward pass (models/model_retrieval.py): ITC and
// ITM as train/contrastive_step, with every pair of the same image a positive.

#include "albef/data/loader.h"
#include "albef/text/tokenizer.h"
#include "train/contrastive_step.h"

#include <memory>

namespace albef {

/// Runs the official retrieval fine-tuning forward (a model from
/// retrieval_model_options with momentum encoders): `image_ids` [B] (the
/// contiguous image index of each pair) makes every pair of the same image a
/// positive in ITC (also against the id queue) and excludes it from
/// hard-negative sampling. `distill` mixes in the momentum model's
/// similarities with weight alpha.
StepOutputs retrieval_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                              const at::Tensor& attention_mask, double alpha, const at::Tensor& image_ids,
                              bool distill, const StepChoices* injected = nullptr, const FeatureGather& gather = {});

/// TrainingTask::data of a retrieval-style fine-tuning (Retrieval.py,
/// Grounding.py): `dataset`'s pairs through `transform` in batches of
/// `batch_size`, captions tokenized as those scripts do (padding='longest',
/// max_length=30 but no truncation=True, so HF keeps every word piece of the
/// 30-word caption, up to the position table), into retrieval_forward with
/// the config's `distill`. The dataset moves into the loader on first use.
std::function<std::unique_ptr<TrainData>(data::TrainLoaderOptions, c10::Device)> retrieval_train_data(
    std::shared_ptr<data::TrainDataset> dataset, data::SampleTransform transform, int64_t batch_size,
    std::shared_ptr<const text::BertTokenizer> tokenizer, const Config& config);

}  // namespace albef
