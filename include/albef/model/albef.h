#pragma once
/// @file albef.h
/// @brief The ALBEF model: ViT image encoder, BERT text/fusion encoder,
/// 256-d projections, ITM head, MLM head, momentum copies and feature queues,
/// with the official state_dict names so checkpoints move both ways.

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/core/runtime.h"
#include "albef/io/checkpoint.h"
#include "albef/model/bert.h"
#include "albef/model/vit.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <typeinfo>
#include <vector>

namespace albef {

/// How `text_encoder` is laid out, as the official model classes have it.
enum class TextEncoderLayout {
  /// BertForMaskedLM (models/model_pretrain.py): `text_encoder.bert.*` plus
  /// the MLM head `text_encoder.cls.*`.
  MaskedLM,
  /// BertModel (the fine-tuning models): `text_encoder.embeddings.*`,
  /// `text_encoder.encoder.*`.
  Plain,
};

/// A task's head: a module registered at the model's top level as `name`,
/// after the backbone's online modules (and so in the official state_dict
/// order: `itm_head` after `text_proj`, VQA's `text_decoder` after
/// `text_encoder`), with a frozen copy `name_m` after the momentum encoders
/// when `momentum` and the model has them.
struct HeadSpec {
  std::string name;
  std::function<std::shared_ptr<torch::nn::Module>(const Config& config)> make;
  bool momentum = false;
  /// Where SIMLA registers its heads (the state_dict order): the momentum
  /// copy right after the head (`mim_head_m`), or both after the momentum
  /// encoders (`concept_head`, `concept_head_m`).
  bool momentum_beside = false;
  bool after_momentum = false;
  /// The official random init, run by AlbefModelImpl::init_weights (unset:
  /// the module keeps its constructor's, as nn.Linear heads do).
  std::function<void(torch::nn::Module& head)> init;
};

/// The model keys a checkpoint key loads into: usually one, none to leave it
/// out (reported as unexpected), several to initialise more than one module
/// from it (VQA's decoder starts as a copy of the fusion layers).
using CheckpointKeyMap = std::function<std::vector<std::string>(const std::string& checkpoint_key)>;

/// What to build: the backbone's parts and the task's heads. The presets of
/// the official model classes live with their tasks (tasks/pretrain.h,
/// tasks/retrieval.h); inference builds its own (api/inference.h).
struct ModelOptions {
  TextEncoderLayout text_encoder = TextEncoderLayout::MaskedLM;
  /// ITC: `temp`, `vision_proj` and `text_proj` (with momentum encoders also
  /// their copies and the feature queues).
  bool contrastive = true;
  /// `idx_queue` beside the feature queues (retrieval's ITC positives).
  bool id_queue = false;
  /// Momentum encoders (and queues) as in training; inference leaves them out
  /// to halve the memory.
  bool momentum_encoders = true;
  /// The text side: `text_encoder`, `text_proj` and the heads. Without it the
  /// model is `visual_encoder` and `vision_proj` only (encode_image and
  /// image_feature): embedding images then loads 328 of ALBEF's 798 MB.
  /// Needs momentum_encoders = false and no heads.
  bool text_side = true;
  /// The image side: `visual_encoder` and `vision_proj`. Without it the model
  /// is the text encoder's embeddings and unimodal layers [0, fusion_layer)
  /// plus `text_proj` (encode_text and text_feature): embedding captions then
  /// loads 254 of ALBEF's 798 MB. Needs momentum_encoders = false and no heads.
  bool image_side = true;
  /// Images each text attends to: 2 for NLVR2, whose text encoders
  /// (online and momentum) then repeat every fusion layer per image and
  /// share its cross-attention keys and values (with_fusion_per_image).
  int64_t images_per_text = 1;
  /// The text encoders' BERT when the task's model class builds its own
  /// (SIMLA's NLVR model, simla_nlvr_bert); unset: the config's, its fusion
  /// layers repeated per image.
  std::optional<BertConfig> text_bert;
  /// SIMLA's `mask_token` in both ViTs (masked image modelling).
  bool vision_mask_token = false;
  /// The task's heads, in registration order.
  std::vector<HeadSpec> heads;
  /// How a checkpoint's keys reach this model. Unset: the layout's renaming,
  /// as Retrieval.py loads a pretraining checkpoint (`text_encoder.bert.`
  /// becomes `text_encoder.` for a Plain encoder; the reverse for MaskedLM).
  CheckpointKeyMap checkpoint_keys;
};

/// The layout's default key renaming (see ModelOptions::checkpoint_keys).
std::string adapt_text_encoder_key(const std::string& checkpoint_key, TextEncoderLayout layout);

/// x / max(||x||, 1e-12) along `dim`, as F.normalize: the ITC features.
at::Tensor l2_normalize(const at::Tensor& x, int64_t dim = -1);

/// How many tokens inference runs through the encoders and the fusion at
/// once, so that a pass's activations (the FFN's are 4x the hidden states)
/// are bounded by it, not by the batch: 512, or 1024 under bf16 autocast.
/// 0 (no bound) while a backward pass is recorded or `module` is in train
/// mode. (An int8 text encoder keeps 512 under autocast: see encode_text.)
int64_t inference_tokens_per_pass(const torch::nn::Module& module);

/// ALBEF's backbone (ViT, text and fusion BERT, projections, momentum copies,
/// queues) with the heads a task asked for. Forward pieces are exposed
/// separately so tasks compose them (the official forward of each task lives
/// with the task, in src/tasks/).
/// In inference (eval mode, no gradients recorded) `encode_image`,
/// `encode_text` and `fuse` with one image per text run a large batch about
/// 512 tokens at a time (1024 in bf16; int8 texts 512), so its activations
/// stay those of one slice.
class AlbefModelImpl : public torch::nn::Module {
 public:
  AlbefModelImpl(const Config& config, const ModelOptions& options = {});

