#include "ops/linear.h"
#include "core/dnnl_bf16_gemm.h"
#include "core/rows.h"
#include "ops/bf16_rows.h"
#include "ops/linear_int8.h"
#include "ops/packed_weights.h"

#include "albef/core/error.h"
#include "albef/core/runtime.h"

#include <ATen/ATen.h>
#include "core/autocast.h"
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#ifdef ALBEF_WITH_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace albef::ops {
namespace {

std::atomic<bool> g_aten_only{[] {
  const char* value = std::getenv("ALBEF_GEMM");
  return value != nullptr && std::strcmp(value, "aten") == 0;
}()};

/// Under bf16 autocast products run on bf16 operands; otherwise in float32.
at::ScalarType compute_type() {
  const bool bf16 = autocast::enabled(c10::DeviceType::CPU) && autocast::dtype(c10::DeviceType::CPU) == at::kBFloat16;
  return bf16 ? at::kBFloat16 : at::kFloat;
}

/// Whether a product writes bf16: under bf16 autocast, for a reader that
/// is another product.
bool bf16_output(Feeds feeds) { return feeds == Feeds::product && compute_type() == at::kBFloat16; }

#ifdef ALBEF_WITH_DNNL
/// Row-major C[M,N] (+)= op(A) op(B) with float32 accumulation. A and B are
/// float32, or both bfloat16 (oneDNN's gemm_bf16bf16f32); C is float32.
void gemm(char transa, char transb, int64_t m, int64_t n, int64_t k, const at::Tensor& a, int64_t lda,
          const at::Tensor& b, int64_t ldb, float beta, at::Tensor& c) {
#ifdef ALBEF_WITH_DNNL_BF16_GEMM
  const dnnl_status_t status =
      a.scalar_type() == at::kBFloat16
          ? dnnl_gemm_bf16bf16f32(transa, transb, m, n, k, 1.0f, a.data_ptr(), lda, b.data_ptr(), ldb, beta,
                                  c.data_ptr<float>(), n)
          : dnnl_sgemm(transa, transb, m, n, k, 1.0f, a.data_ptr<float>(), lda, b.data_ptr<float>(), ldb, beta,
                       c.data_ptr<float>(), n);
#else
  const dnnl_status_t status = dnnl_sgemm(transa, transb, m, n, k, 1.0f, a.data_ptr<float>(), lda,
                                          b.data_ptr<float>(), ldb, beta, c.data_ptr<float>(), n);
#endif
  ALBEF_CHECK(status == dnnl_success, "oneDNN gemm failed with status ", static_cast<int>(status), " for M=", m,
              " N=", n, " K=", k, " (", a.scalar_type(), ")");
}

/// The input as [M, K] rows of `dtype`: contiguous in the last dimension,
/// any row stride (the [CLS] rows of a sequence are used in place).
at::Tensor as_rows(const at::Tensor& input, at::ScalarType dtype) {
  at::Tensor rows = input.dim() == 2 ? input : input.reshape({-1, input.size(-1)});
  if (rows.scalar_type() != dtype) return rows.to(dtype).contiguous();
  const bool usable = rows.stride(1) == 1 && rows.stride(0) >= rows.size(1);
  return usable ? rows : rows.contiguous();
}

/// The weight in the compute type. Under autocast the bf16 copy of a
/// parameter comes from autocast's cache, so it is cast once per region.
at::Tensor weight_as(const at::Tensor& weight, at::ScalarType dtype) {
  if (weight.scalar_type() == dtype) return weight.contiguous();
  return at::autocast::cached_cast(dtype, weight, c10::DeviceType::CPU).contiguous();
}

dnnl::memory::data_type dnnl_type(at::ScalarType type) {
  return type == at::kBFloat16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

/// out[M,N] = rows W^T (+ bias) (then GELU) through oneDNN's matmul
/// primitive, which applies bias and activation to each tile while it is
/// still in cache instead of in passes of their own. rows and W are both
/// float32 or both bf16; bias is float32; out is float32 or, for bf16
/// operands, bf16 (a product that feeds another product). With
/// `kept_layout` the weights are a packed layer's bytes in that layout
/// (pack_for_inference), read as they are. With `accumulate` the product is
/// added to what `out` holds (oneDNN's sum post-op, after the bias) instead
/// of replacing it. Returns false when oneDNN offers no implementation.
/// Creating the primitive each call costs a few microseconds: oneDNN keeps
/// created primitives in a cache.
bool matmul_primitive(const at::Tensor& rows, const at::Tensor& weight, const at::Tensor& bias, bool gelu,
                      at::Tensor& out, const dnnl::memory::desc* kept_layout = nullptr, bool accumulate = false) {
  using dnnl::memory;
  const dnnl::engine& engine = cpu_engine();
  const int64_t m = rows.size(0), k = rows.size(1), n = out.size(1);
  const auto operands = dnnl_type(rows.scalar_type());
  try {
    const memory::desc src_md({m, k}, operands, memory::dims{rows.stride(0), 1});
    const memory::desc as_stored({k, n}, operands, memory::dims{1, k});  // W^T: W [N, K] read column-wise
    const memory::desc bias_md({1, n}, memory::data_type::f32, memory::dims{n, 1});
    const memory::desc dst_md({m, n}, dnnl_type(out.scalar_type()), memory::dims{n, 1});
    dnnl::post_ops post_ops;
    if (gelu) post_ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
    if (accumulate) post_ops.append_sum(1.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(post_ops);
    // float32 reads the weights as stored. bf16 kernels read them in a blocked layout, reordered once
    // (ops/packed_weights.h) rather than on every call: at a thousand rows the per-call copy costs 10-30%.
    const memory::desc weight_md = kept_layout ? *kept_layout
                                   : operands == memory::data_type::bf16
                                       ? chosen_weights_layout(src_md, dst_md, as_stored, engine)
                                       : as_stored;
    const dnnl::matmul::desc desc =
        bias.defined() ? dnnl::matmul::desc(src_md, weight_md, bias_md, dst_md) : dnnl::matmul::desc(src_md, weight_md, dst_md);
    const dnnl::matmul matmul(dnnl::matmul::primitive_desc(desc, attr, engine));
    const memory weights = kept_layout || weight_md == as_stored ? memory(weight_md, engine, weight.data_ptr())
                                                                 : packed_weights(weight.contiguous(), weight_md, engine);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(src_md, engine, rows.data_ptr())},
                                         {DNNL_ARG_WEIGHTS, weights},
                                         {DNNL_ARG_DST, memory(dst_md, engine, out.data_ptr())}};
    if (bias.defined()) args.emplace(DNNL_ARG_BIAS, memory(bias_md, engine, bias.data_ptr()));
    dnnl::stream stream(engine);
    matmul.execute(stream, args);
    stream.wait();
    return true;
  } catch (const dnnl::error& error) {
    ALBEF_CHECK(error.status == dnnl_unimplemented, "oneDNN matmul failed (", error.what(), ") for M=", m, " N=", n,
                " K=", k);
    return false;
  }
}

/// rows [M,K] W^T + bias, then GELU when asked, in `out_type` (float32, or
/// bf16 for bf16 operands). float32 and bf16 inference go through the
/// matmul primitive (bias, GELU and the bf16 rounding fused); bf16 training
/// through the BLAS-like GEMM, which packs the weights (cast anew each step)
/// as it goes. The autograd function never asks for GELU or bf16 results.
at::Tensor forward_rows(const at::Tensor& rows, const at::Tensor& weight, const at::Tensor& bias, bool inference,
                        bool gelu = false, at::ScalarType out_type = at::kFloat) {
  const int64_t m = rows.size(0), k = rows.size(1), n = weight.size(0);
  at::Tensor out = at::empty({m, n}, rows.options().dtype(out_type));
  const at::Tensor float_bias = bias.defined() ? bias.to(at::kFloat).contiguous() : bias;
  const bool primitive = rows.scalar_type() == at::kFloat || inference;
  if (m > 0 && k > 0 && primitive && matmul_primitive(rows, weight, float_bias, gelu, out)) return out;
  at::Tensor product = out_type == at::kFloat ? out : at::empty({m, n}, rows.options().dtype(at::kFloat));
  float beta = 0.0f;
  if (bias.defined()) {
    product.copy_(float_bias.expand({m, n}));
    beta = 1.0f;
  } else if (k == 0) {
    product.zero_();
  }
  if (m > 0 && k > 0) gemm('N', 'T', m, n, k, rows, rows.stride(0), weight, k, beta, product);
  if (gelu) product = at::gelu(product);
  return product.scalar_type() == out_type ? product : product.to(out_type);
}

/// Autograd for the oneDNN product: dX = dY W, dW = dY^T X, db = sum dY, in
/// the compute type of the forward (bf16 operands keep float32 results).
/// Custom functions take no undefined inputs, so a missing bias arrives as an
/// empty tensor and `has_bias` says which it is.
struct DnnlLinear : public torch::autograd::Function<DnnlLinear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, bool has_bias, at::ScalarType dtype) {
    const at::Tensor rows = as_rows(input, dtype), cast_weight = weight_as(weight, dtype);
    ctx->save_for_backward({rows, cast_weight});
    ctx->saved_data["input_sizes"] = input.sizes().vec();
    ctx->saved_data["has_bias"] = has_bias;
    return rows_in_shape(forward_rows(rows, cast_weight, has_bias ? bias : at::Tensor(), /*inference=*/false),
                         input.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& rows = saved[0];
    const at::Tensor& weight = saved[1];
    const int64_t m = rows.size(0), k = rows.size(1), n = weight.size(0);
    const at::Tensor grad = grad_outputs[0].reshape({m, n}).to(at::kFloat).contiguous();
    const at::Tensor grad_operand = grad.to(rows.scalar_type());  // no copy in float32
    at::Tensor grad_input, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) {
      grad_input = n > 0 ? at::empty({m, k}, grad.options()) : at::zeros({m, k}, grad.options());
      if (m > 0 && n > 0) gemm('N', 'N', m, k, n, grad_operand, n, weight, k, 0.0f, grad_input);
      grad_input = grad_input.view(ctx->saved_data["input_sizes"].toIntVector());
    }
    if (ctx->needs_input_grad(1)) {
      grad_weight = m > 0 ? at::empty({n, k}, grad.options()) : at::zeros({n, k}, grad.options());
      if (m > 0) gemm('T', 'N', n, k, m, grad_operand, n, rows, rows.stride(0), 0.0f, grad_weight);
    }
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) grad_bias = grad.sum(0);
    return {grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor()};
  }
};

