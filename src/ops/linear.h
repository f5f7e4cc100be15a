#pragma once
/// @file linear.h
/// @brief The linear layer every encoder calls, with a faster float32 GEMM.
///
/// LibTorch does float32 matmuls through the system BLAS; on CPUs with
/// AVX-512 oneDNN's sgemm runs about twice as fast as OpenBLAS with its AVX2
/// kernels (on AVX2-only CPUs the two are even). `linear` sends float32 CPU
/// products to oneDNN when albef was built with it (forward and backward,
/// through a custom autograd function), bf16-autocast products to oneDNN's
/// bf16 kernels where the CPU runs them (AVX-512: in inference its matmul on
/// weights packed once, in training its BLAS-like GEMM), and everything else
/// (CUDA, other dtypes, bf16 elsewhere) to `at::linear`. Beside it, what
/// hands products their inputs: a feed-forward block's two layers
/// (`feed_forward`), and the LayerNorms whose output only products read,
/// written in the products' bf16 in the same pass (`layer_norm_for_products`).

#include <ATen/core/Tensor.h>

#include <utility>

namespace torch::nn {
class LayerNormImpl;
class LinearImpl;
}

namespace albef::ops {

/// y = x W^T + b over the last dimension of `input`, as `at::linear`.
/// `bias` may be undefined. Differentiable in all three arguments.
at::Tensor linear(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias);

/// What reads a layer's output. Under bf16 autocast a product that feeds
/// another product (q, k and v into attention) would be rounded to bf16 by
/// that product anyway: in inference it is written in bf16 at once (half
/// the bytes, no conversion pass). Anything else (a residual sum) reads
/// float32.
enum class Feeds { anything, product };

/// The same with a torch::nn::Linear's parameters.
at::Tensor linear(const torch::nn::LinearImpl& layer, const at::Tensor& input, Feeds feeds = Feeds::anything);

/// gelu(linear(input)) with GELU's erf form (BERT's and timm's). In
/// inference bias and GELU are applied inside the GEMM (oneDNN's matmul
/// post-ops) instead of in passes of their own over the output, and under
/// bf16 autocast the output is bf16 (it always feeds the next layer's product).
at::Tensor linear_gelu(const torch::nn::LinearImpl& layer, const at::Tensor& input);

/// second(gelu(first(input))): a transformer's feed-forward block (ViT's
/// mlp, BERT's intermediate and output dense). With two int8 layers GELU's
/// output passes between them quantised, row by row as it is computed;
/// otherwise it is linear(second, linear_gelu(first, input)). `input` is
/// let go once the first product has read it: a caller that moves it in
/// frees it before the second product runs.
at::Tensor feed_forward(const torch::nn::LinearImpl& first, const torch::nn::LinearImpl& second, at::Tensor input);

/// residual + feed_forward(first, second, input), and where `norm` is given
/// LayerNorm of that sum for products to read, as add_layer_norm_for_products
/// gives them: the same values. Where `second` is a packed bf16 layer and
/// `residual` is moved in by its only holder, the second product is added
/// into the residual stream as it is written (oneDNN's sum post-op, the same
/// float addition): a pass never holds the product beside the stream (at a
/// ViT block's highest point: the stream, the GELU output and the product).
std::pair<at::Tensor, at::Tensor> feed_forward_added(const torch::nn::LinearImpl& first,
                                                     const torch::nn::LinearImpl& second, at::Tensor input,
                                                     at::Tensor residual, torch::nn::LayerNormImpl* norm);

/// `input` as the products that read it take it: under bf16 autocast, in
/// inference on oneDNN's bf16 path, converted to bf16 once for several
/// products (q, k and v of one hidden state; the keys and values of every
/// fusion layer from the same image states) instead of once in each;
/// otherwise `input` itself. The products compute the same either way.
at::Tensor product_input(const at::Tensor& input);

/// Whether the products that read `input` take it in bf16 (where
/// product_input converts it): under bf16 autocast, in inference on oneDNN's
/// bf16 path.
bool products_read_bf16(const at::Tensor& input);

/// LayerNorm(x) for products to read (q, k and v; the first feed-forward
/// layer): where product_input would convert it to bf16, it is written in
/// bf16 in the same pass (AVX-512 BF16); otherwise `norm`'s own forward.
at::Tensor layer_norm_for_products(const at::Tensor& x, torch::nn::LayerNormImpl& norm);

/// residual + update. Where `update` is moved in by its only holder (a
/// product just made) and no gradient is recorded, the sum is written over
/// it: a pass holds one activation fewer. The same values either way.
at::Tensor add_into(at::Tensor update, const at::Tensor& residual);

/// residual + update and LayerNorm of it for products to read: the sum
/// (float32, the residual stream) and the normalised rows as
/// layer_norm_for_products gives them, in one pass per row where those are
/// bf16 instead of an add, a layer_norm and a conversion. The sum goes over
/// `update` as in add_into.
std::pair<at::Tensor, at::Tensor> add_layer_norm_for_products(const at::Tensor& residual, at::Tensor update,
                                                              torch::nn::LayerNormImpl& norm);

/// LayerNorm(residual + update), BERT's post-LN sublayer output: the
/// normalised rows in float32 (the residual stream) and as product_input
/// would hand them to products, both from one pass per row where the
/// latter are bf16. The sum goes over `update` as in add_into, and in the
/// bf16 pass the normalised rows with it.
std::pair<at::Tensor, at::Tensor> layer_norm_of_sum(const at::Tensor& residual, at::Tensor update,
                                                    torch::nn::LayerNormImpl& norm);

/// Keeps an inference layer's bf16 or int8 weights only in the blocked
/// layout oneDNN's matmul reads (ops/packed_weights.h), reordered once here,
/// instead of the plain matrix plus a packed copy made at first use: the
/// model then holds its linear weights once. The parameter becomes those
/// bytes (uint8, 1-D), which only `linear` and `linear_gelu` read; a product
/// that needs gradients (Grad-CAM) unpacks a plain copy for the call. Call it
/// once the weights are final (after loading). Returns false, leaving the
/// layer as it is, where there is nothing to gain: float32, not the CPU, bf16
/// without oneDNN's bf16 kernels, or a kernel that reads the plain matrix.
bool pack_for_inference(torch::nn::LinearImpl& layer);

/// True for a layer pack_for_inference packed.
bool is_packed(const torch::nn::LinearImpl& layer);

/// A packed layer's weights as the plain [N, K] matrix (bf16 or int8; a
/// copy); for other layers the weight itself.
at::Tensor plain_weight(const torch::nn::LinearImpl& layer);

/// True when albef was built with oneDNN's GEMM (the ALBEF_WITH_DNNL option).
bool dnnl_gemm_available();

/// Turns the oneDNN path off (true) or back on, process-wide; for comparing
/// the two paths. Off by default when the environment sets ALBEF_GEMM=aten.
void set_aten_gemm_only(bool aten_only);
bool aten_gemm_only();

/// C = A B^T for row-major [M,K] x [N,K] through the fast path (for the
/// GEMM-peak measurement of `albef bench`): float32, or bf16 under bf16
/// autocast; falls back to `at::linear`.
at::Tensor matmul_nt(const at::Tensor& a, const at::Tensor& b);

}  // namespace albef::ops
