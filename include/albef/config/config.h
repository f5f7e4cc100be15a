#pragma once
/// @file config.h
/// @brief The official YAML task configs and BERT's `config_bert.json`.
///
/// Keys and defaults follow salesforce/ALBEF's configs/. Every key that any
/// official config has is known; any other key is an error naming the key
/// and the file, so a typo such as `queue_sise` never passes silently.
/// Relative paths inside a config (bert_config, vocab, data files) are
/// resolved as the official scripts do (against the working directory) and,
/// failing that, against the config's folder and its parent.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace albef {

/// HuggingFace BertConfig fields ALBEF's xbert uses, plus ALBEF's
/// `fusion_layer` (first layer with cross-attention) and `encoder_width`
/// (width of the image tokens the cross-attention reads).
struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  int64_t pad_token_id = 0;
  int64_t fusion_layer = 6;
  int64_t encoder_width = 768;
  /// Not a config_bert.json key: how many images each text attends to.
  /// With n > 1 (NLVR2's two), fusion layer i cross-attends to image
  /// (i - fusion_layer) % n, and each run of n consecutive fusion layers
  /// shares one set of cross-attention key and value projections
  /// (model_nlvr.py's share_cross_attention). See with_fusion_per_image.
  int64_t images_per_text = 1;
  /// Not a config_bert.json key: the first layer of those runs of n layers
  /// sharing keys and values; -1 is fusion_layer. SIMLA's NLVR model has
  /// cross-attention in every layer (fusion_layer 0) but shares it from
  /// layer 6 on only (see simla_nlvr_bert).
  int64_t shared_cross_attention_from = -1;
  /// SIMLA's shared_bert.json (`add_cross_attention: true`, no
  /// fusion_layer): every layer has a cross-attention, used or skipped per
  /// call (text vs multimodal mode), and no token-type embeddings.
  /// fusion_layer is then 0.
  bool single_stream = false;

  /// Reads a `config_bert.json`; unknown keys are an error naming the file.
  static BertConfig from_json_file(const std::string& path);
};

/// ViT sizes. The official code hard-codes ViT-B/16; other sizes come from
/// the optional `vision_config:` map of a task config.
struct VisionConfig {
  int64_t patch_size = 16;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  double mlp_ratio = 4.0;
};

/// SIMLA's `masking_generator:` block: MaskingGenerator's arguments.
struct SimlaMaskingConfig {
  int64_t num_masking_patches = 75;
  int64_t min_num_patches = 16;
  std::optional<int64_t> max_num_patches;  ///< per block; null: num_masking_patches
  double min_aspect = 0.3;
  std::optional<double> max_aspect;  ///< null: 1 / min_aspect
};

/// `optimizer:` block.
struct OptimizerConfig {
  std::string opt = "adamW";
  double lr = 1e-4;
  double weight_decay = 0.02;
};

/// `schedular:` block (the official spelling).
struct SchedulerConfig {
  std::string sched = "cosine";
  double lr = 1e-4;
  int64_t epochs = 30;
  double min_lr = 1e-5;
  double decay_rate = 1.0;
  double warmup_lr = 1e-5;
  int64_t warmup_epochs = 20;
  int64_t cooldown_epochs = 0;
};

/// One task config (Pretrain.yaml, Retrieval_coco.yaml, ...), parsed.
struct Config {
  std::string path;       ///< the YAML file it came from
  nlohmann::json raw;     ///< every key as written (saved into checkpoints as 'config')

  std::vector<std::string> train_file;  ///< one or several annotation files
  std::vector<std::string> val_file;
  std::vector<std::string> test_file;
  std::string image_root;
  std::string bert_config;  ///< resolved path of config_bert.json
  std::string vocab;        ///< the WordPiece vocabulary's path, or text::kBundledVocabulary

  int64_t image_res = 256;
  int64_t vision_width = 768;
  int64_t embed_dim = 256;
  int64_t batch_size = 64;        ///< pretraining
  int64_t batch_size_train = 32;  ///< fine-tuning
  int64_t batch_size_test = 64;
  double temp = 0.07;
  double mlm_probability = 0.15;
  int64_t queue_size = 65536;
  double momentum = 0.995;
  double alpha = 0.4;
  bool distill = true;
  bool warm_up = true;
  int64_t k_test = 256;
  std::string answer_list;    ///< VQA: the candidate answers (JSON list), as written
  std::string vqa_root;       ///< VQA: the folder of VQA v2 (COCO) images
  std::string vg_root;        ///< VQA: the folder of Visual Genome images
  std::string eos = "[SEP]";  ///< VQA: appended to every answer
  /// VQA: layers of the answer decoder (albef's key; VQA.py hard-codes 6,
  /// the fusion depth of ALBEF-base; tiny models use their own).
  int64_t decoder_layers = 6;
  /// Pretraining's objectives and data order: "albef" (Pretrain.py) or
  /// "grit" (GRIT-VLP's Pretrain.py: no momentum model, grouped batches) or
  /// "simla" (SIMLA's: single-stream BERT, adds MIM and PSL).
  std::string pretrain_mode = "albef";
  /// GRIT: pairs per grouping (search space); the grouping queue is queue_size.
  int64_t search_space = 1920;
  /// GRIT: epochs to train (its Pretrain.py stops there; the cosine
  /// schedule still spans schedular.epochs). -1: schedular.epochs.
  int64_t train_epochs = -1;
  /// SIMLA: the DALL-E tokenizer's folder holding encoder.pkl, or the file
  /// itself (null or absent: none).
  std::string image_tokenizer_path;
  /// SIMLA (albef's key): masked image modelling; `mim: false` trains the
  /// other four objectives without a tokenizer.
  bool mim = true;
  /// SIMLA (albef's key): augment the tokenizer's view on its own as the
  /// official dataset does, so visual tokens and patches are not aligned
  /// (data/simla_views.h). Off: one augmentation for both.
  bool independent_views = false;
  /// SIMLA (albef's key): the block-masking arguments that the official
  /// caption_dataset.py hard-codes (the grid follows image_res).
  SimlaMaskingConfig masking_generator;

  OptimizerConfig optimizer;
  SchedulerConfig schedular;
  VisionConfig vision;
  BertConfig bert;

  /// Resolves a path written in this config (see file comment); returns the
  /// path unchanged when no candidate exists.
  std::string resolve(const std::string& relative) const;
};

/// Parses a task config and the BERT config it names. Errors name the file
/// and the key. The vocabulary (Config::vocab) is the config's `vocab:` key,
/// else `text_encoder` as the official scripts' --text_encoder takes it
/// (`bert-base-uncased`, a folder with vocab.txt, or a vocabulary file), else
/// bert-base-uncased-vocab.txt beside config_bert.json, else the
/// bert-base-uncased vocabulary bundled with albef (text::kBundledVocabulary).
Config load_config(const std::string& path, const std::string& text_encoder = "");

}  // namespace albef
