#include "ops/linear_int8.h"

#include "albef/core/error.h"
#include "core/rows.h"
#include "ops/bf16_rows.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <immintrin.h>
#include <unordered_map>

#ifdef ALBEF_WITH_DNNL
#include "ops/packed_weights.h"
#endif

namespace albef::ops {
namespace {

// The library is compiled for any x86-64 (SSE2); these two loops run on
// every int8 layer's input and output, so they come in AVX-512 and AVX2
// versions too, chosen at run time.

// One row: q = round(x / s), s = max|x| / 127 (1 for a zero row).
float quantize_row_scalar(const float* x, int64_t k, int8_t* q) {
  float largest = 0.0f;
  for (int64_t j = 0; j < k; ++j) largest = std::max(largest, std::fabs(x[j]));
  const float scale = largest > 0.0f ? largest / 127.0f : 1.0f, inverse = 1.0f / scale;
  for (int64_t j = 0; j < k; ++j) q[j] = static_cast<int8_t>(std::nearbyint(x[j] * inverse));
  return scale;
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) float quantize_row_avx512(const float* x, int64_t k, int8_t* q) {
  __m512 largest = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= k; j += 16) largest = _mm512_max_ps(largest, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
  float top = _mm512_reduce_max_ps(largest);
  for (; j < k; ++j) top = std::max(top, std::fabs(x[j]));
  const float scale = top > 0.0f ? top / 127.0f : 1.0f, inverse = 1.0f / scale;
  const __m512 factor = _mm512_set1_ps(inverse);
  for (j = 0; j + 16 <= k; j += 16)  // rounds to nearest even, as nearbyint
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + j),
                     _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + j), factor))));
  for (; j < k; ++j) q[j] = static_cast<int8_t>(std::nearbyint(x[j] * inverse));
  return scale;
}

__attribute__((target("avx2"))) float quantize_row_avx2(const float* x, int64_t k, int8_t* q) {
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 largest = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) largest = _mm256_max_ps(largest, _mm256_and_ps(_mm256_loadu_ps(x + j), magnitude));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, largest);
  float top = *std::max_element(lanes, lanes + 8);
  for (; j < k; ++j) top = std::max(top, std::fabs(x[j]));
  const float scale = top > 0.0f ? top / 127.0f : 1.0f, inverse = 1.0f / scale;
  const __m256 factor = _mm256_set1_ps(inverse);
  alignas(32) int32_t rounded[8];
  for (j = 0; j + 8 <= k; j += 8) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(rounded), _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j), factor)));
    for (int lane = 0; lane < 8; ++lane) q[j + lane] = static_cast<int8_t>(rounded[lane]);
  }
  for (; j < k; ++j) q[j] = static_cast<int8_t>(std::nearbyint(x[j] * inverse));
  return scale;
}
#endif

// erf(x) as Eigen and XLA compute it in float32: an odd polynomial over an
// even one in x, with x clamped to [-4, 4] (beyond, erf rounds to +-1).
// Branch-free, so the loops below vectorise; within 1e-6 of std::erf.
inline float erf_rational(float x) {
  x = std::min(4.0f, std::max(-4.0f, x));
  const float x2 = x * x;
  float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = x2 * p - 2.10102402082508e-06f;
  p = x2 * p - 5.69250639462346e-05f;
  p = x2 * p - 7.34990630326855e-04f;
  p = x2 * p - 2.95459980854025e-03f;
  p = x2 * p - 1.60960333262415e-02f;
  float q = x2 * -1.45660718464996e-05f - 2.13374055278905e-04f;
  q = x2 * q - 1.68282697438203e-03f;
  q = x2 * q - 7.37332916720468e-03f;
  q = x2 * q - 1.42647390514189e-02f;
  return x * p / q;
}

// row[j] = act(row[j] * scale * columns[j] + shift[j]), act GELU's erf form
// or none: one pass over the int32 products turned float32. Plain loops the
// compiler vectorises for each target.
template <bool kGelu>
__attribute__((always_inline)) inline void finish_row(float* row, int64_t n, float scale, const float* columns,
                                                      const float* shift) {
  for (int64_t j = 0; j < n; ++j) {
    const float y = row[j] * scale * columns[j] + shift[j];
    row[j] = kGelu ? 0.5f * y * (1.0f + erf_rational(y * 0.70710678118654752f)) : y;
  }
}

