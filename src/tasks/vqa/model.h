#pragma once
// The VQA model's forward passes (models/model_vqa.py): the training loss on
// weighted answers with distillation from the momentum decoder, and
// rank_answer's two-stage ranking of a candidate list.

#include "albef/model/albef.h"

namespace albef {

/// Loss of one training batch and what tests compare.
struct VqaTrainOutputs {
  at::Tensor loss;             ///< sum(weights * per_answer_loss) / questions
  at::Tensor per_answer_loss;  ///< [A] (1 - alpha) * token CE sum + alpha * distillation sum
  at::Tensor image_embeds;     ///< [B, 1 + P, D]
  at::Tensor question_states;  ///< [B, Lq, H]: the encoder's fused question
};

/// VQA.py's training forward. Questions [B, Lq]; answers [A, La] (each
/// `[CLS] answer [SEP]`, padded with 0); `weights` [A]; `answers_per_question`
/// [B] int64 (n, summing to A). With `distill` the momentum encoders are
/// updated first and their decoder's next-token distributions are the soft
/// targets (weight alpha). Each question's cross-attention keys and values
/// are computed once for all its answers.
VqaTrainOutputs vqa_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& question_ids,
                            const at::Tensor& question_mask, const at::Tensor& answer_ids,
                            const at::Tensor& answer_mask, const at::Tensor& weights,
                            const at::Tensor& answers_per_question, double alpha, bool distill);

/// SIMLA's VQA.py initialises its decoder from the checkpoint's layers from 6
/// on (ALBEF's fusion_layer, kept literally for the single-stream BERT).
constexpr int64_t kSimlaVqaFirstDecoderSource = 6;

/// The fused question states [B, Lq, H] over image tokens [B or 1, P, D]:
/// the text layers then the fusion layers, or, on the single-stream BERT,
/// every layer from the words.
at::Tensor fuse_questions(AlbefModel& model, const at::Tensor& question_ids, const at::Tensor& question_mask,
                          const at::Tensor& image_embeds);

/// The encoder's fused question states [B, Lq, H] over the images' tokens.
at::Tensor encode_questions(AlbefModel& model, const at::Tensor& images, const at::Tensor& question_ids,
                            const at::Tensor& question_mask);

/// rank_answer's stages, each as the official code computes it.
struct AnswerRanking {
  at::Tensor prob_first_token;   ///< [Q, N]: p(first answer token | [CLS]) of every answer
  at::Tensor first_stage_ids;    ///< [Q, k]: the k most likely by the first token, descending
  at::Tensor first_stage_probs;  ///< [Q, k]
  at::Tensor answer_loss;        ///< [Q * k]: token CE sum of each candidate (question-major)
  at::Tensor log_probs_sum;      ///< [Q, k]: log p(first) - answer_loss (the first token counted twice, as VQA.py)
  at::Tensor topk_ids;           ///< [Q, k]: answer indices re-ranked by softmax(log_probs_sum)
  at::Tensor topk_probs;         ///< [Q, k]: descending
};

/// rank_answer: the `k` best of the candidate answers (`answer_ids` [N, La],
/// each `[CLS] answer [SEP]`) for every question state. Each question's
/// cross-attention keys and values serve all its k candidates, and the LM
/// head runs on the answer tokens only, a group of questions at a time.
AnswerRanking rank_answers(AlbefModel& model, const at::Tensor& question_states, const at::Tensor& question_mask,
                           const at::Tensor& answer_ids, const at::Tensor& answer_mask, int64_t k);

}  // namespace albef
