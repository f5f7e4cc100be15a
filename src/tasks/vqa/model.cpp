#include "tasks/vqa/model.h"

#include "albef/core/error.h"
#include "albef/tasks/vqa.h"
#include "train/contrastive_step.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <tuple>

namespace albef {
namespace {

constexpr const char* kDecoder = "text_decoder";
constexpr const char* kDecoderMomentum = "text_decoder_m";

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// Python's str.replace(old, new): every occurrence.
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

// The answer tokens that predict a real next token: position t of row r
// predicts token t + 1 (VQA.py's shift), padding (id 0) is ignored (-100).
struct AnswerTokens {
  at::Tensor flat;    // [T] indices into the [A, La - 1] predicting positions
  at::Tensor rows;    // [T] the answer of each
  at::Tensor labels;  // [T] the token each predicts
};

AnswerTokens answer_tokens(const at::Tensor& answer_ids) {
  const at::Tensor next = answer_ids.slice(1, 1);  // [A, La - 1]
  AnswerTokens tokens;
  tokens.flat = (next.reshape({-1}) != 0).nonzero().view({-1});
  tokens.labels = next.reshape({-1}).index_select(0, tokens.flat);
  tokens.rows = at::div(tokens.flat, next.size(1), "floor");
  return tokens;
}

// The decoder's logits [T, vocab] at `tokens` only: the LM head is 30522
// wide, and VQA's losses read no other position.
at::Tensor logits_at(BertLMHeadModelImpl& decoder, const at::Tensor& answer_ids, const at::Tensor& answer_mask,
                     FusionImages& questions, const at::Tensor& question_rows, const AnswerTokens& tokens) {
  const at::Tensor hidden = decoder.bert->forward_causal(answer_ids, answer_mask, questions, question_rows);
  const at::Tensor predicting = hidden.slice(1, 0, hidden.size(1) - 1).reshape({-1, hidden.size(-1)});
  return decoder.predictions->forward(predicting.index_select(0, tokens.flat)).to(at::kFloat);
}

// Token losses summed per answer (VQA.py's reduction='none' then sum(1)).
at::Tensor sum_per_answer(const at::Tensor& per_token, const AnswerTokens& tokens, int64_t answers) {
  return at::zeros({answers}, per_token.options()).index_add(0, tokens.rows, per_token);
}

}  // namespace

ModelOptions vqa_model_options(const Config& config, bool momentum_encoders) {
  ModelOptions options;
  options.text_encoder = TextEncoderLayout::Plain;
  options.contrastive = false;  // model_vqa.py has no projections, queues or temp
  options.momentum_encoders = momentum_encoders;
  HeadSpec decoder;
  decoder.name = kDecoder;
  decoder.momentum = true;
  decoder.make = [](const Config& config) -> std::shared_ptr<torch::nn::Module> {
    BertConfig decoder_config = config.bert;
    decoder_config.fusion_layer = 0;  // every layer cross-attends to the question
    // SIMLA's VQA.py keeps shared_bert.json's depth unless the config says decoder_layers.
    decoder_config.num_hidden_layers = config.bert.single_stream && !config.raw.contains("decoder_layers")
                                           ? config.bert.num_hidden_layers
                                           : config.decoder_layers;
    return BertLMHeadModel(decoder_config).ptr();
  };
  decoder.init = [](torch::nn::Module& head) { head.as<BertLMHeadModelImpl>()->init_weights(); };
  options.heads = {decoder};
  // SIMLA's VQA.py keeps ALBEF's literal "last 6 layers": checkpoint layers 6-11 start decoder layers
  // 0-5, and the rest of its 12 keep their init (BERT-base's there, random here).
  const int64_t first_decoder_layer = config.bert.single_stream ? kSimlaVqaFirstDecoderSource : config.bert.fusion_layer;
  options.checkpoint_keys = [first_decoder_layer](const std::string& key) {
    return vqa_checkpoint_keys(key, first_decoder_layer);
  };
  return options;
}

std::vector<std::string> vqa_checkpoint_keys(const std::string& key, int64_t first_decoder_layer) {
  const bool text_encoder = starts_with(key, "text_encoder.") || starts_with(key, "text_encoder_m.");
  const bool pretrain_layout = key.find(".bert.") != std::string::npos || key.find(".cls.") != std::string::npos;
  if (!text_encoder || !pretrain_layout) return {key};  // the VQA layout already (or not the text encoder)
  std::vector<std::string> keys;
  if (key.find("bert") != std::string::npos) keys.push_back(replace_all(key, "bert.", ""));
  // VQA.py: split('.')[4] of 'text_encoder.bert.encoder.layer.N...' is N; 'LayerNorm' is not 'layer'.
  std::string decoder_key = key;
  if (key.find("layer") != std::string::npos) {
    std::vector<std::string> parts;
    for (size_t begin = 0, dot;; begin = dot + 1) {
      dot = key.find('.', begin);
      parts.push_back(key.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin));
      if (dot == std::string::npos) break;
    }
    int64_t layer = -1;
    try {
      if (parts.size() > 4) layer = std::stoll(parts[4]);
    } catch (const std::exception&) {
    }
    if (layer < 0) fail("checkpoint key '", key, "': expected text_encoder.bert.encoder.layer.N");
    if (layer < first_decoder_layer) return keys;
    parts[4] = std::to_string(layer - first_decoder_layer);
    decoder_key.clear();
    for (size_t i = 0; i < parts.size(); ++i) decoder_key += (i ? "." : "") + parts[i];
  }
  keys.push_back(replace_all(decoder_key, "text_encoder", "text_decoder"));
  return keys;
}