void finish_row_scalar(float* row, int64_t n, float scale, const float* columns, const float* shift, bool gelu) {
  gelu ? finish_row<true>(row, n, scale, columns, shift) : finish_row<false>(row, n, scale, columns, shift);
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) void finish_row_avx512(float* row, int64_t n, float scale, const float* columns,
                                                          const float* shift, bool gelu) {
  gelu ? finish_row<true>(row, n, scale, columns, shift) : finish_row<false>(row, n, scale, columns, shift);
}
__attribute__((target("avx2,fma"))) void finish_row_avx2(float* row, int64_t n, float scale, const float* columns,
                                                         const float* shift, bool gelu) {
  gelu ? finish_row<true>(row, n, scale, columns, shift) : finish_row<false>(row, n, scale, columns, shift);
}
#endif

struct RowKernels {
  float (*quantize)(const float*, int64_t, int8_t*);
  void (*finish)(float*, int64_t, float, const float*, const float*, bool);
};

const RowKernels& row_kernels() {
  static const RowKernels kernels = [] {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) return RowKernels{quantize_row_avx512, finish_row_avx512};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return RowKernels{quantize_row_avx2, finish_row_avx2};
#endif
    return RowKernels{quantize_row_scalar, finish_row_scalar};
  }();
  return kernels;
}

// bf16 -> float32 is exact: the bf16 bits are the float's upper half.
void widen_bf16(const c10::BFloat16* in, int64_t k, float* out) {
  for (int64_t j = 0; j < k; ++j) {
    const uint32_t bits = static_cast<uint32_t>(in[j].x) << 16;
    std::memcpy(out + j, &bits, sizeof bits);
  }
}

// Symmetric per-row quantisation of float32 or bf16 rows [M, K] (any row
// stride): int8 values [M, K] and the scales [M]. bf16 rows are widened a
// row at a time into a buffer that stays in cache, not in a pass of their own.
void quantize_rows(const at::Tensor& rows, at::Tensor& values, at::Tensor& scales) {
  const int64_t m = rows.size(0), k = rows.size(1), stride = rows.stride(0);
  values = at::empty({m, k}, rows.options().dtype(at::kChar));
  scales = at::empty({m}, rows.options().dtype(at::kFloat));
  int8_t* out = values.data_ptr<int8_t>();
  float* scale = scales.data_ptr<float>();
  const auto quantize = row_kernels().quantize;
  if (rows.scalar_type() == at::kBFloat16) {
    const c10::BFloat16* in = rows.data_ptr<c10::BFloat16>();
    at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> row(static_cast<size_t>(k));
      for (int64_t r = begin; r < end; ++r) {
        widen_bf16(in + r * stride, k, row.data());
        scale[r] = quantize(row.data(), k, out + r * k);
      }
    });
    return;
  }
  const float* in = rows.data_ptr<float>();
  at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) scale[r] = quantize(in + r * stride, k, out + r * k);
  });
}

// The layer's output from the int32 products (as float32, `products`):
// row m is products[m] * row_scales[m] * column_scales + bias, then GELU when
// asked, in one pass per row while it is in cache, after which `store(m,
// row)` takes the row where it goes (left in `products`, rounded to bf16,
// quantised for the next layer).
template <typename Store>
void finish(at::Tensor& products, const at::Tensor& row_scales, const at::Tensor& column_scales,
            const at::Tensor& bias, bool gelu, const Store& store) {
  const int64_t m = products.size(0), n = products.size(1);
  const at::Tensor shift = bias.defined() ? bias.to(at::kFloat).contiguous() : at::zeros({n}, at::kFloat);
  float* data = products.data_ptr<float>();
  const float* rows = row_scales.data_ptr<float>();
  const float* columns = column_scales.data_ptr<float>();
  const float* shifts = shift.data_ptr<float>();
  const auto kernel = row_kernels().finish;
  at::parallel_for(0, m, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      kernel(data + r * n, n, rows[r], columns, shifts, gelu);
      store(r, data + r * n);
    }
  });
}

