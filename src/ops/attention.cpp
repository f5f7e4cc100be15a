#include "albef/ops/attention.h"

#include "albef/core/error.h"
#include "albef/ops/linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

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

bool needs_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }

#ifdef ALBEF_WITH_DNNL
/// Row-major C[M,N] = alpha op(A) op(B), on the calling thread when inside a parallel region.
void sgemm(char transb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
           int64_t ldb, float* c, int64_t ldc) {
  const dnnl_status_t status = dnnl_sgemm('N', transb, m, n, k, alpha, a, lda, b, ldb, 0.0f, c, ldc);
  ALBEF_CHECK(status == dnnl_success, "oneDNN sgemm failed with status ", static_cast<int>(status), " for M=", m,
              " N=", n, " K=", k);
}
#endif

}  // namespace

bool attention_applies(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                       const at::Tensor& additive_mask) {
#ifdef ALBEF_WITH_DNNL
  if (aten_gemm_only() || at::autocast::is_cpu_enabled()) return false;
  if (!float_rows(query) || !float_rows(key) || !float_rows(value)) return false;
  if (at::GradMode::is_enabled() &&
      (needs_grad(query) || needs_grad(key) || needs_grad(value) || needs_grad(additive_mask)))
    return false;
  const int64_t batch = query.size(0), k_len = key.size(1), width = query.size(2);
  // Keys and values may be one image's, shared by every query (re-ranking).
  if ((key.size(0) != batch && key.size(0) != 1) || value.size(0) != key.size(0) || value.size(1) != k_len ||
      key.size(2) != width || value.size(2) != width)
    return false;
  if (!additive_mask.defined()) return true;
  return additive_mask.device().is_cpu() && additive_mask.scalar_type() == at::kFloat && additive_mask.dim() == 4 &&
         additive_mask.size(0) == batch && additive_mask.size(1) == 1 && additive_mask.size(2) == 1 &&
         additive_mask.size(3) == k_len;
#else
  return false;
#endif
}

at::Tensor attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, int64_t num_heads,
                     const at::Tensor& additive_mask) {
  ALBEF_CHECK(attention_applies(query, key, value, additive_mask), "unsupported inputs: query ", query.sizes(),
              " key ", key.sizes(), " value ", value.sizes(), " mask ",
              additive_mask.defined() ? additive_mask.sizes() : at::IntArrayRef{});
  const int64_t batch = query.size(0), q_len = query.size(1), k_len = key.size(1), width = query.size(2);
  ALBEF_CHECK(num_heads > 0 && width % num_heads == 0, "width ", width, " is not a multiple of ", num_heads,
              " heads");
  const int64_t head_dim = width / num_heads;
  at::Tensor out = at::empty({batch, q_len, width}, query.options().memory_format(at::MemoryFormat::Contiguous));
#ifdef ALBEF_WITH_DNNL
  const at::Tensor mask = additive_mask.defined() ? additive_mask.reshape({batch, k_len}).contiguous() : at::Tensor();
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const float* q = query.data_ptr<float>();
  const float* k = key.data_ptr<float>();
  const float* v = value.data_ptr<float>();
  const float* m = mask.defined() ? mask.data_ptr<float>() : nullptr;
  float* o = out.data_ptr<float>();
  const bool shared_keys = key.size(0) == 1;
  at::parallel_for(0, batch * num_heads, 1, [&](int64_t begin, int64_t end) {
    // One head's scores and probabilities, reused for every head this thread takes.
    std::vector<float> scores_buffer(static_cast<size_t>(q_len * k_len)), probs_buffer(scores_buffer.size());
    const at::Tensor scores = at::from_blob(scores_buffer.data(), {q_len, k_len});
    at::Tensor probs = at::from_blob(probs_buffer.data(), {q_len, k_len});
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / num_heads, h = index % num_heads, kb = shared_keys ? 0 : b;
      sgemm('T', q_len, k_len, head_dim, scale, q + b * query.stride(0) + h * head_dim, query.stride(1),
            k + kb * key.stride(0) + h * head_dim, key.stride(1), scores_buffer.data(), k_len);
      if (m != nullptr) {
        const float* row_mask = m + b * k_len;
        for (int64_t i = 0; i < q_len; ++i) {
          float* row = scores_buffer.data() + i * k_len;
          for (int64_t j = 0; j < k_len; ++j) row[j] += row_mask[j];
        }
      }
      at::_softmax_out(probs, scores, 1, false);
      sgemm('N', q_len, head_dim, k_len, 1.0f, probs_buffer.data(), k_len, v + kb * value.stride(0) + h * head_dim,
            value.stride(1), o + b * q_len * width + h * head_dim, width);
    }
  });
#endif
  return out;
}

}  // namespace albef::ops
