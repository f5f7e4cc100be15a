#pragma once
/// @file retrieval.h
/// @brief `albef retrieval`: the official Retrieval.py. Fine-tunes a
/// pretrained checkpoint for image-text retrieval (evaluating on val_file
/// and test_file after every epoch and keeping the best on val r_mean), or
/// with `evaluate` only evaluates it, zero-shot or fine-tuned.

#include "albef/model/albef.h"
#include "albef/train/trainer.h"

namespace albef {

/// models/model_retrieval.py: a plain BertModel text encoder, the
/// contrastive projections, `itm_head`, and with momentum encoders the
/// queues and the image-id queue.
ModelOptions retrieval_model_options(bool momentum_encoders = true);

/// Flags of a retrieval run, as Retrieval.py's (plus albef's training flags).
struct RetrievalOptions : TrainOptions {
  bool evaluate = false;  ///< only evaluate `checkpoint` (Retrieval.py --evaluate)
};

/// Fine-tunes (or with `evaluate`, evaluates) as Retrieval.py. Every
/// evaluation prints the itm_eval metrics, and they go to
/// output_dir/log.txt as one JSON line ({"val_txt_r1": ..., "test_r_mean":
/// ..., "epoch": N}, with "train_*" when training). The test set's score
/// matrices are written as score_i2t.npy [images, texts] and score_t2i.npy
/// [texts, images] (float32). Returns the last test metrics.
nlohmann::json run_retrieval(const RetrievalOptions& options);

}  // namespace albef