#ifdef ALBEF_WITH_DNNL
// out[M, N] = values W_q^T, through oneDNN's int8 matmul (int32
// accumulation, float32 result; no output scales: with them oneDNN 2.6 leaves
// its brgemm VNNI kernels for a slower GEMM). W_q is int8 [N, K] or a packed
// layer's bytes (ops::pack_for_inference). False when oneDNN has no
// implementation here.
bool int8_matmul(const at::Tensor& values, const at::Tensor& weight_values, at::Tensor& out) {
  using dnnl::memory;
  const dnnl::engine& engine = cpu_engine();
  const int64_t m = values.size(0), k = values.size(1), n = out.size(1);
  const bool packed = weight_values.scalar_type() == at::kByte;
  // Without VNNI oneDNN would turn int8 inputs into u8 itself on every call; given u8 (q + 128: the
  // bytes with their top bit flipped) and 128 as their zero point, it finds the same integers sooner
  // (Zen 3: the int8 encoders 5-15% faster, bench/README.md).
  const memory::data_type input_type = int8_input_type();
  const bool as_u8 = input_type == memory::data_type::u8;
  const at::Tensor inputs = as_u8 ? at::bitwise_xor(values, -128) : values;
  int32_t zero_point = 128;
  try {
    const memory::desc src_md({m, k}, input_type, memory::dims{k, 1});
    const memory::desc dst_md({m, n}, memory::data_type::f32, memory::dims{n, 1});
    // oneDNN's fast int8 kernels (brgemm, VNNI) read the weights in a blocked layout of their choosing.
    const memory::desc as_stored({k, n}, memory::data_type::s8, memory::dims{1, k});
    const memory::desc weight_md = packed ? inference_weights_layout(n, k, memory::data_type::s8, engine)
                                          : chosen_weights_layout(src_md, dst_md, as_stored, engine);
    dnnl::primitive_attr attr;
    if (as_u8) attr.set_zero_points(DNNL_ARG_SRC, /*mask=*/0, {DNNL_RUNTIME_S32_VAL});
    const dnnl::matmul matmul(
        dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, weight_md, dst_md), attr, engine));
    const memory weights = packed || weight_md == as_stored ? memory(weight_md, engine, weight_values.data_ptr())
                                                            : packed_weights(weight_values, weight_md, engine);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(src_md, engine, inputs.data_ptr())},
        {DNNL_ARG_WEIGHTS, weights},
        {DNNL_ARG_DST, memory(dst_md, engine, out.data_ptr())}};
    if (as_u8)
      args.emplace(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC,
                   memory({{1}, memory::data_type::s32, memory::format_tag::x}, engine, &zero_point));
    dnnl::stream stream(engine);
    matmul.execute(stream, args);
    stream.wait();
    return true;
  } catch (const dnnl::error& error) {
    ALBEF_CHECK(error.status == dnnl_unimplemented, "oneDNN int8 matmul failed (", error.what(), ") for M=", m,
                " N=", n, " K=", k);
    return false;
  }
}
#endif

}  // namespace

bool int8_gemm_sums_pairs_in_int16() {
#if defined(ALBEF_WITH_DNNL) && defined(__x86_64__)
  static const bool pairs = !__builtin_cpu_supports("avx512vnni") && !__builtin_cpu_supports("avxvnni");
  return pairs;
#else
  return false;  // the products are exact (int32 or float32 sums)
#endif
}

int int8_weight_levels() {
  // AVX2's vpmaddubsw sums pairs of u8 x s8 products in saturating int16, the
  // inputs being q + 128: 255 * 127 * 2 overflows (6% error measured on Zen
  // 3), 255 * 63 * 2 does not.
  return int8_gemm_sums_pairs_in_int16() ? 63 : 127;
}

std::pair<at::Tensor, at::Tensor> quantize_weight_int8(const at::Tensor& weight) {
  ALBEF_CHECK(weight.dim() == 2, "a linear weight is [N, K], got ", weight.sizes());
  at::Tensor values = at::empty(weight.sizes(), weight.options().dtype(at::kChar));
  at::Tensor scales = at::empty({weight.size(0)}, weight.options().dtype(at::kFloat));
  quantize_weight_int8_into(weight, values, scales);
  return {values, scales};
}

void quantize_weight_int8_into(const at::Tensor& weight, at::Tensor values, at::Tensor scales) {
  ALBEF_CHECK(weight.dim() == 2 && values.sizes() == weight.sizes() && values.scalar_type() == at::kChar &&
                  scales.dim() == 1 && scales.size(0) == weight.size(0) && scales.scalar_type() == at::kFloat,
              "int8 quantisation of weight rows ", weight.sizes(), " into int8 values [N, K] and float32 scales [N], got ",
              values.sizes(), " ", values.scalar_type(), " and ", scales.sizes(), " ", scales.scalar_type());
  const int levels = int8_weight_levels();
  const int64_t rows = weight.size(0);
  constexpr int64_t kRowsPerChunk = 64;
  for (int64_t begin = 0; begin < rows; begin += kRowsPerChunk) {
    const int64_t end = std::min(rows, begin + kRowsPerChunk);
    const at::Tensor w = weight.slice(0, begin, end).to(at::kFloat);
    at::Tensor s = w.abs().amax(1) / static_cast<float>(levels);
    s = at::where(s > 0, s, at::ones_like(s));
    scales.slice(0, begin, end).copy_(s);
    values.slice(0, begin, end).copy_(at::round(w / s.unsqueeze(1)).clamp_(-levels, levels));
  }
}