bool takes_dnnl_path(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, at::ScalarType dtype) {
  if (g_aten_only.load(std::memory_order_relaxed)) return false;
  if (!input.device().is_cpu() || input.dim() < 2 || weight.dim() != 2 || input.size(-1) != weight.size(1))
    return false;
  if (dtype == at::kBFloat16 && !dnnl_bf16_gemm_available()) return false;
  auto accepted = [&](const at::Tensor& t) {
    return t.scalar_type() == at::kFloat || (dtype == at::kBFloat16 && t.scalar_type() == at::kBFloat16);
  };
  if (!accepted(input) || !accepted(weight)) return false;
  return !bias.defined() || (accepted(bias) && bias.dim() == 1 && bias.size(0) == weight.size(0));
}

/// The layout of a packed layer's bytes: int8 layers carry their scales.
dnnl::memory::desc packed_layout(const torch::nn::LinearImpl& layer) {
  const auto operands =
      int8_weight_scales(layer).defined() ? dnnl::memory::data_type::s8 : dnnl::memory::data_type::bf16;
  return inference_weights_layout(layer.options.out_features(), layer.options.in_features(), operands, cpu_engine());
}

/// gelu?(x W^T + b) on a packed bf16 layer's bytes, on bf16 operands
/// whatever the input (the model was readied for bf16); undefined where
/// oneDNN has no kernel reading them for this shape. With `sum` (float32
/// rows of the output's shape, contiguous) the product is added into it.
at::Tensor packed_bf16_product(const torch::nn::LinearImpl& layer, const at::Tensor& input, bool gelu, Feeds feeds,
                               const at::Tensor& sum = {}) {
  const at::Tensor rows = as_rows(input, at::kBFloat16);
  at::Tensor out = sum.defined() ? sum.view({rows.size(0), layer.options.out_features()})
                                 : at::empty({rows.size(0), layer.options.out_features()},
                                             rows.options().dtype(bf16_output(feeds) ? at::kBFloat16 : at::kFloat));
  const at::Tensor bias = layer.bias.defined() ? layer.bias.to(at::kFloat).contiguous() : layer.bias;
  const dnnl::memory::desc layout = inference_weights_layout(layer.options.out_features(), layer.options.in_features(),
                                                             dnnl::memory::data_type::bf16, cpu_engine());
  if (rows.size(0) > 0 && !matmul_primitive(rows, layer.weight, bias, gelu, out, &layout, sum.defined())) return {};
  return sum.defined() ? sum : rows_in_shape(std::move(out), input.sizes());
}
#endif

}  // namespace

