#include "ops/attention.h"

#include "albef/core/error.h"
#include "albef/core/runtime.h"
#include "ops/attention_head_bf16.h"
#include "ops/bf16_rows.h"
#include "core/dnnl_bf16_gemm.h"
#include "ops/dropout.h"
#include "ops/linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include "core/autocast.h"
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <vector>

#ifdef ALBEF_WITH_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

namespace albef::ops {
namespace {

/// [B, L, C] float32 on the CPU with unit stride along C (rows may be apart).
bool float_rows(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 3 && t.stride(2) == 1;
}

/// The same in float32 or bf16 (the bf16 kernel's operands).
bool rows_of_any_type(const at::Tensor& t) {
  return t.device().is_cpu() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16) && t.dim() == 3 &&
         t.stride(2) == 1;
}

bool needs_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }

bool grad_needed(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value) {
  return at::GradMode::is_enabled() && (needs_grad(query) || needs_grad(key) || needs_grad(value));
}

#ifdef ALBEF_WITH_DNNL
/// Row-major C[M,N] = alpha op(A) op(B), on the calling thread when inside a parallel region.
void sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float* c, int64_t ldc) {
  const dnnl_status_t status = dnnl_sgemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, 0.0f, c, ldc);
  ALBEF_CHECK(status == dnnl_success, "oneDNN sgemm failed with status ", static_cast<int>(status), " for M=", m,
              " N=", n, " K=", k);
}

/// One head's columns of a [B, L, C] tensor: row i of head h of sample b
/// starts at head(b, h) + i * row_stride.
template <typename T>
struct HeadViewOf {
  HeadViewOf(const at::Tensor& t, int64_t head_dim)
      : data(t.data_ptr<T>()), batch_stride(t.size(0) == 1 ? 0 : t.stride(0)), row_stride(t.stride(1)),
        head_dim(head_dim) {}
  T* head(int64_t b, int64_t h) const { return data + b * batch_stride + h * head_dim; }
  T* data;
  int64_t batch_stride, row_stride, head_dim;
};
using HeadView = HeadViewOf<float>;

/// Sizes of one call. Keys and values of batch 1 serve every query sample.
struct Shape {
  int64_t batch, heads, q_len, k_len, width, head_dim;
  float scale;
};

Shape shape_of(const at::Tensor& query, const at::Tensor& key, int64_t num_heads) {
  const int64_t width = query.size(2);
  ALBEF_CHECK(num_heads > 0 && width % num_heads == 0, "width ", width, " is not a multiple of ", num_heads, " heads");
  const int64_t head_dim = width / num_heads;
  return {query.size(0), num_heads, query.size(1), key.size(1), width, head_dim,
          1.0f / std::sqrt(static_cast<float>(head_dim))};
}

/// The dropout mask as BERT's attention_probs_dropout draws it: each
/// probability kept with 1 - p. One draw of [B, heads, Lq, Lk] booleans
/// (ops::draw_keep_mask), so a test can redraw it.
at::Tensor draw_keep_mask(const Shape& s, double dropout) {
  return ops::draw_keep_mask({s.batch, s.heads, s.q_len, s.k_len}, 1.0 - dropout);
}

/// probs * keep / (1 - p) into `out` (q_len * k_len values); in place when out == probs.
void apply_dropout(const float* probs, const bool* keep, float keep_scale, int64_t count, float* out) {
  for (int64_t j = 0; j < count; ++j) out[j] = keep[j] ? probs[j] * keep_scale : 0.0f;
}

/// The probabilities that multiply v: `probs` itself without dropout, else
/// their dropped-out copy in `buffer`.
const float* mixing_weights(const float* probs, const bool* keep, float keep_scale, int64_t count,
                            std::vector<float>& buffer) {
  if (keep == nullptr) return probs;
  apply_dropout(probs, keep, keep_scale, count, buffer.data());
  return buffer.data();
}

