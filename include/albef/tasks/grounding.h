#pragma once
/// @file grounding.h
/// @brief Weakly supervised visual grounding (the official Grounding.py):
/// Grad-CAM over the cross-attention of one fusion layer (itm) or over one
/// ViT block's CLS attention (itc) localises what a referring expression
/// describes, without box supervision. `run_grounding` fine-tunes on
/// RefCOCO+ (the retrieval model and losses) and evaluates by ranking
/// detector boxes with the maps; `compute_gradcam` is the map itself, for
/// any image and text.

#include "albef/model/albef.h"
#include "albef/train/trainer.h"

#include <nlohmann/json.hpp>

#include <string>

namespace albef {

/// Which score Grad-CAM explains (Grounding.py's --gradcam_mode).
enum class GradcamMode {
  /// The ITM match logit, through the cross-attention of fusion layer
  /// `block_num` (the paper's ALBEF-itm grounding).
  Itm,
  /// The ITC similarity, through the CLS-query attention of ViT block
  /// `block_num`.
  Itc,
};

/// "itm" / "itc"; anything else is an error naming `flag`.
GradcamMode parse_gradcam_mode(const std::string& name, const std::string& flag = "--gradcam_mode");
const char* gradcam_mode_name(GradcamMode mode);

/// What Grad-CAM reads: the mode and the layer (Grounding.py's defaults).
struct GradcamOptions {
  GradcamMode mode = GradcamMode::Itm;
  /// Itm: a BERT layer index in [fusion_layer, num_hidden_layers) (8: the
  /// third fusion layer of ALBEF-base). Itc: a ViT block in [0, depth).
  int64_t block_num = 8;
};

/// Throws, naming `flag` and the valid range, when `options.block_num` is
/// not a layer the mode can read in a model built from `config`.
void check_gradcam_block(const Config& config, const GradcamOptions& options,
                         const std::string& flag = "--block_num");

/// One batch's Grad-CAM, float32 on the model's device (g = the patch grid's
/// side: 24 for ViT-B/16 at 384 pixels).
struct Gradcam {
  /// The recorded attention probabilities: itm [B, heads, L, 1 + g*g] (text
  /// queries, image keys), itc [B, heads, 1 + g*g, 1 + g*g].
  at::Tensor attention;
  /// Their gradient, same shape.
  at::Tensor gradients;
  /// Itm: each token's map [B, L, g, g], attention x clamp(gradient, 0)
  /// averaged over heads, zero for padding (the official notebook's
  /// per-word maps). Itc: undefined.
  at::Tensor token_maps;
  /// [B, g, g]: Grounding.py's map. Itm: token_maps averaged over the padded
  /// length L, [CLS] included (the official quirk: a text's map depends on
  /// the longest text of its batch). Itc: the CLS row of the attention
  /// (without the CLS key) x clamp(gradient, 0), averaged over heads.
  at::Tensor maps;
};

/// Grad-CAM of a batch as Grounding.py's val(): images [B, 3, R, R]
/// (test transform), token ids and mask [B, L] of pre_caption'd texts
/// padded to the longest. The model must be in eval mode and have the ITM
/// head (itm) or the contrastive projections (itc). Runs under the caller's
/// precision. Only what the score's gradient needs is differentiated: the
/// layers below `block_num` (and, itm, the ViT) run without gradients, and no
/// weight gradient is computed; the model's parameters are left untouched.
Gradcam compute_gradcam(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                        const at::Tensor& attention_mask, const GradcamOptions& options = {});

/// The model Grounding.py fine-tunes and evaluates: models/model_retrieval.py
/// (retrieval_model_options).
ModelOptions grounding_model_options(bool momentum_encoders = true);

/// Flags of a grounding run, as Grounding.py's (plus albef's training flags).
struct GroundingOptions : TrainOptions {
  bool evaluate = false;  ///< only evaluate `checkpoint` (Grounding.py --evaluate)
  GradcamOptions gradcam;
};

/// Fine-tunes (or with `evaluate`, evaluates) as Grounding.py: training on
/// train_file with the retrieval losses (ITC with image ids, ITM with hard
/// negatives, distillation), and after every epoch the evaluation on
/// test_file, in the config's `batch_size` batches: a Grad-CAM map per
/// referring expression, upsampled (bicubic) to its image, picks the box of
/// det_file with the largest sum of the map inside it / sqrt(area); a hit is
/// IoU >= 0.5 with the REFER ground truth (refcoco_data/refcoco+/refs(unc).p
/// and instances.json). Accuracies per split ("val_d", "testA_d", "testB_d")
/// go to log.txt; the best epoch on val_d is kept as checkpoint_best.pth.
/// The evaluation writes grounding_results.json (each expression's chosen
/// box, IoU, hit, box scores and map). Returns the last accuracies.
nlohmann::json run_grounding(const GroundingOptions& options);

}  // namespace albef
