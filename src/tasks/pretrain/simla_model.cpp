#include "tasks/pretrain/simla_model.h"

#include "albef/model/itm.h"

#include <torch/nn/modules/linear.h>

namespace albef {

ModelOptions simla_model_options() {
  ModelOptions options;
  options.text_encoder = TextEncoderLayout::MaskedLM;
  options.vision_mask_token = true;
  HeadSpec mim;
  mim.name = "mim_head";
  mim.make = [](const Config& config) -> std::shared_ptr<torch::nn::Module> {
    ALBEF_CHECK(config.bert.single_stream, "SIMLA needs the single-stream BERT (shared_bert.json), ",
                config.bert_config, " is not");
    return torch::nn::Linear(config.bert.hidden_size, kSimlaImageVocabulary).ptr();
  };
  mim.momentum = true;
  mim.momentum_beside = true;  // pretrain.py registers mim_head_m right after mim_head
  HeadSpec concept_head;
  concept_head.name = "concept_head";
  // Linear(embed_dim, tokenizer.vocab_size): keywords are predicted from the image feature.
  concept_head.make = [](const Config& config) -> std::shared_ptr<torch::nn::Module> {
    return torch::nn::Linear(config.embed_dim, config.bert.vocab_size).ptr();
  };
  concept_head.momentum = true;
  concept_head.after_momentum = true;
  options.heads = {itm_head_spec(), mim, concept_head};
  return options;
}

}  // namespace albef