/// out = softmax(scale q k^T + mask) (dropped out) v for every (sample, head),
/// one pair per thread at a time. With `probs` defined the probabilities are
/// kept there ([B, heads, Lq, Lk]) for the backward pass.
void forward_heads(const Shape& s, const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                   const at::Tensor& mask, const at::Tensor& keep, float keep_scale, at::Tensor& probs,
                   at::Tensor& out) {
  const HeadView q(query, s.head_dim), k(key, s.head_dim), v(value, s.head_dim), o(out, s.head_dim);
  const float* m = mask.defined() ? mask.data_ptr<float>() : nullptr;
  const bool* keep_data = keep.defined() ? keep.data_ptr<bool>() : nullptr;
  float* probs_data = probs.defined() ? probs.data_ptr<float>() : nullptr;
  const int64_t area = s.q_len * s.k_len;
  at::parallel_for(0, s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
    // One head's scores, probabilities and dropped probabilities, reused for every head this thread takes.
    std::vector<float> scores_buffer(static_cast<size_t>(area)), probs_buffer(probs_data ? 0 : area),
        dropped_buffer(keep_data ? area : 0);
    const at::Tensor scores = at::from_blob(scores_buffer.data(), {s.q_len, s.k_len});
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / s.heads, h = index % s.heads;
      sgemm('N', 'T', s.q_len, s.k_len, s.head_dim, s.scale, q.head(b, h), q.row_stride, k.head(b, h), k.row_stride,
            scores_buffer.data(), s.k_len);
      if (m != nullptr) {
        const float* row_mask = m + b * s.k_len;
        for (int64_t i = 0; i < s.q_len; ++i) {
          float* row = scores_buffer.data() + i * s.k_len;
          for (int64_t j = 0; j < s.k_len; ++j) row[j] += row_mask[j];
        }
      }
      float* head_probs = probs_data ? probs_data + index * area : probs_buffer.data();
      at::Tensor probs_view = at::from_blob(head_probs, {s.q_len, s.k_len});
      at::_softmax_out(probs_view, scores, 1, false);
      const float* mixed =
          mixing_weights(head_probs, keep_data ? keep_data + index * area : nullptr, keep_scale, area, dropped_buffer);
      sgemm('N', 'N', s.q_len, s.head_dim, s.k_len, 1.0f, mixed, s.k_len, v.head(b, h), v.row_stride, o.head(b, h),
            o.row_stride);
    }
  });
}

/// The gradients of `forward_heads`, per (sample, head): with D the dropped
/// probabilities and G = dO v^T, dv = D^T dO; dS = P * (G' - rowsum(G' * P))
/// where G' is G dropped out with the same mask; dq = scale dS k and
/// dk = scale dS^T q. Every head writes only its own columns.
void backward_heads(const Shape& s, const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
                    const at::Tensor& value, const at::Tensor& probs, const at::Tensor& keep, float keep_scale,
                    at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_value) {
  const HeadView q(query, s.head_dim), k(key, s.head_dim), v(value, s.head_dim), d_out(grad_out, s.head_dim);
  const HeadView dq(grad_query, s.head_dim), dk(grad_key, s.head_dim), dv(grad_value, s.head_dim);
  const float* probs_data = probs.data_ptr<float>();
  const bool* keep_data = keep.defined() ? keep.data_ptr<bool>() : nullptr;
  const int64_t area = s.q_len * s.k_len;
  at::parallel_for(0, s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> grad_buffer(static_cast<size_t>(area)), dropped_buffer(keep_data ? area : 0);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / s.heads, h = index % s.heads;
      const float* p = probs_data + index * area;
      const bool* kept = keep_data ? keep_data + index * area : nullptr;
      const float* mixed = mixing_weights(p, kept, keep_scale, area, dropped_buffer);
      sgemm('T', 'N', s.k_len, s.head_dim, s.q_len, 1.0f, mixed, s.k_len, d_out.head(b, h), d_out.row_stride,
            dv.head(b, h), dv.row_stride);
      float* g = grad_buffer.data();
      sgemm('N', 'T', s.q_len, s.k_len, s.head_dim, 1.0f, d_out.head(b, h), d_out.row_stride, v.head(b, h),
            v.row_stride, g, s.k_len);
      if (kept != nullptr) apply_dropout(g, kept, keep_scale, area, g);
      for (int64_t i = 0; i < s.q_len; ++i) {  // softmax backward, row by row
        float* g_row = g + i * s.k_len;
        const float* p_row = p + i * s.k_len;
        float dot = 0.0f;
        for (int64_t j = 0; j < s.k_len; ++j) dot += g_row[j] * p_row[j];
        for (int64_t j = 0; j < s.k_len; ++j) g_row[j] = p_row[j] * (g_row[j] - dot);
      }
      sgemm('N', 'N', s.q_len, s.head_dim, s.k_len, s.scale, g, s.k_len, k.head(b, h), k.row_stride, dq.head(b, h),
            dq.row_stride);
      sgemm('T', 'N', s.k_len, s.head_dim, s.q_len, s.scale, g, s.k_len, q.head(b, h), q.row_stride, dk.head(b, h),
            dk.row_stride);
    }
  });
}

#ifdef ALBEF_WITH_DNNL_BF16_GEMM
/// Row-major C[M,N] = alpha op(A) op(B) for bf16 A and B, float32 C, on the calling thread.
void gemm_bf16(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const c10::BFloat16* a,
               int64_t lda, const c10::BFloat16* b, int64_t ldb, float* c, int64_t ldc) {
  const dnnl_status_t status = dnnl_gemm_bf16bf16f32(transa, transb, m, n, k, alpha, a, lda, b, ldb, 0.0f, c, ldc);
  ALBEF_CHECK(status == dnnl_success, "oneDNN bf16 gemm failed with status ", static_cast<int>(status), " for M=", m,
              " N=", n, " K=", k);
}

