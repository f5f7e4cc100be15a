#include "ops/attention_head_bf16.h"

#include "albef/core/error.h"
#include "ops/avx512_bf16.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace albef::ops {
namespace {

/// Rows of queries one tile takes: 6 rows x 4 vectors of 16 columns keep 24
/// float32 sums in registers, beside the 4 packed vectors they share.
constexpr int64_t kRows = 6;
constexpr int kVectors = 4;

int64_t round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

/// Two adjacent bf16 values as one 32-bit lane (the first in the low half).
inline uint32_t pair_at(const c10::BFloat16* p) {
  uint32_t pair;
  std::memcpy(&pair, p, sizeof pair);
  return pair;
}

#if defined(__x86_64__)
/// sums[r][v] = sum_p (pair p of row r) . packed[p][16 v .. 16 v + 15] for
/// Rows rows `stride` apart: the product both tiles below are made of.
template <int Rows, int Vectors>
ALBEF_AVX512_BF16 __attribute__((always_inline)) inline void dot_tile(const c10::BFloat16* rows, int64_t stride,
                                                                      int64_t pairs, const uint32_t* packed,
                                                                      int64_t packed_stride,
                                                                      __m512 (&sums)[Rows][Vectors]) {
  for (int r = 0; r < Rows; ++r)
    for (int v = 0; v < Vectors; ++v) sums[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512i columns[Vectors];
    for (int v = 0; v < Vectors; ++v) columns[v] = _mm512_loadu_si512(packed + p * packed_stride + 16 * v);
    for (int r = 0; r < Rows; ++r) {
      const __m512i pair = _mm512_set1_epi32(static_cast<int>(pair_at(rows + r * stride + 2 * p)));
      for (int v = 0; v < Vectors; ++v)
        sums[r][v] =
            _mm512_dpbf16_ps(sums[r][v], reinterpret_cast<__m512bh>(pair), reinterpret_cast<__m512bh>(columns[v]));
    }
  }
}

/// scores[r][j..] = scale q[r] . keys, for Rows rows and Vectors x 16 key columns from `column`.
template <int Rows, int Vectors>
ALBEF_AVX512_BF16 void score_tile(const c10::BFloat16* query, int64_t query_stride, int64_t pairs,
                                  const uint32_t* keys, int64_t key_columns, int64_t column, int64_t k_len,
                                  float scale, float* scores) {
  __m512 sums[Rows][Vectors];
  dot_tile<Rows, Vectors>(query, query_stride, pairs, keys + column, key_columns, sums);
  const __m512 factor = _mm512_set1_ps(scale);
  for (int r = 0; r < Rows; ++r)
    for (int v = 0; v < Vectors; ++v) {
      const int64_t j = column + 16 * v;
      _mm512_mask_storeu_ps(scores + r * k_len + j, lanes(j, k_len), _mm512_mul_ps(sums[r][v], factor));
    }
}

/// weights = exp(scores + mask - max) rounded to bf16, for one row; returns
/// their float32 sum. The division by the sum waits for the output (64
/// columns instead of k_len), as FlashAttention does, which saves a pass.
ALBEF_AVX512_BF16 float exponentiate_row(const float* scores, const float* mask, int64_t cols,
                                         c10::BFloat16* weights) {
  auto masked_score = [&](int64_t j, __mmask16 live) ALBEF_AVX512_BF16 {
    const __m512 x = _mm512_maskz_loadu_ps(live, scores + j);
    return mask != nullptr ? _mm512_add_ps(x, _mm512_maskz_loadu_ps(live, mask + j)) : x;
  };
  __m512 largest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  over_row(cols, [&](int64_t j, __mmask16 live) ALBEF_AVX512_BF16 {
    largest = _mm512_mask_max_ps(largest, live, largest, masked_score(j, live));
  });
  const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(largest));
  __m512 sum = _mm512_setzero_ps();
  over_row(cols, [&](int64_t j, __mmask16 live) ALBEF_AVX512_BF16 {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(masked_score(j, live), top));
    sum = _mm512_mask_add_ps(sum, live, sum, e);
    _mm256_mask_storeu_epi16(weights + j, live, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(e)));
  });
  return _mm512_reduce_add_ps(sum);
}

/// out[r][column..] = weights[r] . values / row_sums[r], rounded to bf16.
template <int Rows, int Vectors>
ALBEF_AVX512_BF16 void mix_tile(const c10::BFloat16* weights, int64_t weights_stride, int64_t key_pairs,
                                const uint32_t* values, int64_t value_columns, int64_t column, int64_t head_dim,
                                const float* row_sums, c10::BFloat16* out, int64_t out_stride) {
  __m512 sums[Rows][Vectors];
  dot_tile<Rows, Vectors>(weights, weights_stride, key_pairs, values + column, value_columns, sums);
  for (int r = 0; r < Rows; ++r) {
    const __m512 inverse = _mm512_set1_ps(1.0f / row_sums[r]);
    for (int v = 0; v < Vectors; ++v) {
      const int64_t d = column + 16 * v;
      _mm256_mask_storeu_epi16(out + r * out_stride + d, lanes(d, head_dim),
                               reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_mul_ps(sums[r][v], inverse))));
    }
  }
}

