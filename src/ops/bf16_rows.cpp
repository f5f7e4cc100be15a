#include "ops/bf16_rows.h"

#include "ops/avx512_bf16.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace albef::ops {
namespace {

void round_scalar(const float* x, int64_t n, c10::BFloat16* y) {
  for (int64_t j = 0; j < n; ++j) y[j] = c10::BFloat16(x[j]);
}

void softmax_aten(float* scores, const float* mask, int64_t rows, int64_t cols, c10::BFloat16* probs) {
  if (mask != nullptr)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) scores[i * cols + j] += mask[j];
  const at::Tensor in = at::from_blob(scores, {rows, cols});
  at::Tensor out = at::empty({rows, cols}, at::kFloat);
  at::_softmax_out(out, in, 1, false);
  round_scalar(out.data_ptr<float>(), rows * cols, probs);
}

#if defined(__x86_64__)
ALBEF_AVX512_BF16 void round_avx512(const float* x, int64_t n, c10::BFloat16* y) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + j),
                        reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(x + j))));
  for (; j < n; ++j) y[j] = c10::BFloat16(x[j]);
}

ALBEF_AVX512_BF16 void softmax_avx512(float* scores, const float* mask, int64_t rows, int64_t cols,
                                      c10::BFloat16* probs) {
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < rows; ++i) {
    float* row = scores + i * cols;
    __m512 largest = lowest;
    over_row(cols, [&](int64_t j, __mmask16 live) ALBEF_AVX512_BF16 {  // the masked scores, and their maximum
      __m512 x = _mm512_maskz_loadu_ps(live, row + j);
      if (mask != nullptr) {
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(live, mask + j));
        _mm512_mask_storeu_ps(row + j, live, x);
      }
      largest = _mm512_mask_max_ps(largest, live, largest, x);
    });
    const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(largest));
    __m512 sum = _mm512_setzero_ps();
    over_row(cols, [&](int64_t j, __mmask16 live) ALBEF_AVX512_BF16 {
      const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, row + j), top));
      _mm512_mask_storeu_ps(row + j, live, e);
      sum = _mm512_mask_add_ps(sum, live, sum, e);
    });
    const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    c10::BFloat16* out = probs + i * cols;
    over_row(cols, [&](int64_t j, __mmask16 live) ALBEF_AVX512_BF16 {
      const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, row + j), inverse));
      _mm256_mask_storeu_epi16(out + j, live, reinterpret_cast<__m256i>(rounded));
    });
  }
}

ALBEF_AVX512_BF16 void add_layer_norm_avx512(const float* residual, const float* update, float* sum,
                                             const float* gamma, const float* beta, float eps, int64_t rows,
                                             int64_t cols, c10::BFloat16* out, float* normed_float) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* in = residual + i * cols;
    float* added = update != nullptr ? sum + i * cols : nullptr;
    __m512 total = _mm512_setzero_ps();
    over_row(cols, [&](int64_t j, __mmask16 live) ALBEF_AVX512_BF16 {
      __m512 x = _mm512_maskz_loadu_ps(live, in + j);
      if (added != nullptr) {
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(live, update + i * cols + j));
        _mm512_mask_storeu_ps(added + j, live, x);
      }
      total = _mm512_add_ps(total, x);  // masked-off lanes loaded as 0
    });
    const float* row = added != nullptr ? added : in;  // still in cache for the next two passes
    const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(total) / static_cast<float>(cols));
    __m512 squares = _mm512_setzero_ps();
    over_row(cols, [&](int64_t j, __mmask16 live) ALBEF_AVX512_BF16 {
      const __m512 centred = _mm512_maskz_sub_ps(live, _mm512_maskz_loadu_ps(live, row + j), mean);
      squares = _mm512_fmadd_ps(centred, centred, squares);
    });
    const __m512 scale =
        _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(squares) / static_cast<float>(cols) + eps));
    c10::BFloat16* normed = out + i * cols;
    float* kept = normed_float != nullptr ? normed_float + i * cols : nullptr;  // may be `row`: read before written
    over_row(cols, [&](int64_t j, __mmask16 live) ALBEF_AVX512_BF16 {
      const __m512 centred = _mm512_sub_ps(_mm512_maskz_loadu_ps(live, row + j), mean);
      const __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(centred, scale), _mm512_maskz_loadu_ps(live, gamma + j),
                                       _mm512_maskz_loadu_ps(live, beta + j));
      if (kept != nullptr) _mm512_mask_storeu_ps(kept + j, live, y);
      _mm256_mask_storeu_epi16(normed + j, live, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(y)));
    });
  }
}
#endif

}  // namespace

bool native_bf16_rows() {
#if defined(__x86_64__)
  return native_bf16();
#else
  return false;
#endif
}

void add_layer_norm_to_bf16(const float* residual, const float* update, float* sum, const float* gamma,
                            const float* beta, float eps, int64_t rows, int64_t cols, c10::BFloat16* out,
                            float* normed) {
#if defined(__x86_64__)
  if (native_bf16()) return add_layer_norm_avx512(residual, update, sum, gamma, beta, eps, rows, cols, out, normed);
#endif
  fail("add_layer_norm_to_bf16 needs AVX-512 BF16 (check native_bf16_rows())");
}

void round_to_bf16(const float* x, int64_t n, c10::BFloat16* y) {
#if defined(__x86_64__)
  if (native_bf16()) return round_avx512(x, n, y);
#endif
  round_scalar(x, n, y);
}

void softmax_to_bf16(float* scores, const float* mask, int64_t rows, int64_t cols, c10::BFloat16* probs) {
#if defined(__x86_64__)
  if (native_bf16()) return softmax_avx512(scores, mask, rows, cols, probs);
#endif
  softmax_aten(scores, mask, rows, cols, probs);
}

}  // namespace albef::ops