/// `forward_heads` for bf16 inference: q k^T and the value product with
/// float32 sums of bf16 products (the CPU's dot products where it has
/// AVX-512 BF16, oneDNN's bf16 GEMM per head otherwise); scores, mask and
/// softmax in float32 (autocast's generic path rounds the scores to bf16
/// before the softmax); the probabilities and the output rounded to bf16, as
/// the products read them.
void forward_heads_bf16(const Shape& s, const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                        const at::Tensor& mask, at::Tensor& out) {
  using c10::BFloat16;
  const HeadViewOf<BFloat16> q(query, s.head_dim), k(key, s.head_dim), v(value, s.head_dim), o(out, s.head_dim);
  const float* m = mask.defined() ? mask.data_ptr<float>() : nullptr;
  if (head_attention_bf16_applies(s.head_dim)) {
    // Head-major, so that keys and values shared by every sample (re-ranking) are packed once per head a thread takes.
    at::parallel_for(0, s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
      HeadAttentionBf16 head(s.q_len, s.k_len, s.head_dim);
      const BFloat16* packed = nullptr;
      for (int64_t index = begin; index < end; ++index) {
        const int64_t h = index / s.batch, b = index % s.batch;
        if (k.head(b, h) != packed) {
          packed = k.head(b, h);
          head.pack(packed, k.row_stride, v.head(b, h), v.row_stride);
        }
        head.run(q.head(b, h), q.row_stride, s.scale, m != nullptr ? m + b * s.k_len : nullptr, o.head(b, h),
                 o.row_stride);
      }
    });
    return;
  }
  const int64_t area = s.q_len * s.k_len;
  at::parallel_for(0, s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(area)), mixed(s.q_len * s.head_dim);
    std::vector<BFloat16> probs(static_cast<size_t>(area));
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / s.heads, h = index % s.heads;
      gemm_bf16('N', 'T', s.q_len, s.k_len, s.head_dim, s.scale, q.head(b, h), q.row_stride, k.head(b, h),
                k.row_stride, scores.data(), s.k_len);
      softmax_to_bf16(scores.data(), m != nullptr ? m + b * s.k_len : nullptr, s.q_len, s.k_len, probs.data());
      gemm_bf16('N', 'N', s.q_len, s.head_dim, s.k_len, 1.0f, probs.data(), s.k_len, v.head(b, h), v.row_stride,
                mixed.data(), s.head_dim);
      for (int64_t i = 0; i < s.q_len; ++i)
        round_to_bf16(mixed.data() + i * s.head_dim, s.head_dim, o.head(b, h) + i * o.row_stride);
    }
  });
}
#endif

/// True under bf16 autocast where oneDNN's bf16 GEMM runs (AVX-512).
bool bf16_autocast() {
  return autocast::enabled(c10::DeviceType::CPU) && autocast::dtype(c10::DeviceType::CPU) == at::kBFloat16 &&
         dnnl_bf16_gemm_available();
}

at::Tensor empty_rows(const at::Tensor& like, int64_t batch, int64_t len, int64_t width) {
  return at::empty({batch, len, width}, like.options().memory_format(at::MemoryFormat::Contiguous));
}

/// Autograd for `forward_heads`: keeps the probabilities (and the dropout
/// mask) of every head, [B, heads, Lq, Lk], instead of the generic path's
/// scores, probabilities, dropout noise and dropped probabilities. A missing
/// mask arrives as an empty tensor (custom functions take no undefined inputs).
struct HeadAttention : public torch::autograd::Function<HeadAttention> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& query, const at::Tensor& key,
                            const at::Tensor& value, const at::Tensor& mask, int64_t num_heads, double dropout) {
    const Shape s = shape_of(query, key, num_heads);
    const at::Tensor keep = dropout > 0.0 ? draw_keep_mask(s, dropout) : at::Tensor();
    const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout));
    at::Tensor probs = at::empty({s.batch, s.heads, s.q_len, s.k_len}, query.options());
    at::Tensor out = empty_rows(query, s.batch, s.q_len, s.width);
    forward_heads(s, query, key, value, mask.numel() > 0 ? mask : at::Tensor(), keep, keep_scale, probs, out);
    ctx->save_for_backward({query, key, value, probs, keep.defined() ? keep : at::empty({0}, at::kBool)});
    ctx->saved_data["num_heads"] = num_heads;
    ctx->saved_data["keep_scale"] = static_cast<double>(keep_scale);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &query = saved[0], &key = saved[1], &value = saved[2], &probs = saved[3];
    const at::Tensor keep = saved[4].numel() > 0 ? saved[4] : at::Tensor();
    const Shape s = shape_of(query, key, ctx->saved_data["num_heads"].toInt());
    const at::Tensor grad_out = grad_outputs[0].contiguous();
    at::Tensor grad_query = empty_rows(query, s.batch, s.q_len, s.width);
    at::Tensor grad_key = empty_rows(key, s.batch, s.k_len, s.width);
    at::Tensor grad_value = empty_rows(value, s.batch, s.k_len, s.width);
    backward_heads(s, grad_out, query, key, value, probs, keep,
                   static_cast<float>(ctx->saved_data["keep_scale"].toDouble()), grad_query, grad_key, grad_value);
    return {grad_query, grad_key, grad_value, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};
