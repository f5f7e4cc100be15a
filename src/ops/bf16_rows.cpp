#include "ops/bf16_rows.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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
#define ALBEF_AVX512_BF16 __attribute__((target("avx512f,avx512vl,avx512bw,avx512bf16")))

ALBEF_AVX512_BF16 void round_avx512(const float* x, int64_t n, c10::BFloat16* y) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + j),
                        reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(x + j))));
  for (; j < n; ++j) y[j] = c10::BFloat16(x[j]);
}

/// exp(x) for x <= 0 (softmax after subtracting the row's maximum): 2^n e^r
/// with n = round(x / ln 2), r = x - n ln 2 in two parts (Cody-Waite), e^r
/// by Cephes' degree-7 polynomial (relative error about 1e-7, far below
/// bf16's 4e-3); 0 below -87, where float32 underflows.
ALBEF_AVX512_BF16 inline __m512 exp_nonpositive(__m512 x) {
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~underflow), _mm512_scalef_ps(p, n));
}

/// Lanes j..j+15 of a row of `cols` values, the ones past the end masked off.
inline __mmask16 lanes(int64_t j, int64_t cols) {
  const int64_t left = cols - j;
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

ALBEF_AVX512_BF16 void softmax_avx512(float* scores, const float* mask, int64_t rows, int64_t cols,
                                      c10::BFloat16* probs) {
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < rows; ++i) {
    float* row = scores + i * cols;
    __m512 largest = lowest;
    for (int64_t j = 0; j < cols; j += 16) {  // the masked scores, and their maximum
      const __mmask16 live = lanes(j, cols);
      __m512 x = _mm512_maskz_loadu_ps(live, row + j);
      if (mask != nullptr) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(live, mask + j));
      _mm512_mask_storeu_ps(row + j, live, x);
      largest = _mm512_mask_max_ps(largest, live, largest, x);
    }
    const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(largest));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < cols; j += 16) {
      const __mmask16 live = lanes(j, cols);
      const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, row + j), top));
      _mm512_mask_storeu_ps(row + j, live, e);
      sum = _mm512_mask_add_ps(sum, live, sum, e);
    }
    const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    c10::BFloat16* out = probs + i * cols;
    for (int64_t j = 0; j < cols; j += 16) {
      const __mmask16 live = lanes(j, cols);
      const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, row + j), inverse));
      _mm256_mask_storeu_epi16(out + j, live, reinterpret_cast<__m256i>(rounded));
    }
  }
}
#undef ALBEF_AVX512_BF16
#endif

bool native_bf16() {
#if defined(__x86_64__)
  static const bool native = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
  return native;
#else
  return false;
#endif
}

}  // namespace

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