namespace {
thread_local bool g_int8_construction = false;
}  // namespace

Int8Construction::Int8Construction() {
  ALBEF_CHECK(!g_int8_construction, "Int8Construction scopes do not nest");
  g_int8_construction = true;
}

Int8Construction::~Int8Construction() { g_int8_construction = false; }

torch::nn::Linear encoder_linear(int64_t in_features, int64_t out_features) {
  torch::nn::Linear layer(in_features, out_features);
  if (!g_int8_construction) return layer;
  at::NoGradGuard no_grad;
  layer->weight.set_requires_grad(false);
  // Pages of an unwritten buffer are not resident: the loader's writes are the first.
  layer->weight.set_data(at::empty({out_features, in_features}, at::kChar));
  layer->register_buffer("weight_scale", at::ones({out_features}, at::kFloat));
  return layer;
}

void quantize_linear_int8(torch::nn::LinearImpl& layer) {
  auto [values, scales] = quantize_weight_int8(layer.weight);
  layer.weight.set_requires_grad(false);  // an integer tensor takes no gradient
  layer.weight.set_data(values);          // the same parameter, now int8: the float32 storage is released
  layer.register_buffer("weight_scale", scales);
}

at::Tensor int8_weight_scales(const torch::nn::LinearImpl& layer) {
  const at::ScalarType type = layer.weight.scalar_type();
  if (type != at::kChar && type != at::kByte) return {};  // kByte: packed (ops::pack_for_inference), int8 or bf16
  // named_buffers() returns a dictionary by value: keep it while reading from it.
  const auto buffers = layer.named_buffers(/*recurse=*/false);
  const at::Tensor* scales = buffers.find("weight_scale");
  ALBEF_CHECK(scales != nullptr || type == at::kByte, "an int8 linear layer without its weight_scale buffer");
  return scales != nullptr ? *scales : at::Tensor();
}

