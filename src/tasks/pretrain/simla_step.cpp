#include "tasks/pretrain/simla_step.h"

#include "albef/core/error.h"
#include "ops/linear.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>

namespace albef {
namespace {

const torch::nn::LinearImpl& linear_head(AlbefModel& model, const std::string& name) {
  return model->head_as<torch::nn::LinearImpl>(name);
}

// -sum(log_softmax(logits) * soft, -1).mean() over the rows.
at::Tensor distillation(const at::Tensor& log_probabilities, const at::Tensor& soft) {
  return -(log_probabilities * soft).sum(-1).mean();
}

// MLM on the single-stream BERT (med.py's BertForMaskedLM loss): the
// distillation's log-softmax normalises each vocabulary entry over the
// sequence (dim=1 of [B, L, V], padding included), so the online head runs
// on every token; the momentum targets are needed at the masked ones only.
void masked_language_modelling(AlbefModel& model, const at::Tensor& attention_mask, const ContrastiveEncoding& encoded,
                               double alpha, SimlaStepOutputs& out) {
  const StepChoices& choices = out.step.choices;
  const at::Tensor flat_labels = choices.mlm_labels.reshape({-1});
  const at::Tensor positions = (flat_labels != -100).nonzero().view({-1});
  const at::Tensor logits = model->mlm_logits(choices.masked_input_ids, attention_mask, *encoded.images).to(at::kFloat);
  const int64_t vocab = logits.size(-1);
  if (positions.numel() == 0) {
    // No token drawn for masking (tiny batches): the official loss would be NaN.
    out.mlm_ce = out.mlm_distill = out.step.loss_mlm = logits.sum() * 0.0;
    return;
  }
  at::Tensor soft_labels;
  {
    at::NoGradGuard no_grad;
    FusionImages images_m(encoded.image_embeds_m);
    soft_labels = at::softmax(
        model->text_encoder_mlm_m->forward(choices.masked_input_ids, attention_mask, images_m, positions).to(at::kFloat),
        -1);
  }
  out.mlm_ce = at::cross_entropy_loss(logits.reshape({-1, vocab}).index_select(0, positions),
                                      flat_labels.index_select(0, positions));
  const at::Tensor over_sequence = at::log_softmax(logits, 1).reshape({-1, vocab}).index_select(0, positions);
  out.mlm_distill = distillation(over_sequence, soft_labels);
  out.step.loss_mlm = (1.0 - alpha) * out.mlm_ce + alpha * out.mlm_distill;
}

// MIM: the masked image's tokens (mask_token in place of the masked patch
// embeddings) go through the text BERT as input embeddings, cross-attending
// to the online embeddings of the words (also for the momentum branch, as
// pretrain.py:310); the head predicts each masked patch's visual token. Only
// the masked patches reach the 8192-wide heads: both losses read them alone.
void masked_image_modelling(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                            const at::Tensor& attention_mask, const SimlaImageTargets& targets, double alpha,
                            SimlaStepOutputs& out) {
  const int64_t batch = images.size(0);
  const at::Tensor masked = targets.masked_patches.to(images.device()).to(at::kBool);
  const int64_t patches = model->visual_encoder->num_patches();
  ALBEF_CHECK(masked.dim() == 2 && masked.size(0) == batch && masked.size(1) == patches,
              "masked_patches must be [batch, patches] = [", batch, ", ", patches, "], got ", masked.sizes());
  ALBEF_CHECK(targets.visual_token_ids.sizes() == masked.sizes(), "visual_token_ids must be [", batch, ", ", patches,
              "] like masked_patches, got ", targets.visual_token_ids.sizes());
  const at::Tensor positions = masked.reshape({-1}).nonzero().view({-1});
  const at::Tensor labels = targets.visual_token_ids.to(images.device()).reshape({-1}).index_select(0, positions);
  const at::Tensor words = model->text_bert()->embeddings->forward(input_ids);
  auto masked_patch_states = [&](VisionTransformer& vit, BertModel& bert) {
    FusionImages word_states(words, /*keep_key_values=*/false, attention_mask);
    const at::Tensor hidden = bert->forward_inputs_embeds(vit->forward(images, masked), word_states);
    // Drop [CLS] (never masked): patch k is token k + 1.
    return hidden.slice(1, 1).reshape({-1, hidden.size(-1)}).index_select(0, positions);
  };
  at::Tensor soft_labels;
  {
    at::NoGradGuard no_grad;
    soft_labels = at::softmax(
        ops::linear(linear_head(model, "mim_head_m"), masked_patch_states(model->visual_encoder_m, model->text_bert_m()))
            .to(at::kFloat),
        -1);
  }
  const at::Tensor logits =
      ops::linear(linear_head(model, "mim_head"), masked_patch_states(model->visual_encoder, model->text_bert()))
          .to(at::kFloat);
  if (positions.numel() == 0) {
    // No patch masked: the official loss would be NaN.
    out.mim_ce = out.mim_distill = out.loss_mim = logits.sum() * 0.0;
    return;
  }
  out.mim_ce = at::cross_entropy_loss(logits, labels);
  out.mim_distill = distillation(at::log_softmax(logits, -1), soft_labels);
  out.loss_mim = (1.0 - alpha) * out.mim_ce + alpha * out.mim_distill;
}

// PSL: the momentum text encoder reads the captions against the ONLINE image
// tokens (pretrain.py:346); in its last layer each head's [CLS] row votes for
// its 4 most attended positions, and the 5 most voted positions' words are
// the caption's keywords. concept_head predicts them from the image feature,
// against the hard multi-hot targets and the momentum head's soft ones.
void pseudo_keywords(AlbefModel& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                     const ContrastiveEncoding& encoded, double alpha, const MlmTokenIds& tokens,
                     const SimlaChoices* injected, SimlaStepOutputs& out) {
  const torch::nn::LinearImpl& concept_head = linear_head(model, "concept_head");
  const int64_t vocab = concept_head.options.out_features();
  const int64_t batch = input_ids.size(0), length = input_ids.size(1);
  at::Tensor soft_targets;
  {
    at::NoGradGuard no_grad;
    BertModel& bert_m = model->text_bert_m();
    // The official hard-codes layer 11, BERT-base's last.
    BertSelfAttentionImpl& probe = *bert_m->layer[bert_m->config().num_hidden_layers - 1]->as<BertLayer>()->attention->self;
    FusionImages online_images(encoded.images->embeds().detach());
    probe.save_attention(true);
    bert_m->forward_multimodal(input_ids, attention_mask, online_images);
    const at::Tensor cls_attention = probe.attention_map().select(2, 0);  // [B, heads, L]
    probe.save_attention(false);
    // Captions shorter than the picks (the official topk would fail) vote for all their positions.
    const at::Tensor picks =
        std::get<1>(cls_attention.reshape({-1, length}).topk(std::min(kSimlaPicksPerHead, length), -1)).view({batch, -1});
    out.keyword_counts = at::zeros({batch, length}, picks.options()).scatter_add_(1, picks, at::ones_like(picks));
    out.keyword_positions =
        injected && injected->keyword_positions.defined()
            ? injected->keyword_positions.to(input_ids.device()).to(at::kLong)
            : std::get<1>(out.keyword_counts.topk(std::min(kSimlaKeywords, length), -1));
    const at::Tensor keywords = input_ids.gather(1, out.keyword_positions);
    out.keyword_targets = at::zeros({batch, vocab}, at::TensorOptions().device(input_ids.device()).dtype(at::kFloat));
    out.keyword_targets.scatter_(1, keywords, 1.0);
    out.keyword_targets.select(1, tokens.cls).zero_();
    soft_targets = at::sigmoid(ops::linear(linear_head(model, "concept_head_m"), out.step.image_feat_m).to(at::kFloat));
  }
  const at::Tensor predictions = ops::linear(concept_head, encoded.image_feat).to(at::kFloat);
  out.pseudo_hard = at::binary_cross_entropy_with_logits(predictions, out.keyword_targets);
  out.pseudo_soft = at::binary_cross_entropy_with_logits(predictions, soft_targets);
  out.loss_pseudo = (1.0 - alpha) * out.pseudo_hard + alpha * out.pseudo_soft;
}

}  // namespace

SimlaStepOutputs simla_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                               const at::Tensor& attention_mask, const SimlaImageTargets& targets, double alpha,
                               const MlmTokenIds& tokens, const SimlaChoices* injected, const FeatureGather& gather) {
  const ModelOptions& options = model->options();
  ALBEF_CHECK(model->config().bert.single_stream && options.text_encoder == TextEncoderLayout::MaskedLM &&
                  options.momentum_encoders && options.vision_mask_token && model->has_head("itm_head") &&
                  model->has_head("mim_head") && model->has_head("concept_head"),
              "SIMLA pretraining needs simla_model_options()'s model on the single-stream BERT");
  ALBEF_CHECK(targets.masked_patches.defined() == targets.visual_token_ids.defined(),
              "MIM needs both masked_patches and visual_token_ids (neither turns it off)");
  SimlaStepOutputs out;
  {
    at::NoGradGuard no_grad;
    model->temp.clamp_(0.001, 0.5);
  }
  const Config& config = model->config();
  const ContrastiveEncoding encoded = contrast_and_match(model, images, input_ids, attention_mask, alpha, {},
                                                         /*distill=*/true, injected ? &injected->step : nullptr,
                                                         gather, out.step);
  choose_mlm_masks(input_ids, config.mlm_probability, config.bert.vocab_size, tokens,
                   injected ? &injected->step : nullptr, out.step.choices);
  masked_language_modelling(model, attention_mask, encoded, alpha, out);
  if (targets.masked_patches.defined())
    masked_image_modelling(model, images, input_ids, attention_mask, targets, alpha, out);
  pseudo_keywords(model, input_ids, attention_mask, encoded, alpha, tokens, injected, out);
  return out;
}

}  // namespace albef
