#include "tasks/pretrain/step.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>

#include <tuple>

namespace albef {

std::pair<at::Tensor, at::Tensor> mask_tokens(const at::Tensor& input_ids, double probability, int64_t vocab_size,
                                              const MlmTokenIds& tokens) {
  at::Tensor ids = input_ids.clone();
  at::Tensor labels = input_ids.clone();
  at::Tensor masked = at::bernoulli(at::full(ids.sizes(), probability, at::kFloat)).to(at::kBool);
  masked &= (ids != tokens.pad) & (ids != tokens.cls);
  labels.masked_fill_(~masked, -100);
  const at::Tensor replaced = at::bernoulli(at::full(ids.sizes(), 0.8, at::kFloat)).to(at::kBool) & masked;
  ids.masked_fill_(replaced, tokens.mask);
  const at::Tensor randomised =
      at::bernoulli(at::full(ids.sizes(), 0.5, at::kFloat)).to(at::kBool) & masked & ~replaced;
  const at::Tensor random_words = at::randint(vocab_size, ids.sizes(), at::TensorOptions().dtype(at::kLong));
  ids = at::where(randomised, random_words, ids);
  return {ids.to(input_ids.device()), labels.to(input_ids.device())};
}

void choose_mlm_masks(const at::Tensor& input_ids, double probability, int64_t vocab_size, const MlmTokenIds& tokens,
                      const StepChoices* injected, StepChoices& choices) {
  if (injected) {
    choices.masked_input_ids = injected->masked_input_ids;
    choices.mlm_labels = injected->mlm_labels;
  } else {
    std::tie(choices.masked_input_ids, choices.mlm_labels) =
        mask_tokens(input_ids.cpu(), probability, vocab_size, tokens);
  }
  choices.masked_input_ids = choices.masked_input_ids.to(input_ids.device());
  choices.mlm_labels = choices.mlm_labels.to(input_ids.device());
}

StepOutputs pretrain_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                             const at::Tensor& attention_mask, double alpha, const MlmTokenIds& tokens,
                             const StepChoices* injected, const FeatureGather& gather) {
  ALBEF_CHECK(model->options().text_encoder == TextEncoderLayout::MaskedLM && model->options().momentum_encoders,
              "pretraining needs the MaskedLM text encoder (pretrain_model_options) with momentum encoders");
  const Config& config = model->config();
  StepOutputs out;
  {
    at::NoGradGuard no_grad;
    model->temp.clamp_(0.001, 0.5);
  }
  const ContrastiveEncoding encoded = contrast_and_match(model, images, input_ids, attention_mask, alpha, {}, /*distill=*/true,
                                             injected, gather, out);

  // MLM with distillation from the momentum model's predictions.
  choose_mlm_masks(input_ids, config.mlm_probability, config.bert.vocab_size, tokens, injected, out.choices);
  const at::Tensor& masked_ids = out.choices.masked_input_ids;
  // Both MLM losses read the masked tokens alone, so only they go through
  // the 30522-wide head (the official code runs it on every token).
  const at::Tensor flat_labels = out.choices.mlm_labels.reshape({-1});
  const at::Tensor positions = (flat_labels != -100).nonzero().view({-1});
  at::Tensor soft_labels;
  {
    at::NoGradGuard no_grad;
    FusionImages images_m(encoded.image_embeds_m);
    soft_labels = at::softmax(
        model->text_encoder_mlm_m->forward(masked_ids, attention_mask, images_m, positions).to(at::kFloat), -1);
  }
  const at::Tensor logits = model->mlm_logits(masked_ids, attention_mask, *encoded.images, positions).to(at::kFloat);
  if (positions.numel() > 0) {
    const at::Tensor loss_ce = at::cross_entropy_loss(logits, flat_labels.index_select(0, positions));
    const at::Tensor distill = -(at::log_softmax(logits, -1) * soft_labels).sum(-1).mean();
    out.loss_mlm = (1.0 - alpha) * loss_ce + alpha * distill;
  } else {
    // No token drawn for masking (possible with tiny batches): the official
    // code would produce NaN here; contribute nothing instead.
    out.loss_mlm = logits.sum() * 0.0;
  }
  return out;
}

}  // namespace albef