template <int Rows, int Vectors>
struct ScoreTile {
  template <typename... Args>
  static void run(Args... args) {
    score_tile<Rows, Vectors>(args...);
  }
};

template <int Rows, int Vectors>
struct MixTile {
  template <typename... Args>
  static void run(Args... args) {
    mix_tile<Rows, Vectors>(args...);
  }
};

/// Tile<rows, vectors>::run(args...) for 1..kRows rows and 1..kVectors column vectors.
template <template <int, int> class Tile, typename... Args>
void dispatch(int64_t rows, int64_t vectors, Args... args) {
  switch (rows * 8 + vectors) {
#define ALBEF_TILE(R, V) \
  case R * 8 + V:        \
    return Tile<R, V>::run(args...);
#define ALBEF_TILE_ROW(R) ALBEF_TILE(R, 1) ALBEF_TILE(R, 2) ALBEF_TILE(R, 3) ALBEF_TILE(R, 4)
    ALBEF_TILE_ROW(1) ALBEF_TILE_ROW(2) ALBEF_TILE_ROW(3) ALBEF_TILE_ROW(4) ALBEF_TILE_ROW(5) ALBEF_TILE_ROW(6)
#undef ALBEF_TILE_ROW
#undef ALBEF_TILE
  }
  ALBEF_CHECK(false, "no attention tile of ", rows, " rows x ", vectors, " vectors");
}