namespace {

// An int8 layer's weights (int8 [N, K] or their packed bytes, scales [N])
// for inputs of `k` features.
void check_int8_layer(const at::Tensor& values, const at::Tensor& scales, int64_t k) {
  const bool packed = values.scalar_type() == at::kByte && values.dim() == 1;
  ALBEF_CHECK((packed || (values.scalar_type() == at::kChar && values.dim() == 2 && values.is_contiguous())) &&
                  scales.scalar_type() == at::kFloat && scales.dim() == 1 && (packed || scales.numel() == values.size(0)),
              "linear_int8 takes int8 values [N, K] (or their packed bytes) and float32 scales [N] ",
              "(quantize_weight_int8), got ", values.sizes(), " ", values.scalar_type(), " and ", scales.sizes(), " ",
              scales.scalar_type());
  ALBEF_CHECK(packed || values.size(1) == k, "an int8 layer of ", values.size(1), " input features given rows of ", k);
#ifdef ALBEF_WITH_DNNL
  ALBEF_CHECK(!packed || values.numel() == static_cast<int64_t>(
                             inference_weights_layout(scales.numel(), k, dnnl::memory::data_type::s8, cpu_engine()).get_size()),
              "packed int8 weights of ", values.numel(), " bytes are not those of a [", scales.numel(), ", ", k, "] layer");
#else
  ALBEF_CHECK(!packed, "packed int8 weights in a build without oneDNN");
#endif
}

// `input` [..., K] (float32 or bf16, any other type converted) quantised per row.
Int8Rows quantize_input(const at::Tensor& input) {
  ALBEF_CHECK(input.device().is_cpu() && input.dim() >= 1, "int8 layers take inputs [..., K] on the CPU, got ",
              input.sizes(), " on ", input.device());
  if (at::GradMode::is_enabled() && input.requires_grad())
    fail("an int8 model cannot be differentiated (Grad-CAM, training): load it with --precision fp32 or bf16");
  at::Tensor rows = input.reshape({-1, input.size(-1)});
  if (rows.scalar_type() != at::kFloat && rows.scalar_type() != at::kBFloat16) rows = rows.to(at::kFloat);
  if (rows.stride(1) != 1) rows = rows.contiguous();
  Int8Rows quantized;
  quantize_rows(rows, quantized.values, quantized.scales);
  return quantized;
}

// The integer products of quantised rows [M, K] and an int8 layer's
// weights, as float32 [M, N]: oneDNN's int8 GEMM, or the same integers off it.
at::Tensor int8_products(const Int8Rows& rows, const at::Tensor& values, const at::Tensor& scales) {
  const int64_t m = rows.values.size(0), k = rows.values.size(1), n = scales.numel();
  check_int8_layer(values, scales, k);
  at::Tensor out = at::empty({m, n}, rows.scales.options());
#ifdef ALBEF_WITH_DNNL
  if (m > 0 && int8_matmul(rows.values, values, out)) return out;
  const bool packed = values.scalar_type() == at::kByte;
  const at::Tensor plain =
      packed ? unpack_from(values, inference_weights_layout(n, k, dnnl::memory::data_type::s8, cpu_engine()), at::kChar,
                           cpu_engine())
             : values;
#else
  const at::Tensor& plain = values;
#endif
  return at::mm(rows.values.to(at::kFloat), plain.to(at::kFloat).t());
}

// The rows' products in blocks of rows, each finished (finish) and stored
// before the next is multiplied: a layer writing bf16 or int8 holds float32
// products for about 2 MB of rows, not for its whole output (the image
// keys of 34 ITM pairs: 27 MB beside their 13 MB in bf16), and the rows are
// still in cache when stored.
template <typename Store>
void finish_in_blocks(const Int8Rows& rows, const at::Tensor& values, const at::Tensor& scales, const at::Tensor& bias,
                      bool gelu, const Store& store) {
  constexpr int64_t kBlockBytes = 2 << 20;
  const int64_t m = rows.values.size(0), n = scales.numel();
  const int64_t block = std::max<int64_t>(64, kBlockBytes / (4 * std::max<int64_t>(1, n)));
  for (int64_t begin = 0; begin < m; begin += block) {
    const int64_t end = std::min(m, begin + block);
    const Int8Rows part{rows.values.slice(0, begin, end), rows.scales.slice(0, begin, end)};
    at::Tensor products = int8_products(part, values, scales);
    finish(products, part.scales, scales, bias, gelu, [&](int64_t r, const float* row) { store(begin + r, row); });
  }
}

// The layer's output [M, N] in float32 (the products, finished in place) or bf16.
at::Tensor finished(const Int8Rows& rows, const at::Tensor& values, const at::Tensor& scales, const at::Tensor& bias,
                    bool gelu, at::ScalarType out_type) {
  ALBEF_CHECK(out_type == at::kFloat || out_type == at::kBFloat16, "linear_int8 writes float32 or bf16, not ",
              out_type);
  if (out_type == at::kFloat) {
    at::Tensor products = int8_products(rows, values, scales);
    finish(products, rows.scales, scales, bias, gelu, [](int64_t, const float*) {});
    return products;
  }
  const int64_t n = scales.numel();
  at::Tensor rounded = at::empty({rows.values.size(0), n}, rows.scales.options().dtype(out_type));
  c10::BFloat16* out = rounded.data_ptr<c10::BFloat16>();
  finish_in_blocks(rows, values, scales, bias, gelu,
                   [&](int64_t r, const float* row) { round_to_bf16(row, n, out + r * n); });
  return rounded;
}

}  // namespace

at::Tensor linear_int8(const at::Tensor& input, const at::Tensor& values, const at::Tensor& scales,
                       const at::Tensor& bias, bool gelu, at::ScalarType out_type) {
  return rows_in_shape(finished(quantize_input(input), values, scales, bias, gelu, out_type), input.sizes());
}

at::Tensor linear_int8(const Int8Rows& input, const at::Tensor& values, const at::Tensor& scales,
                       const at::Tensor& bias, bool gelu, at::ScalarType out_type) {
  ALBEF_CHECK(input.values.dim() == 2 && input.values.scalar_type() == at::kChar && input.scales.dim() == 1 &&
                  input.scales.size(0) == input.values.size(0),
              "quantised rows are int8 values [M, K] with scales [M], got ", input.values.sizes(), " ",
              input.values.scalar_type(), " and ", input.scales.sizes());
  return finished(input, values, scales, bias, gelu, out_type);
}

Int8Rows linear_int8_rows(const at::Tensor& input, const at::Tensor& values, const at::Tensor& scales,
                          const at::Tensor& bias, bool gelu) {
  const Int8Rows rows = quantize_input(input);
  const int64_t m = rows.values.size(0), n = scales.numel();
  Int8Rows out{at::empty({m, n}, rows.values.options()), at::empty({m}, rows.scales.options())};
  int8_t* out_values = out.values.data_ptr<int8_t>();
  float* out_scales = out.scales.data_ptr<float>();
  const auto quantize = row_kernels().quantize;
  finish_in_blocks(rows, values, scales, bias, gelu,
                   [&](int64_t r, const float* row) { out_scales[r] = quantize(row, n, out_values + r * n); });
  return out;
}

}  // namespace albef::ops