#endif

}  // namespace

bool attention_applies(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                       const at::Tensor& additive_mask, double dropout) {
#ifdef ALBEF_WITH_DNNL
  if (aten_gemm_only()) return false;
  if (autocast::enabled(c10::DeviceType::CPU)) {
#ifdef ALBEF_WITH_DNNL_BF16_GEMM
    // bf16 inference only: training under autocast keeps the generic path.
    if (!bf16_autocast() || grad_needed(query, key, value) || dropout > 0.0) return false;
    if (!rows_of_any_type(query) || !rows_of_any_type(key) || !rows_of_any_type(value)) return false;
#else
    return false;
#endif
  } else if (!float_rows(query) || !float_rows(key) || !float_rows(value)) {
    return false;
  }
  if (at::GradMode::is_enabled() && needs_grad(additive_mask)) return false;
  const int64_t batch = query.size(0), k_len = key.size(1), width = query.size(2);
  // Keys and values may be one image's, shared by every query (re-ranking, without gradients).
  const bool shared_keys = key.size(0) == 1 && batch != 1;
  if ((key.size(0) != batch && !shared_keys) || value.size(0) != key.size(0) || value.size(1) != k_len ||
      key.size(2) != width || value.size(2) != width)
    return false;
  if (shared_keys && grad_needed(query, key, value)) return false;
  if (!additive_mask.defined()) return true;
  const bool mask_type = additive_mask.scalar_type() == at::kFloat ||
                         (autocast::enabled(c10::DeviceType::CPU) && additive_mask.scalar_type() == at::kBFloat16);
  return additive_mask.device().is_cpu() && mask_type && additive_mask.dim() == 4 &&
         additive_mask.size(0) == batch && additive_mask.size(1) == 1 && additive_mask.size(2) == 1 &&
         additive_mask.size(3) == k_len;
#else
  return false;
#endif
}

at::Tensor attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, int64_t num_heads,
                     const at::Tensor& additive_mask, double dropout) {
  ALBEF_CHECK(attention_applies(query, key, value, additive_mask, dropout), "unsupported inputs: query ", query.sizes(),
              " key ", key.sizes(), " value ", value.sizes(), " mask ",
              additive_mask.defined() ? additive_mask.sizes() : at::IntArrayRef{});
  ALBEF_CHECK(dropout >= 0.0 && dropout < 1.0, "attention dropout must be in [0, 1), got ", dropout);
#ifdef ALBEF_WITH_DNNL
  const at::Tensor mask = additive_mask.defined()
                              ? additive_mask.reshape({query.size(0), key.size(1)}).to(at::kFloat).contiguous()
                              : at::Tensor();
#ifdef ALBEF_WITH_DNNL_BF16_GEMM
  if (autocast::enabled(c10::DeviceType::CPU)) {  // bf16 inference (attention_applies)
    auto as_bf16 = [](const at::Tensor& t) {
      return t.scalar_type() == at::kBFloat16 ? t : t.to(at::kBFloat16).contiguous();
    };
    const Shape s = shape_of(query, key, num_heads);
    at::Tensor out = at::empty({s.batch, s.q_len, s.width}, query.options().dtype(at::kBFloat16));
    forward_heads_bf16(s, as_bf16(query), as_bf16(key), as_bf16(value), mask, out);
    return out;
  }
#endif
  if (grad_needed(query, key, value))
    return HeadAttention::apply(query, key, value, mask.defined() ? mask : at::empty({0}, query.options()), num_heads,
                                dropout);
  const Shape s = shape_of(query, key, num_heads);
  const at::Tensor keep = dropout > 0.0 ? draw_keep_mask(s, dropout) : at::Tensor();
  at::Tensor probs;  // per-thread buffers: nothing is kept
  at::Tensor out = empty_rows(query, s.batch, s.q_len, s.width);
  forward_heads(s, query, key, value, mask, keep, static_cast<float>(1.0 / (1.0 - dropout)), probs, out);
  return out;
#else
  ALBEF_CHECK(false, "built without oneDNN");
  return {};
#endif
}

}  // namespace albef::ops