/// The 16 x 16 transposition of 32-bit lanes: out[c] lane i = rows[i] lane c.
ALBEF_AVX512_BF16 void transpose_16x16(const __m512i (&rows)[16], __m512i (&out)[16]) {
  __m512i pairs[16], quads[16];
  for (int i = 0; i < 16; i += 2) {  // per 128-bit lane: (a0 b0 a1 b1), (a2 b2 a3 b3)
    pairs[i] = _mm512_unpacklo_epi32(rows[i], rows[i + 1]);
    pairs[i + 1] = _mm512_unpackhi_epi32(rows[i], rows[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // quads[i + k], lane L: rows i..i+3 of column 4 L + k
    quads[i] = _mm512_unpacklo_epi64(pairs[i], pairs[i + 2]);
    quads[i + 1] = _mm512_unpackhi_epi64(pairs[i], pairs[i + 2]);
    quads[i + 2] = _mm512_unpacklo_epi64(pairs[i + 1], pairs[i + 3]);
    quads[i + 3] = _mm512_unpackhi_epi64(pairs[i + 1], pairs[i + 3]);
  }
  for (int k = 0; k < 4; ++k) {  // gather lane L of quads[k], [4 + k], [8 + k], [12 + k] into column 4 L + k
    const __m512i low_rows_01 = _mm512_shuffle_i32x4(quads[k], quads[4 + k], 0x44);
    const __m512i low_rows_23 = _mm512_shuffle_i32x4(quads[k], quads[4 + k], 0xee);
    const __m512i high_rows_01 = _mm512_shuffle_i32x4(quads[8 + k], quads[12 + k], 0x44);
    const __m512i high_rows_23 = _mm512_shuffle_i32x4(quads[8 + k], quads[12 + k], 0xee);
    out[k] = _mm512_shuffle_i32x4(low_rows_01, high_rows_01, 0x88);
    out[4 + k] = _mm512_shuffle_i32x4(low_rows_01, high_rows_01, 0xdd);
    out[8 + k] = _mm512_shuffle_i32x4(low_rows_23, high_rows_23, 0x88);
    out[12 + k] = _mm512_shuffle_i32x4(low_rows_23, high_rows_23, 0xdd);
  }
}

/// keys[p][j] = pair p of key j; values[t][d] = (v[2t][d], v[2t + 1][d]).
ALBEF_AVX512_BF16 void pack_avx512(const c10::BFloat16* key, int64_t key_stride, const c10::BFloat16* value,
                                   int64_t value_stride, int64_t k_len, int64_t head_dim, int64_t key_columns,
                                   int64_t value_columns, uint32_t* keys, uint32_t* values) {
  // 16 keys x 16 pairs at a time, transposed in registers: when 30 queries meet 257 keys (ITM) packing
  // weighs as much as the products, and gathering each pair from 16 rows made most of it.
  const int64_t pairs = head_dim / 2;
  for (int64_t j = 0; j < k_len; j += 16) {
    for (int64_t p = 0; p < pairs; p += 16) {
      const __mmask16 live = lanes(p, pairs);
      __m512i rows[16], columns[16];
      for (int64_t i = 0; i < 16; ++i)
        rows[i] = j + i < k_len ? _mm512_maskz_loadu_epi32(live, key + (j + i) * key_stride + 2 * p)
                                : _mm512_setzero_si512();
      transpose_16x16(rows, columns);
      for (int64_t c = 0; c < std::min<int64_t>(16, pairs - p); ++c)
        _mm512_storeu_si512(keys + (p + c) * key_columns + j, columns[c]);
    }
  }
  // Two keys' values interleaved 32 columns at a time: unpacking pairs columns within 128-bit lanes, and a
  // permutation of lanes puts them back in column order.
  const __m512i first_columns = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
  const __m512i last_columns = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  for (int64_t t = 0; 2 * t < k_len; ++t) {
    const c10::BFloat16* even = value + 2 * t * value_stride;
    const c10::BFloat16* odd = 2 * t + 1 < k_len ? even + value_stride : nullptr;
    for (int64_t d = 0; d < head_dim; d += 32) {
      const int64_t left = head_dim - d;
      const __mmask32 live = left >= 32 ? ~static_cast<__mmask32>(0) : (static_cast<__mmask32>(1) << left) - 1;
      const __m512i first = _mm512_maskz_loadu_epi16(live, even + d);
      const __m512i second = odd != nullptr ? _mm512_maskz_loadu_epi16(live, odd + d) : _mm512_setzero_si512();
      const __m512i low = _mm512_unpacklo_epi16(first, second), high = _mm512_unpackhi_epi16(first, second);
      _mm512_storeu_si512(values + t * value_columns + d, _mm512_permutex2var_epi64(low, first_columns, high));
      if (d + 16 < value_columns)
        _mm512_storeu_si512(values + t * value_columns + d + 16, _mm512_permutex2var_epi64(low, last_columns, high));
    }
  }
}
#endif

}  // namespace

bool head_attention_bf16_applies(int64_t head_dim) {
#if defined(__x86_64__)
  return native_bf16() && head_dim > 0 && head_dim % 2 == 0;
#else
  return false;
#endif
}

HeadAttentionBf16::HeadAttentionBf16(int64_t q_len, int64_t k_len, int64_t head_dim)
    : q_len_(q_len), k_len_(k_len), head_dim_(head_dim), key_columns_(round_up(k_len, 16)),
      value_columns_(round_up(head_dim, 16)), key_pairs_((k_len + 1) / 2),
      keys_(static_cast<size_t>(head_dim / 2 * key_columns_), 0u),
      values_(static_cast<size_t>(key_pairs_ * value_columns_), 0u), scores_(static_cast<size_t>(kRows * k_len)),
      weights_(static_cast<size_t>(kRows * 2 * key_pairs_), c10::BFloat16(0.0f)) {
  ALBEF_CHECK(head_attention_bf16_applies(head_dim), "bf16 head attention needs AVX-512 BF16 and an even head ",
              "width; got head_dim ", head_dim);
  ALBEF_CHECK(q_len > 0 && k_len > 0, "bf16 head attention needs rows; got q_len ", q_len, ", k_len ", k_len);
}

void HeadAttentionBf16::pack(const c10::BFloat16* key, int64_t key_stride, const c10::BFloat16* value,
                             int64_t value_stride) {
#if defined(__x86_64__)
  pack_avx512(key, key_stride, value, value_stride, k_len_, head_dim_, key_columns_, value_columns_, keys_.data(),
              values_.data());
#endif
}

void HeadAttentionBf16::run(const c10::BFloat16* query, int64_t query_stride, float scale, const float* mask,
                            c10::BFloat16* out, int64_t out_stride) {
#if defined(__x86_64__)
  const int64_t weights_stride = 2 * key_pairs_;
  const uint32_t* keys = keys_.data();
  const uint32_t* values = values_.data();
  const c10::BFloat16* weights = weights_.data();
  for (int64_t i = 0; i < q_len_; i += kRows) {
    const int64_t rows = std::min(kRows, q_len_ - i);
    // The key vectors in blocks of 3-4 (ViT's 17: 4, 4, 3, 3, 3, not 4, 4, 4, 4, 1, whose last tile would
    // broadcast a query pair per product).
    const int64_t key_vectors = key_columns_ / 16, blocks = (key_vectors + kVectors - 1) / kVectors;
    for (int64_t block = 0, j = 0; block < blocks; ++block) {
      const int64_t vectors = key_vectors / blocks + (block < key_vectors % blocks ? 1 : 0);
      dispatch<ScoreTile>(rows, vectors, query + i * query_stride, query_stride, head_dim_ / 2, keys, key_columns_, j,
                          k_len_, scale, scores_.data());
      j += 16 * vectors;
    }
    float row_sums[kRows];
    for (int64_t r = 0; r < rows; ++r)
      row_sums[r] = exponentiate_row(scores_.data() + r * k_len_, mask, k_len_, weights_.data() + r * weights_stride);
    for (int64_t d = 0; d < value_columns_; d += 16 * kVectors)
      dispatch<MixTile>(rows, std::min<int64_t>(kVectors, (value_columns_ - d) / 16), weights, weights_stride,
                        key_pairs_, values, value_columns_, d, head_dim_, static_cast<const float*>(row_sums),
                        out + i * out_stride, out_stride);
  }
#endif
}

}  // namespace albef::ops