namespace {

at::Tensor linear_then(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, bool gelu,
                       Feeds feeds) {
#ifdef ALBEF_WITH_DNNL
  const at::ScalarType dtype = compute_type();
  if (takes_dnnl_path(input, weight, bias, dtype)) {
    const bool needs_grad = at::GradMode::is_enabled() &&
                            (input.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
    if (needs_grad) {
      const at::Tensor out = DnnlLinear::apply(input, weight, bias.defined() ? bias : at::empty({0}, weight.options()),
                                               bias.defined(), dtype);
      return gelu ? at::gelu(out) : out;
    }
    const at::ScalarType out_type = feeds == Feeds::product ? dtype : at::kFloat;
    return rows_in_shape(
        forward_rows(as_rows(input, dtype), weight_as(weight, dtype), bias, /*inference=*/true, gelu, out_type),
        input.sizes());
  }
#endif
  at::Tensor out;
  // A model readied for bf16 inference run without autocast: compute in the input's type.
  if (weight.scalar_type() != input.scalar_type() && !autocast::enabled(c10::DeviceType::CPU))
    out = at::linear(input, weight.to(input.scalar_type()), bias.defined() ? bias.to(input.scalar_type()) : bias);
  else
    out = at::linear(input, weight, bias);
  return gelu ? at::gelu(out) : out;
}

}  // namespace

at::Tensor linear(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias) {
  return linear_then(input, weight, bias, false, Feeds::anything);
}

namespace {

at::Tensor layer_product(const torch::nn::LinearImpl& layer, const at::Tensor& input, bool gelu, Feeds feeds) {
  if (const at::Tensor scales = int8_weight_scales(layer); scales.defined())  // a layer readied for int8
    return linear_int8(input, layer.weight, scales, layer.bias, gelu, bf16_output(feeds) ? at::kBFloat16 : at::kFloat);
  if (!is_packed(layer)) return linear_then(input, layer.weight, layer.bias, gelu, feeds);
  ALBEF_CHECK(input.device().is_cpu() && input.dim() >= 1 && input.size(-1) == layer.options.in_features(),
              "input [..., ", layer.options.in_features(), "] on the CPU expected, got ", input.sizes(), " on ",
              input.device());
#ifdef ALBEF_WITH_DNNL
  if (!(at::GradMode::is_enabled() && input.requires_grad()))
    if (at::Tensor out = packed_bf16_product(layer, input, gelu, feeds); out.defined()) return out;
#endif
  return linear_then(input, plain_weight(layer), layer.bias, gelu, feeds);  // a gradient, or a shape not taken packed
}

}  // namespace

at::Tensor linear(const torch::nn::LinearImpl& layer, const at::Tensor& input, Feeds feeds) {
  return layer_product(layer, input, false, feeds);
}

at::Tensor linear_gelu(const torch::nn::LinearImpl& layer, const at::Tensor& input) {
  return layer_product(layer, input, true, Feeds::product);
}

at::Tensor feed_forward(const torch::nn::LinearImpl& first, const torch::nn::LinearImpl& second, at::Tensor input) {
  const at::Tensor first_scales = int8_weight_scales(first), second_scales = int8_weight_scales(second);
  if (!first_scales.defined() || !second_scales.defined()) {
    at::Tensor hidden = linear_gelu(first, input);
    input.reset();
    return linear(second, hidden);
  }
  const std::vector<int64_t> sizes = input.sizes().vec();
  const Int8Rows hidden = linear_int8_rows(input, first.weight, first_scales, first.bias, /*gelu=*/true);
  input.reset();
  return rows_in_shape(linear_int8(hidden, second.weight, second_scales, second.bias, /*gelu=*/false), sizes);
}

bool products_read_bf16(const at::Tensor& input) {
#ifdef ALBEF_WITH_DNNL
  return compute_type() == at::kBFloat16 && input.scalar_type() == at::kFloat && input.device().is_cpu() &&
         !g_aten_only.load(std::memory_order_relaxed) && dnnl_bf16_gemm_available() &&
         !(at::GradMode::is_enabled() && input.requires_grad());
#else
  (void)input;
  return false;
#endif
}

namespace {

/// The fused bf16 LayerNorm applies: `x` (and `update`) float32 rows,
/// `norm` an inference LayerNorm over their last dimension.
bool normalizes_to_bf16(const at::Tensor& x, const at::Tensor& update, const torch::nn::LayerNormImpl& norm) {
  if (!products_read_bf16(x) || !native_bf16_rows() || !x.is_contiguous() || x.dim() < 1) return false;
  if (update.defined() && (update.sizes() != x.sizes() || update.scalar_type() != at::kFloat ||
                           !update.is_contiguous() || (at::GradMode::is_enabled() && update.requires_grad())))
    return false;
  const at::Tensor &gamma = norm.weight, &beta = norm.bias;
  return norm.options.normalized_shape() == std::vector<int64_t>{x.size(-1)} && gamma.defined() && beta.defined() &&
         gamma.scalar_type() == at::kFloat && beta.scalar_type() == at::kFloat && gamma.is_contiguous() &&
         beta.is_contiguous() && !(at::GradMode::is_enabled() && (gamma.requires_grad() || beta.requires_grad()));
}

/// LayerNorm(x + update) in bf16 (ops/bf16_rows.h), the sum written to
/// `sum` and the float32 normalised rows to `normed` where not null.
at::Tensor normalize_to_bf16(const at::Tensor& x, const at::Tensor& update, const torch::nn::LayerNormImpl& norm,
                             float* sum, float* normed) {
  const int64_t cols = x.size(-1), rows = cols > 0 ? x.numel() / cols : 0;
  at::Tensor rounded = at::empty(x.sizes(), x.options().dtype(at::kBFloat16));
  const float* in = x.data_ptr<float>();
  const float* added = update.defined() ? update.data_ptr<float>() : nullptr;
  const float* gamma = norm.weight.data_ptr<float>();
  const float* beta = norm.bias.data_ptr<float>();
  const auto eps = static_cast<float>(norm.options.eps());
  c10::BFloat16* out = rounded.data_ptr<c10::BFloat16>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * cols;
    add_layer_norm_to_bf16(in + first, added ? added + first : nullptr, sum ? sum + first : nullptr, gamma, beta,
                           eps, end - begin, cols, out + first, normed ? normed + first : nullptr);
  });
  return rounded;
}

}  // namespace

