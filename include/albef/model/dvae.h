#pragma once
/// @file dvae.h
/// @brief DALL-E's dVAE encoder, SIMLA's visual tokenizer: an image mapped
/// to [0.1, 0.9] (vision/dalle_pixels.h) goes through a 7x7 conv, four groups
/// of residual blocks (a 2x2 max-pool after each of the first three) and a
/// 1x1 conv to `vocab_size` logits per 8x8 cell; the visual token of a cell
/// is the argmax.
///
/// Parameter names are those of DALL-E's `dall_e.encoder.Encoder`
/// (`blocks.input.w`, `blocks.group_1.block_1.res_path.conv_1.w`, ...), and
/// its `encoder.pkl` (a whole pickled module) is read as data: only the
/// DALL-E encoder's classes and the torch.nn modules it uses are accepted.
/// The convs run in float32; DALL-E runs all but the last in float16 on a
/// GPU (utils.py Conv2d.use_float16), so near-tied logits may pick other
/// tokens there.

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/moduledict.h>

#include <cstdint>
#include <string>
#include <vector>

namespace albef {

/// The encoder's sizes (DALL-E's defaults); `group_count` is fixed at 4.
struct DvaeEncoderOptions {
  int64_t n_hid = 256;
  int64_t n_blk_per_group = 2;
  int64_t input_channels = 3;
  int64_t vocab_size = 8192;
};

/// DALL-E's `utils.Conv2d`: weight `w` [n_out, n_in, kw, kw], bias `b`,
/// "same" padding, odd kw.
class DalleConv2dImpl : public torch::nn::Module {
 public:
  DalleConv2dImpl(int64_t n_in, int64_t n_out, int64_t kw);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor w, b;
};
TORCH_MODULE(DalleConv2d);

/// `EncoderBlock`: id_path(x) + post_gain * res_path(x), where res_path is
/// relu-conv3-relu-conv3-relu-conv3-relu-conv1 through n_out/4 channels,
/// id_path a 1x1 conv when the width changes (else the identity), and
/// post_gain = 1 / n_layers^2 over the whole encoder's blocks.
class DvaeEncoderBlockImpl : public torch::nn::Module {
 public:
  DvaeEncoderBlockImpl(int64_t n_in, int64_t n_out, int64_t n_layers);
  at::Tensor forward(const at::Tensor& x);
  DalleConv2d id_path{nullptr};  ///< null when n_in == n_out
  torch::nn::ModuleDict res_path{nullptr};
  DalleConv2d conv_1{nullptr}, conv_2{nullptr}, conv_3{nullptr}, conv_4{nullptr};
  double post_gain;
};
TORCH_MODULE(DvaeEncoderBlock);

/// `dall_e.encoder.Encoder`: [N, C, H, W] float32 (H, W multiples of 8) ->
/// logits [N, vocab_size, H/8, W/8].
class DvaeEncoderImpl : public torch::nn::Module {
 public:
  explicit DvaeEncoderImpl(const DvaeEncoderOptions& options = {});
  at::Tensor forward(const at::Tensor& x);
  /// The visual token ids: argmax of the logits per cell, row-major,
  /// int64 [N, (H/8) * (W/8)] (SIMLA's `get_codebook_indices(...).flatten(1)`).
  at::Tensor codes(const at::Tensor& x);
  const DvaeEncoderOptions& options() const { return options_; }

  torch::nn::ModuleDict blocks{nullptr};

 private:
  DvaeEncoderOptions options_;
  DalleConv2d input_{nullptr}, output_conv_{nullptr};
  std::vector<std::vector<DvaeEncoderBlock>> groups_;
};
TORCH_MODULE(DvaeEncoder);

/// The classes a DALL-E `encoder.pkl` may name (dall_e's and torch.nn's).
const std::vector<std::string>& dvae_encoder_pickle_classes();

/// Reads DALL-E's `encoder.pkl` (a pickled `dall_e.encoder.Encoder`, zip or
/// legacy torch.save format) into an encoder of the sizes it records, in
/// eval mode. A class outside dvae_encoder_pickle_classes, a missing or
/// extra weight, or a shape that differs is an error naming the file.
DvaeEncoder load_dvae_encoder(const std::string& path);

}  // namespace albef
