#pragma once
/// @file avx512_bf16.h
/// @brief What the AVX-512 BF16 kernels of ops/ share: the target attribute
/// they are compiled with (the library itself is built for any x86-64), the
/// run-time check that picks them, lane masks and exp.
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>

#define ALBEF_AVX512_BF16 __attribute__((target("avx512f,avx512vl,avx512bw,avx512bf16")))

namespace albef::ops {

/// Whether this CPU runs the AVX-512 BF16 kernels (vcvtneps2bf16, vdpbf16ps).
inline bool native_bf16() {
  static const bool native = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
  return native;
}

/// Lanes j..j+15 of a row of `cols` values, the ones past the end masked off.
inline __mmask16 lanes(int64_t j, int64_t cols) {
  const int64_t left = cols - j;
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

/// Calls step(j, live) for every 16 columns of a row of `cols`: the whole
/// vectors with a constant full mask, which the compiler drops (masked loads
/// and stores cost more on AMD's cores), then the tail with its lanes. A
/// lambda passed here needs ALBEF_AVX512_BF16 too.
template <typename Step>
ALBEF_AVX512_BF16 inline void over_row(int64_t cols, Step&& step) {
  int64_t j = 0;
  for (; j + 16 <= cols; j += 16) step(j, static_cast<__mmask16>(0xffff));
  if (j < cols) step(j, lanes(j, cols));
}

/// exp(x) for x <= 0 (softmax after subtracting the row's maximum): 2^n e^r
/// with n = round(x / ln 2), r = x - n ln 2 in two parts (Cody-Waite), e^r
/// by Cephes' degree-7 polynomial (relative error about 1e-7, far below
/// bf16's 4e-3), 2^n by an integer add to the exponent bits; 0 below -87,
/// where float32 underflows.
ALBEF_AVX512_BF16 inline __m512 exp_nonpositive(__m512 x) {
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512i n_int = _mm512_cvtps_epi32(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)));
  const __m512 n = _mm512_cvtepi32_ps(n_int);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i scaled = _mm512_add_epi32(_mm512_castps_si512(p), _mm512_slli_epi32(n_int, 23));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~underflow), _mm512_castsi512_ps(scaled));
}

}  // namespace albef::ops
#endif
