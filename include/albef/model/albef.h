#pragma once
/// @file albef.h
/// @brief The ALBEF model: ViT image encoder, BERT text/fusion encoder,
/// 256-d projections, ITM head, MLM head, momentum copies and feature queues,
/// with the official state_dict names so checkpoints move both ways.

#include "albef/config/config.h"
#include "albef/core/runtime.h"
#include "albef/io/checkpoint.h"
#include "albef/model/bert.h"
#include "albef/vision/vit.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <string>
#include <vector>

namespace albef {

/// Which official model class the module tree mirrors.
enum class ModelKind {
  /// models/model_pretrain.py: `text_encoder` is BertForMaskedLM
  /// (`text_encoder.bert.*`, `text_encoder.cls.*`).
  Pretrain,
  /// models/model_retrieval.py: `text_encoder` is a BertModel
  /// (`text_encoder.embeddings.*`, `text_encoder.encoder.*`) plus `idx_queue`.
  Retrieval,
};

/// What to build beyond the online encoders.
struct ModelOptions {
  ModelKind kind = ModelKind::Pretrain;
  /// Momentum encoders, queues and `temp` as in training; inference can
  /// leave the momentum copies out to halve the memory.
  bool momentum_encoders = true;
  /// The text side: `text_encoder`, `text_proj` and `itm_head`. Without it the
  /// model is `visual_encoder` and `vision_proj` only (encode_image and
  /// image_feature): embedding images then loads 328 of ALBEF's 798 MB.
  /// Needs momentum_encoders = false.
  bool text_side = true;
  /// The image side: `visual_encoder` and `vision_proj`. Without it the model
  /// is the text encoder's embeddings and unimodal layers [0, fusion_layer)
  /// plus `text_proj` (encode_text and text_feature): embedding captions then
  /// loads 254 of ALBEF's 798 MB. Needs momentum_encoders = false.
  bool image_side = true;
};

/// ALBEF as one module. Forward pieces are exposed separately so tasks
/// compose them (the official forward of each task lives with the task).
/// In inference (eval mode, no gradients recorded) `encode_image`,
/// `encode_text` and `fuse` with one image per text run a large batch about
/// 1024 tokens at a time, so its activations stay those of one slice.
class AlbefModelImpl : public torch::nn::Module {
 public:
  AlbefModelImpl(const Config& config, const ModelOptions& options = {});

  /// [B, 3, R, R] normalised images -> image tokens [B, 1 + P, vision_width].
  at::Tensor encode_image(const at::Tensor& images);
  /// Token ids and mask [B, L] -> text-encoder states [B, L, hidden].
  at::Tensor encode_text(const at::Tensor& input_ids, const at::Tensor& attention_mask);
  /// L2-normalised projection of the image CLS token -> [B, embed_dim].
  at::Tensor image_feature(const at::Tensor& image_embeds);
  /// L2-normalised projection of the text CLS token -> [B, embed_dim].
  at::Tensor text_feature(const at::Tensor& text_embeds);
  /// Fusion layers over text states and image tokens -> [B, L, hidden].
  at::Tensor fuse(const at::Tensor& text_embeds, const at::Tensor& attention_mask, const at::Tensor& image_embeds);
  /// The same over images shared between passes: text row i reads image
  /// `image_rows[i]` if given (see FusionImages).
  at::Tensor fuse(const at::Tensor& text_embeds, const at::Tensor& attention_mask, FusionImages& images,
                  const at::Tensor& image_rows = {});
  /// `itm_head` on the fused CLS state -> logits [B, 2] (class 1 = match).
  at::Tensor itm_logits(const at::Tensor& fused);
  /// MLM logits [B, L, vocab] (Pretrain kind only).
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

  at::Tensor temp, image_queue, text_queue, idx_queue, queue_ptr;
  VisionTransformer visual_encoder{nullptr}, visual_encoder_m{nullptr};
  BertForMaskedLM text_encoder_mlm{nullptr}, text_encoder_mlm_m{nullptr};  // Pretrain kind
  torch::nn::Linear vision_proj{nullptr}, text_proj{nullptr}, itm_head{nullptr};
  torch::nn::Linear vision_proj_m{nullptr}, text_proj_m{nullptr};

 private:
  /// Throws, naming `what`, when the model was built without its text side.
  void require_text_side(const char* what) const;
  void require_image_side(const char* what) const;

  Config config_;
  ModelOptions options_;
  BertModel text_bert_{nullptr}, text_bert_m_{nullptr};
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
/// load one: keys are adapted to the model kind (a pretraining checkpoint's
/// `text_encoder.bert.` becomes `text_encoder.` for retrieval models and back),
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
/// PrecisionGuard(Bf16), not for training or for saving a checkpoint.
void prepare_for_inference(AlbefModel& model, Precision precision);

/// `load_state_dict` from the `.pth` file at `path`, read one tensor at a
/// time (io::LazyCheckpoint): the peak memory is the model's plus its largest
/// tensor, and entries the model does not use are never read.
LoadReport load_checkpoint(AlbefModel& model, const std::string& path, bool strict = false);

}  // namespace albef
