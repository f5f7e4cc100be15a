#pragma once
/// @file vqa.h
/// @brief `albef vqa` and `albef ask`: the official VQA.py (src/tasks/vqa/).
/// Fine-tunes a pretrained checkpoint with an answer decoder on weighted
/// answers, or with `evaluate` ranks a candidate answer list for every test
/// question; `ask` answers questions about one image.

#include "albef/model/albef.h"
#include "albef/train/trainer.h"

#include <nlohmann/json.hpp>

#include <memory>

#include <string>
#include <vector>

namespace albef {

/// models/model_vqa.py: a plain BertModel encoder and the answer decoder
/// `text_decoder` (BertLMHeadModel with `decoder_layers` layers, each
/// cross-attending to the question's fused states; its LM head tied to its
/// own word embeddings), with momentum copies when `momentum_encoders`.
/// Checkpoint keys go through vqa_checkpoint_keys.
ModelOptions vqa_model_options(const Config& config, bool momentum_encoders = true);

/// VQA.py's renaming of a pretraining checkpoint: `text_encoder.bert.X`
/// loads the encoder's `text_encoder.X`; text-encoder layers N >= the
/// fusion layer also become decoder layers N - fusion_layer
/// (`text_decoder.bert.encoder.layer.*`), the embeddings the decoder's, the
/// MLM head its LM head; the same for `_m`. VQA.py hard-codes 6 for the
/// fusion layer; `first_decoder_layer` is it. Keys already in the VQA
/// layout (a fine-tuned or resumed checkpoint) load as they are.
std::vector<std::string> vqa_checkpoint_keys(const std::string& key, int64_t first_decoder_layer);

/// Flags of a VQA run, as VQA.py's (plus albef's training flags).
struct VqaOptions : TrainOptions {
  bool evaluate = false;  ///< only rank the test questions' answers with `checkpoint`
};

/// What one evaluation found.
struct VqaEvaluation {
  std::string result_file;  ///< vqa_result.json: [{"question_id", "answer"}], as VQA.py's save_result
  std::string topk_file;    ///< vqa_topk.json: each question's k_test candidates in rank order
  /// With ground-truth answers in the test file: the official VQA accuracy
  /// ({"overall", "perAnswerType": {...}}, percent); else null.
  nlohmann::json accuracy;
};

/// A fine-tuned VQA model ready to answer questions about single images
/// (`albef ask`, the HTTP service): the model, its tokenizer and the
/// candidate answers tokenized once.
class VqaAnswerer {
 public:
  struct Answer {
    std::string answer;
    double probability;  ///< softmax over the k_test re-ranked candidates, as rank_answer
  };
  /// `answers_path` empty: the config's answer_list.
  VqaAnswerer(const std::string& config_path, const std::string& checkpoint, const std::string& answers_path = "",
              const std::string& text_encoder = "", const std::string& device = "cpu",
              Precision precision = Precision::Fp32);
  ~VqaAnswerer();
  VqaAnswerer(const VqaAnswerer&) = delete;
  VqaAnswerer& operator=(const VqaAnswerer&) = delete;
  /// The `top` best answers (at most k_test) to each question about one image
  /// ([3, R, R], the test transform), best first. The image is encoded once.
  std::vector<std::vector<Answer>> answer(const at::Tensor& image, const std::vector<std::string>& questions,
                                          int64_t top) const;
  const Config& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Fine-tunes (or with `evaluate`, only evaluates) as VQA.py: checkpoints
/// and logs as every training command; after the last epoch (or at once) the
/// test questions are answered. Returns the evaluation.
VqaEvaluation run_vqa(const VqaOptions& options);

}  // namespace albef