at::Tensor product_input(const at::Tensor& input) {
  return products_read_bf16(input) ? input.to(at::kBFloat16) : input;
}

at::Tensor layer_norm_for_products(const at::Tensor& x, torch::nn::LayerNormImpl& norm) {
  if (normalizes_to_bf16(x, {}, norm)) return normalize_to_bf16(x, {}, norm, nullptr, nullptr);
  return norm.forward(x);
}

namespace {

/// Whether `t` may be written over: its caller handed over the only
/// reference to it and to its storage (moved in), its rows are contiguous,
/// and no gradient is recorded.
bool held_once(const at::Tensor& t) {
  return !at::GradMode::is_enabled() && t.use_count() == 1 && t.storage().use_count() == 1 && t.is_contiguous();
}

/// Whether `update` may take residual + update in place: held once, with
/// residual's shape and type.
bool writable_in_place(const at::Tensor& update, const at::Tensor& residual) {
  return held_once(update) && update.sizes() == residual.sizes() && update.scalar_type() == residual.scalar_type() &&
         update.device() == residual.device();
}

}  // namespace

at::Tensor add_into(at::Tensor update, const at::Tensor& residual) {
  // Float addition commutes: update + residual is residual + update, bit for bit.
  return writable_in_place(update, residual) ? update.add_(residual) : residual + update;
}

