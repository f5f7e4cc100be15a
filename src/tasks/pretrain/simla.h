#pragma once
// SIMLA pretraining (codezakh/SIMLA's Pretrain.py), the mode `albef pretrain`
// runs when the config says `pretrain_mode: simla`.

#include "albef/config/config.h"
#include "albef/train/trainer.h"

#include <string>

namespace albef {

/// The DALL-E encoder.pkl that `config.image_tokenizer_path` names (a folder
/// holding encoder.pkl, as the official Dalle_VAE.load_model reads it, or the
/// file). Fails naming the key when it is unset or missing.
std::string simla_tokenizer_file(const Config& config);

/// SIMLA's Pretrain.py on `config`: simla_forward on each batch, whose
/// samples bring the ViT's view, the tokenizer's view (the dVAE turns it
/// into the MIM targets on the fly) and a block mask; with `mim: false`,
/// the ViT's view alone and no tokenizer.
void run_simla_pretraining(const TrainOptions& options, const Config& config);

}  // namespace albef
