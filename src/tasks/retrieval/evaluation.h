#pragma once
/// @file evaluation.h
/// @brief The official image-text retrieval evaluation (Retrieval.py
/// `evaluation` + `itm_eval`): ITC similarities for every pair, then each
/// query's top `k_test` candidates re-scored with the ITM head.

#include "albef/core/runtime.h"
#include "albef/model/albef.h"
#include "albef/text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <string>
#include <functional>
#include <vector>

namespace albef {

/// Settings of one evaluation run.
struct RetrievalEvalOptions {
  int64_t k_test = 256;         ///< candidates re-ranked per query (capped at the gallery size)
  int64_t image_batch = 64;     ///< images per encoder pass (batch_size_test)
  int64_t text_batch = 256;     ///< texts per encoder pass (as the official code)
  int64_t fusion_batch = 128;   ///< at most this many (text, image) pairs per fusion pass (see itm_logits)
  int max_text_length = 30;
  Precision precision = Precision::Fp32;
  int rank = 0;                 ///< this process's share of the queries (distributed evaluation)
  int world_size = 1;
};

/// Score matrices as the official evaluation returns them: ITM scores
/// (itm_head logit of class 1) at each query's top-k ITC candidates, -100
/// elsewhere. Float32, CPU.
struct RetrievalScores {
  at::Tensor i2t;  ///< [images, texts]
  at::Tensor t2i;  ///< [texts, images]
  at::Tensor itc;  ///< [images, texts]: the ITC similarities the candidates were taken from
  int64_t pairs_scored = 0;  ///< (image, text) pairs through the fusion: each once, whichever directions rank it
};

/// Runs the evaluation on images (files, official test transform) and
/// captions (already pre_caption'ed). With world_size > 1 only this rank's
/// rows are filled (the rest stay -100 wherever this rank scored nothing);
/// the caller sums the matrices over ranks as the official all_reduce does.
/// Each image's cross-attention keys and values are computed once per group
/// of captions it is scored against, not once per pair.
RetrievalScores evaluate_retrieval(AlbefModel& model, const text::BertTokenizer& tokenizer,
                                   const std::vector<std::string>& image_paths, const std::vector<std::string>& texts,
                                   const RetrievalEvalOptions& options);

/// Images [begin, end) of a gallery, already through the test transform:
/// float32 [end - begin, 3, R, R].
using ImageBatches = std::function<at::Tensor(int64_t begin, int64_t end)>;

/// The same evaluation on `n_images` images given batch by batch and
/// captions already tokenized (padded to one length).
RetrievalScores evaluate_retrieval(AlbefModel& model, int64_t n_images, const ImageBatches& images,
                                   const text::BatchEncoding& texts, const RetrievalEvalOptions& options);

/// ITM scores (class-1 logit) of texts `text_rows` of the fusion inputs
/// `text_states` / `text_masks`, each paired with the one image
/// `image_tokens` [1, P, D]: the image's keys and values, projected once,
/// serve every text in every fusion layer and pass of `batch` (itm_logits).
at::Tensor rerank_one_image(AlbefModel& model, const at::Tensor& image_tokens, const at::Tensor& text_states,
                            const at::Tensor& text_masks, const at::Tensor& text_rows, int64_t batch);

/// The official `itm_eval` metrics: txt_r1/5/10 (image -> text, a hit when
/// any of the image's captions ranks within k), img_r1/5/10, the means and
/// r_mean, in percent.
nlohmann::json itm_eval(const at::Tensor& scores_i2t, const at::Tensor& scores_t2i,
                        const std::vector<int64_t>& txt2img, const std::vector<std::vector<int64_t>>& img2txt);

}  // namespace albef