std::pair<at::Tensor, at::Tensor> add_layer_norm_for_products(const at::Tensor& residual, at::Tensor update,
                                                              torch::nn::LayerNormImpl& norm) {
  if (normalizes_to_bf16(residual, update, norm)) {
    // Each element of the sum is written after its update is read: the two may share storage.
    at::Tensor sum = writable_in_place(update, residual) ? update : at::empty_like(residual);
    return {sum, normalize_to_bf16(residual, update, norm, sum.data_ptr<float>(), nullptr)};
  }
  at::Tensor sum = add_into(std::move(update), residual);
  at::Tensor normed = norm.forward(sum);
  return {sum, normed};
}

std::pair<at::Tensor, at::Tensor> feed_forward_added(const torch::nn::LinearImpl& first,
                                                     const torch::nn::LinearImpl& second, at::Tensor input,
                                                     at::Tensor residual, torch::nn::LayerNormImpl* norm) {
#ifdef ALBEF_WITH_DNNL
  std::vector<int64_t> product_sizes = input.sizes().vec();
  if (!product_sizes.empty()) product_sizes.back() = second.options.out_features();
  // oneDNN adds the product into the residual's storage where nothing else reads it.
  if (is_packed(second) && !int8_weight_scales(second).defined() && held_once(residual) &&
      residual.scalar_type() == at::kFloat && residual.device().is_cpu() && residual.sizes() == product_sizes) {
    at::Tensor hidden = linear_gelu(first, input);
    input.reset();
    if (!packed_bf16_product(second, hidden, /*gelu=*/false, Feeds::anything, residual).defined())
      residual = add_into(linear(second, hidden), residual);  // no kernel adding into it for this shape
    at::Tensor normed = norm ? layer_norm_for_products(residual, *norm) : at::Tensor();
    return {std::move(residual), std::move(normed)};
  }
#endif
  at::Tensor update = feed_forward(first, second, std::move(input));
  // The sum goes over the residual where it was moved in (addition commutes), else over the product.
  if (writable_in_place(residual, update)) std::swap(residual, update);
  if (norm == nullptr) return {add_into(std::move(update), residual), at::Tensor()};
  return add_layer_norm_for_products(residual, std::move(update), *norm);
}