at::Tensor fuse_questions(AlbefModel& model, const at::Tensor& question_ids, const at::Tensor& question_mask,
                          const at::Tensor& image_embeds) {
  // The single-stream BERT fuses from the words (SIMLA's mode multimodal): no text-mode pass first.
  const at::Tensor text =
      model->config().bert.single_stream ? question_ids : model->encode_text(question_ids, question_mask);
  return model->fuse(text, question_mask, image_embeds);
}

at::Tensor encode_questions(AlbefModel& model, const at::Tensor& images, const at::Tensor& question_ids,
                            const at::Tensor& question_mask) {
  return fuse_questions(model, question_ids, question_mask, model->encode_image(images));
}

VqaTrainOutputs vqa_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& question_ids,
                            const at::Tensor& question_mask, const at::Tensor& answer_ids,
                            const at::Tensor& answer_mask, const at::Tensor& weights,
                            const at::Tensor& answers_per_question, double alpha, bool distill) {
  const int64_t questions = images.size(0), answers = answer_ids.size(0);
  ALBEF_CHECK(question_ids.size(0) == questions, images.size(0), " images but ", question_ids.size(0), " questions");
  ALBEF_CHECK(answers_per_question.numel() == questions && answers_per_question.sum().item<int64_t>() == answers,
              "answers per question ", answers_per_question.sizes(), " do not add up to the ", answers, " answers");
  ALBEF_CHECK(weights.numel() == answers, weights.numel(), " weights for ", answers, " answers");
  ALBEF_CHECK(!distill || model->options().momentum_encoders, "distillation needs the momentum encoders");
  VqaTrainOutputs out;
  out.image_embeds = model->encode_image(images);
  out.question_states = fuse_questions(model, question_ids, question_mask, out.image_embeds);
  // Answer a reads question rows[a]: VQA.py repeats each question's states n times.
  const at::Tensor n = answers_per_question.to(images.device(), at::kLong);
  const at::Tensor rows = at::arange(questions, n.options()).repeat_interleave(n);
  const AnswerTokens tokens = answer_tokens(answer_ids);

  at::Tensor soft_labels;
  if (distill) {
    at::NoGradGuard no_grad;
    momentum_update(model, model->config().momentum);  // after the online encoders, as model_vqa.py
    const at::Tensor image_embeds_m = model->visual_encoder_m->forward(images);
    FusionImages images_m(image_embeds_m);
    BertModel& bert_m = model->text_bert_m();
    const at::Tensor states_m =
        bert_m->config().single_stream
            ? bert_m->forward_multimodal(question_ids, question_mask, images_m)
            : bert_m->forward_fusion(bert_m->forward_text(question_ids, question_mask), question_mask, images_m);
    FusionImages questions_m(states_m, false, question_mask);
    soft_labels = at::softmax(logits_at(model->head_as<BertLMHeadModelImpl>(kDecoderMomentum), answer_ids,
                                        answer_mask, questions_m, rows, tokens),
                              -1);
  }
  FusionImages questions_online(out.question_states, false, question_mask);
  const at::Tensor logits =
      logits_at(model->head_as<BertLMHeadModelImpl>(kDecoder), answer_ids, answer_mask, questions_online, rows, tokens);
  at::Tensor per_token = at::cross_entropy_loss(logits, tokens.labels, {}, at::Reduction::None);
  if (distill) per_token = (1.0 - alpha) * per_token + alpha * -(at::log_softmax(logits, -1) * soft_labels).sum(-1);
  out.per_answer_loss = sum_per_answer(per_token, tokens, answers);
  out.loss = (weights.to(out.per_answer_loss.device()) * out.per_answer_loss).sum() / static_cast<double>(questions);
  return out;
}

