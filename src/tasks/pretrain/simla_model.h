#pragma once
// SIMLA's pretraining model (models/simla/pretrain.py of codezakh/SIMLA):
// ALBEF's backbone on the single-stream BERT of configs/shared_bert.json
// (cross-attention in every layer, no token-type embeddings), the ViTs with
// `mask_token`, and two heads with momentum copies: `mim_head` (masked image
// modelling over the DALL-E codebook) and `concept_head` (pseudo-keywords).

#include "albef/model/albef.h"

namespace albef {

/// The DALL-E codebook size: the MIM head's classes (pretrain.py's 8192).
constexpr int64_t kSimlaImageVocabulary = 8192;

/// The model SIMLA(config, ...) builds, with the official state_dict names,
/// shapes and order. The config's BERT must be single-stream.
ModelOptions simla_model_options();

}  // namespace albef
