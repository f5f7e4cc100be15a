#pragma once
// int8 linear layers (--precision int8): weights quantised once per output
// channel, activations per row at each call, products on oneDNN's int8 GEMM
// (VNNI where the CPU has it). Inference only.

#include <ATen/core/Tensor.h>

#include <utility>

namespace torch::nn {
class LinearImpl;
class Linear;
}

namespace albef::ops {

/// Whether oneDNN's int8 GEMM is AVX2's here (x86 without VNNI): it
/// multiplies u8 inputs by s8 weights and sums pairs of products in
/// saturating int16. The quantised inputs then go to it as u8 (q + 128, 128
/// its zero point) and the weights keep 7 bits (int8_weight_levels).
bool int8_gemm_sums_pairs_in_int16();

/// The largest weight value: 127, or 63 where int8_gemm_sums_pairs_in_int16,
/// whose int16 sums 8-bit weights would saturate.
int int8_weight_levels();

/// `weight` [N, K] float quantised symmetrically per output channel: int8
/// values [N, K], round(W[n] / s[n]), and float32 scales s [N], s[n] =
/// max|W[n]| / int8_weight_levels() (a zero row gets s = 1).
std::pair<at::Tensor, at::Tensor> quantize_weight_int8(const at::Tensor& weight);

/// quantize_weight_int8 of rows [n, K] of a layer's weights, written into
/// that layer's `values` [n, K] (int8) and `scales` [n] (float32), in blocks
/// of 64 rows: the float32 temporaries stay small beside the layer.
void quantize_weight_int8_into(const at::Tensor& weight, at::Tensor values, at::Tensor scales);

/// Turns a float linear layer into an int8 one: its weight becomes the int8
/// values (the float32 memory is freed) and a buffer `weight_scale` holds the
/// scales. ops::linear then takes the int8 path for it.
void quantize_linear_int8(torch::nn::LinearImpl& layer);

/// While alive, the encoder layers this thread builds (encoder_linear) are
/// int8 from the start: their weights are left unwritten until a checkpoint
/// is quantised into them (quantize_weight_int8), so that a model loaded
/// for --precision int8 never holds its float32 weights. One per thread at a
/// time.
class Int8Construction {
 public:
  Int8Construction();
  ~Int8Construction();
  Int8Construction(const Int8Construction&) = delete;
  Int8Construction& operator=(const Int8Construction&) = delete;
};

/// A linear layer of the ViT or BERT: float32, or an int8 layer awaiting its
/// weights (values unwritten, scales 1) under Int8Construction.
torch::nn::Linear encoder_linear(int64_t in_features, int64_t out_features);

/// The scales of an int8 layer (quantize_linear_int8); undefined for others.
at::Tensor int8_weight_scales(const torch::nn::LinearImpl& layer);

/// Activations quantised per row, as an int8 layer reads them: int8 values
/// [M, K] and float32 scales [M], row m being values[m] * scales[m].
struct Int8Rows {
  at::Tensor values;
  at::Tensor scales;
};

/// gelu?(x W^T + b) with int8 `values` and `scales` (quantize_weight_int8):
/// each row of x (float32 or bf16) is quantised to int8 with its own scale
/// max|x_m| / 127, the int8 product accumulated in int32, then rescaled,
/// biased and activated in one pass (GELU's erf form within 1e-6), written
/// as `out_type`: float32, or bf16 for a product that feeds another product.
/// No gradient.
at::Tensor linear_int8(const at::Tensor& input, const at::Tensor& values, const at::Tensor& scales,
                       const at::Tensor& bias, bool gelu, at::ScalarType out_type = at::kFloat);

/// The same for a product read only by another int8 layer (GELU's output in
/// a feed-forward block): each output row is quantised while it is in cache,
/// instead of being written out for the next layer to read and quantise.
/// Rows [M, N] for input [..., K].
Int8Rows linear_int8_rows(const at::Tensor& input, const at::Tensor& values, const at::Tensor& scales,
                          const at::Tensor& bias, bool gelu);

/// linear_int8 on rows already quantised (linear_int8_rows): [M, N].
at::Tensor linear_int8(const Int8Rows& input, const at::Tensor& values, const at::Tensor& scales,
                       const at::Tensor& bias, bool gelu, at::ScalarType out_type = at::kFloat);

}  // namespace albef::ops