AnswerRanking rank_answers(AlbefModel& model, const at::Tensor& question_states, const at::Tensor& question_mask,
                           const at::Tensor& answer_ids, const at::Tensor& answer_mask, int64_t k) {
  const int64_t questions = question_states.size(0), candidates = answer_ids.size(0);
  ALBEF_CHECK(k >= 1 && k <= candidates, "k_test ", k, " must be between 1 and the ", candidates, " candidate answers");
  ALBEF_CHECK(answer_ids.size(1) >= 2, "answers need [CLS] and at least one token, got length ", answer_ids.size(1));
  BertLMHeadModelImpl& decoder = model->head_as<BertLMHeadModelImpl>(kDecoder);
  FusionImages states(question_states, /*keep_key_values=*/true, question_mask);  // once for both stages
  AnswerRanking out;

  // Stage 1: p(first answer token | [CLS]) for every candidate.
  const at::Tensor start = answer_ids.slice(0, 0, 1).slice(1, 0, 1).expand({questions, 1}).contiguous();
  const at::Tensor first_logits =
      decoder.decode(start, at::ones_like(start), states).select(1, 0).to(at::kFloat);  // [Q, vocab]
  out.prob_first_token = at::softmax(first_logits, 1).index_select(1, answer_ids.select(1, 1));
  std::tie(out.first_stage_probs, out.first_stage_ids) = out.prob_first_token.topk(k, 1);

  // Stage 2: every question's k candidates decoded in full. Self-attention is
  // causal and padding trails, so a candidate's loss depends on its own
  // tokens only: candidates go through in order of length, each pass (about
  // 1024 tokens) cut to its longest, and the padding of a list of mostly
  // one-word answers is never computed.
  const at::Tensor picked = out.first_stage_ids.reshape({-1});  // question-major, as VQA.py's tile()
  const at::Tensor rows = at::arange(questions, picked.options()).repeat_interleave(k);
  const int64_t width = answer_ids.size(1);
  const at::Tensor positions = at::arange(1, width + 1, answer_mask.options().dtype(at::kLong));
  const at::Tensor lengths = (answer_mask.index_select(0, picked).ne(0) * positions).amax(1).clamp_min(2).cpu();
  at::Tensor sorted_lengths, order;
  std::tie(sorted_lengths, order) = lengths.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  const auto* length_of = sorted_lengths.data_ptr<int64_t>();
  out.answer_loss = at::zeros({picked.size(0)}, question_states.options().dtype(at::kFloat));
  for (int64_t begin = 0, end; begin < picked.size(0); begin = end) {
    end = begin + 1;
    while (end < picked.size(0) && (end + 1 - begin) * length_of[end] <= 1024) ++end;
    const at::Tensor chunk = order.slice(0, begin, end).to(picked.device());
    const at::Tensor answers = picked.index_select(0, chunk);
    const int64_t length = length_of[end - 1];
    const at::Tensor ids = answer_ids.index_select(0, answers).slice(1, 0, length);
    const at::Tensor mask = answer_mask.index_select(0, answers).slice(1, 0, length);
    const AnswerTokens tokens = answer_tokens(ids);
    const at::Tensor logits = logits_at(decoder, ids, mask, states, rows.index_select(0, chunk), tokens);
    out.answer_loss.index_copy_(
        0, chunk,
        sum_per_answer(at::cross_entropy_loss(logits, tokens.labels, {}, at::Reduction::None), tokens, ids.size(0)));
  }
  out.log_probs_sum = (out.first_stage_probs.reshape({-1}).log() - out.answer_loss).view({questions, k});
  const at::Tensor probs = at::softmax(out.log_probs_sum, -1);
  at::Tensor rerank;
  std::tie(out.topk_probs, rerank) = probs.topk(k, 1);
  out.topk_ids = out.first_stage_ids.gather(1, rerank);
  return out;
}

}  // namespace albef