  /// [B, 3, R, R] normalised images -> image tokens [B, 1 + P, vision_width].
  at::Tensor encode_image(const at::Tensor& images);
  /// The same, a pass at a time: `each_pass(begin, tokens)` gets the tokens
  /// of images [begin, begin + tokens.size(0)) as their pass ends, so that a
  /// gallery's encoding keeps them as it stores them (bf16, say) and never
  /// holds the whole batch's float32 tokens.
  void encode_image(const at::Tensor& images, const std::function<void(int64_t, const at::Tensor&)>& each_pass);
  /// Token ids and mask [B, L] -> text-encoder states [B, L, hidden]. In
  /// inference, passes of inference_tokens_per_pass, or of 512 tokens for
  /// int8 layers: half a bf16 pass's activations beside weights half as
  /// large, for about 4% of the int8 rate.
  at::Tensor encode_text(const at::Tensor& input_ids, const at::Tensor& attention_mask);
  /// encode_text a pass at a time, as encode_image above.
  void encode_text(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                   const std::function<void(int64_t, const at::Tensor&)>& each_pass);
  /// L2-normalised projection of the image CLS token -> [B, embed_dim].
  at::Tensor image_feature(const at::Tensor& image_embeds);
  /// L2-normalised projection of the text CLS token -> [B, embed_dim].
  at::Tensor text_feature(const at::Tensor& text_embeds);
  /// image_feature(encode_image(images)) -> [B, embed_dim], without the
  /// batch's image tokens: the last block computes the CLS row alone, and in
  /// inference each slice keeps its features only.
  at::Tensor encode_image_features(const at::Tensor& images);
  /// text_feature(encode_text(...)) -> [B, embed_dim], the last text layer
  /// on the CLS row alone, slice by slice likewise.
  at::Tensor encode_text_features(const at::Tensor& input_ids, const at::Tensor& attention_mask);
  /// Fusion layers over text states and image tokens -> [B, L, hidden].
  /// The single-stream BERT (SIMLA) fuses from the words instead: `text` is
  /// then the token ids [B, L], run through every layer with cross-attention
  /// (med.py's multimodal mode); fusion_input picks the right one. With
  /// `class_token_only`, the [CLS] row alone [B, 1, hidden] (what the ITM
  /// head reads): the last layer's products on that row only.
  at::Tensor fuse(const at::Tensor& text, const at::Tensor& attention_mask, const at::Tensor& image_embeds,
                  bool class_token_only = false);
  /// The same over images shared between passes: text row i reads image
  /// `image_rows[i]` if given (see FusionImages). States moved in (a pass of
  /// gathered candidates) are freed once the first layer has read them.
  at::Tensor fuse(at::Tensor text, const at::Tensor& attention_mask, FusionImages& images,
                  const at::Tensor& image_rows = {}, bool class_token_only = false);
  /// The tokens an inference pass of itm_logits holds (a gallery's
  /// re-ranking): inference_tokens_per_pass, or 512 for int8 layers, as
  /// encode_text.
  int64_t fusion_tokens_per_pass() const;
  /// What `fuse` reads for these texts: their text-encoder states, or their
  /// token ids for the single-stream BERT.
  const at::Tensor& fusion_input(const at::Tensor& input_ids, const at::Tensor& text_embeds) const {
    return config_.bert.single_stream ? input_ids : text_embeds;
  }
  /// MLM logits [B, L, vocab] (MaskedLM layout only).
  at::Tensor mlm_logits(const at::Tensor& input_ids, const at::Tensor& attention_mask, const at::Tensor& image_embeds);
  /// The same over shared images; with `positions`, the logits of those
  /// tokens only ([N, vocab], see BertForMaskedLMImpl::forward).
  at::Tensor mlm_logits(const at::Tensor& input_ids, const at::Tensor& attention_mask, FusionImages& images,
                        const at::Tensor& positions = {});

