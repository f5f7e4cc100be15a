#pragma once
/// @file nlvr.h
/// @brief `albef pretrain_nlvr` and `albef nlvr`: Pretrain_nlvr.py (text
/// assignment) and NLVR.py (src/tasks/nlvr/). A text reads two images: the
/// text encoder repeats every fusion layer once per image, the pair sharing
/// its cross-attention keys and values, and layer i attends to image
/// (i - fusion_layer) % 2.

#include "albef/model/albef.h"
#include "albef/tasks/classification.h"

#include <string>
#include <vector>

namespace albef {

/// Whether `config` is SIMLA's, whose NLVR.py and Pretrain_NLVR.py build
/// SIMLA's NLVR model: its bert_config is single-stream (shared_bert.json),
/// or it has SIMLA's `vit_mask_token` key (SIMLA's NLVR configs name ALBEF's
/// config_bert.json, so the BERT alone cannot tell).
bool is_simla_config(const Config& config);

/// SIMLA's NLVR text encoder (models/simla/nlvr.py): xbert, with token-type
/// embeddings, as deep as ALBEF's NLVR model (18 layers for BERT-base: the
/// layers from the 6th on doubled) but with fusion_layer 0, so every layer
/// cross-attends, layer i to image i % 2; only the doubled pairs share
/// cross-attention keys and values (share_cross_attention's literal 6 on).
/// The layers doubled start at config_bert.json's fusion_layer, or half of
/// a single-stream BERT's depth.
BertConfig simla_nlvr_bert(const BertConfig& bert);

/// models/model_nlvr.py: a plain BertModel over two images (18 layers for
/// BERT-base) and `cls_head` (2 classes: False, True), with momentum copies
/// when `momentum_encoders`. A checkpoint in the NLVR layout (Pretrain_nlvr.py's
/// output, or a fine-tuned one) loads as it is; a pretraining checkpoint
/// (`text_encoder.bert.*`) is converted as Pretrain_nlvr.py converts it
/// (NLVR.py would leave the text encoder random). A SIMLA config
/// (is_simla_config) builds SIMLA's model (simla_nlvr_bert) instead; a SIMLA
/// checkpoint given with an ALBEF config is refused by name.
ModelOptions nlvr_model_options(const Config& config, bool momentum_encoders = true);

/// models/model_pretrain_nlvr.py (or SIMLA's pretrain_nlvr.py): the two-image
/// text encoder of nlvr_model_options, `vision_proj`, `text_proj`, `temp` and
/// `ta_head` (3 classes: the text belongs to the first image, the second, or
/// neither); no momentum encoders. Checkpoint keys go through ta_checkpoint_keys.
ModelOptions text_assignment_model_options(const Config& config);

/// Pretrain_nlvr.py's conversion of a pretraining checkpoint key: `bert.` is
/// dropped, and text-encoder layer N >= `fusion_layer` (6 for BERT-base, as
/// the script hard-codes) becomes the two layers 2 (N - fusion_layer) +
/// fusion_layer and the one after it (the whole layer duplicated). Keys
/// without `bert` load as they are.
std::vector<std::string> ta_checkpoint_keys(const std::string& key, int64_t fusion_layer);

/// Text-assignment pretraining as Pretrain_nlvr.py (TrainOptions' flags).
void run_pretrain_nlvr(const TrainOptions& options);

/// NLVR.py: fine-tunes a text-assignment checkpoint on NLVR2 (or with
/// `evaluate` only evaluates a fine-tuned one) and returns the last
/// evaluation.
ClassificationResult run_nlvr(const FineTuneOptions& options);

/// A fine-tuned NLVR2 checkpoint ready to classify two images and sentences (NLVR.py's model).
SentenceClassifier load_nlvr_classifier(const std::string& config_path, const std::string& checkpoint,
                                        const std::string& text_encoder = "", const std::string& device = "cpu",
                                        Precision precision = Precision::Fp32);

}  // namespace albef