std::pair<at::Tensor, at::Tensor> layer_norm_of_sum(const at::Tensor& residual, at::Tensor update,
                                                    torch::nn::LayerNormImpl& norm) {
  if (normalizes_to_bf16(residual, update, norm)) {
    // Holds the sum until each row is normalised in place; may be update's own storage (add_into).
    at::Tensor normed = writable_in_place(update, residual) ? update : at::empty_like(residual);
    float* rows = normed.data_ptr<float>();
    return {normed, normalize_to_bf16(residual, update, norm, rows, rows)};
  }
  at::Tensor normed = norm.forward(add_into(std::move(update), residual));
  return {normed, product_input(normed)};
}

bool is_packed(const torch::nn::LinearImpl& layer) {
  return layer.weight.scalar_type() == at::kByte && layer.weight.dim() == 1;
}

bool pack_for_inference(torch::nn::LinearImpl& layer) {
#ifdef ALBEF_WITH_DNNL
  const at::Tensor& weight = layer.weight;
  if (is_packed(layer) || !weight.device().is_cpu() || weight.dim() != 2) return false;
  const bool int8 = weight.scalar_type() == at::kChar;
  if (!int8 && !(weight.scalar_type() == at::kBFloat16 && dnnl_bf16_gemm_available())) return false;
  const auto operands = int8 ? dnnl::memory::data_type::s8 : dnnl::memory::data_type::bf16;
  const int64_t n = weight.size(0), k = weight.size(1);
  const dnnl::memory::desc layout = inference_weights_layout(n, k, operands, cpu_engine());
  if (layout == stored_weights_desc(n, k, operands)) return false;  // the kernel reads the plain matrix
  const at::NoGradGuard no_grad;
  layer.weight.set_requires_grad(false);
  layer.weight.set_data(pack_into(weight, layout, cpu_engine()));  // the plain storage is released
  return true;
#else
  (void)layer;
  return false;
#endif
}

at::Tensor plain_weight(const torch::nn::LinearImpl& layer) {
  if (!is_packed(layer)) return layer.weight;
#ifdef ALBEF_WITH_DNNL
  const at::ScalarType type = int8_weight_scales(layer).defined() ? at::kChar : at::kBFloat16;
  return unpack_from(layer.weight, packed_layout(layer), type, cpu_engine());
#else
  fail("a packed linear layer in a build without oneDNN");
#endif
}

bool dnnl_gemm_available() {
#ifdef ALBEF_WITH_DNNL
  return true;
#else
  return false;
#endif
}

void set_aten_gemm_only(bool aten_only) { g_aten_only.store(aten_only); }
bool aten_gemm_only() { return g_aten_only.load(); }

at::Tensor matmul_nt(const at::Tensor& a, const at::Tensor& b) {
  ALBEF_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1), "expected [M,K] x [N,K], got ", a.sizes(),
              " and ", b.sizes());
  return linear(a, b, at::Tensor());
}

}  // namespace albef::ops