  /// The BERT inside `text_encoder` (or `text_encoder_m`), whatever the kind.
  BertModel& text_bert() { return text_bert_; }
  BertModel& text_bert_m() { return text_bert_m_; }
  /// Random init as the official constructors do, momentum copies included.
  void init_weights();
  /// Copies the online parameters into the momentum copies (`copy_params`).
  void copy_params();
  /// (online, momentum) parameter pairs in the official `model_pairs` order.
  std::vector<std::pair<at::Tensor, at::Tensor>> momentum_pairs();

  const Config& config() const { return config_; }
  const ModelOptions& options() const { return options_; }

  /// The head registered as `name` (HeadSpec); throws naming it when the model has none.
  std::shared_ptr<torch::nn::Module> head(const std::string& name) const;
  /// The same, as its module type.
  template <typename ModuleType>
  ModuleType& head_as(const std::string& name) const {
    auto* typed = head(name)->as<ModuleType>();
    ALBEF_CHECK(typed != nullptr, "head '", name, "' is not a ", typeid(ModuleType).name());
    return *typed;
  }
  bool has_head(const std::string& name) const { return heads_.count(name) > 0; }

  at::Tensor temp, image_queue, text_queue, idx_queue, queue_ptr;
  VisionTransformer visual_encoder{nullptr}, visual_encoder_m{nullptr};
  BertForMaskedLM text_encoder_mlm{nullptr}, text_encoder_mlm_m{nullptr};  // MaskedLM layout
  torch::nn::Linear vision_proj{nullptr}, text_proj{nullptr};
  torch::nn::Linear vision_proj_m{nullptr}, text_proj_m{nullptr};

 private:
  /// Throws, naming `what`, when the model was built without its text side.
  void require_text_side(const char* what) const;
  void require_image_side(const char* what) const;

  Config config_;
  ModelOptions options_;
  BertModel text_bert_{nullptr}, text_bert_m_{nullptr};
  std::map<std::string, std::shared_ptr<torch::nn::Module>> heads_;  // name (and name_m) -> head
};
TORCH_MODULE(AlbefModel);

/// The module's state in PyTorch's `state_dict()` order: each module's own
/// parameters, then its own buffers, then its children, recursively. Tied
/// tensors appear under every name, sharing storage.
io::StateDict state_dict(const torch::nn::Module& module);

/// What `load_state_dict` did, as PyTorch reports it with strict=False.
struct LoadReport {
  std::vector<std::string> missing_keys;     ///< in the model, not in the checkpoint
  std::vector<std::string> unexpected_keys;  ///< in the checkpoint, not in the model
};

/// Copies a checkpoint's tensors into the model the way the official scripts
/// load one: keys are mapped by ModelOptions::checkpoint_keys (by default a
/// pretraining checkpoint's `text_encoder.bert.` becomes `text_encoder.` for
/// a Plain text encoder and back),
/// `pos_embed` is interpolated to the model's image_res, and momentum entries
/// are skipped when the model has no momentum encoders. A tensor of the wrong
/// shape is an error naming `source` and the key; with `strict`, missing keys
/// are an error too.
LoadReport load_state_dict(AlbefModel& model, const io::StateDict& state, const std::string& source,
                           bool strict = false);

/// Readies a loaded model for inference only: eval mode, no gradients, and
/// for bf16 (CPU) the weights of every linear layer stored in bfloat16. Under
/// autocast they would otherwise be cast from float32 on every call; stored
/// once they take half the memory, and the products are the same (autocast
/// rounds them the same way). Such a model is for inference under
/// PrecisionGuard(Bf16), not for training or for saving a checkpoint. For
/// int8 (CPU) the encoders' linear weights become per-channel int8 (a
/// quarter of their float32 memory); it cannot be differentiated.
void prepare_for_inference(AlbefModel& model, Precision precision);

/// `load_state_dict` from the `.pth` file at `path`, read one tensor at a
/// time (io::LazyCheckpoint): the peak memory is the model's plus its largest
/// tensor, and entries the model does not use are never read. A LAVIS
/// checkpoint is read in the official layout (model/checkpoint_layout.h);
/// momentum parameters it lacks start as copies of the online ones.
LoadReport load_checkpoint(AlbefModel& model, const std::string& path, bool strict = false);

/// A model for inference: built from `options` (momentum encoders off),
/// loaded from `checkpoint` (every model entry but `temp` must be in it, else
/// an error naming the file and the key), moved to `device` and readied by
/// prepare_for_inference. `report`, when given, receives what loading did.
AlbefModel load_inference_model(const Config& config, ModelOptions options, const std::string& checkpoint,
                                c10::Device device, Precision precision, LoadReport* report = nullptr);

}  // namespace albef
