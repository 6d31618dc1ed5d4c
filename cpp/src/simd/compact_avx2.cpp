// AVX2 compact kernels (compiled with -mavx2 -mfma for this file only): int8 rows widened to int16
// and multiplied with vpmaddwd (exact: |products| ≤ 127², pair sums fit int32); bf16 rows widened
// to float32 by a 16-bit shift and accumulated with FMA.
#include <immintrin.h>

#include <cstdint>

#include "compact_table.hpp"

namespace pfm {
namespace compact_avx2_k {

static inline std::int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}
static inline float hsum_ps(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline __m256i w16(const std::int8_t* p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
static inline std::int32_t i8dot1(const std::int8_t* q, const std::int8_t* g, std::int32_t, std::size_t stride) {
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    for (std::size_t j = 0; j < stride; j += 32) {
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(w16(q + j), w16(g + j)));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(w16(q + j + 16), w16(g + j + 16)));
    }
    return hsum_i32(_mm256_add_epi32(a0, a1));
}
static inline void i8dot4(const std::int8_t* q, const std::int8_t* g, const std::int32_t*, std::size_t stride,
                          std::int32_t* out) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    const std::int8_t *g0 = g, *g1 = g + stride, *g2 = g + 2 * stride, *g3 = g + 3 * stride;
    for (std::size_t j = 0; j < stride; j += 16) {
        __m256i x = w16(q + j);
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(x, w16(g0 + j)));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(x, w16(g1 + j)));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(x, w16(g2 + j)));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(x, w16(g3 + j)));
    }
    out[0] = hsum_i32(a0);
    out[1] = hsum_i32(a1);
    out[2] = hsum_i32(a2);
    out[3] = hsum_i32(a3);
}
static inline __m256 bf8(const std::uint16_t* p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline float bfdot1(const std::uint16_t* q, const std::uint16_t* g, std::size_t stride) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (std::size_t j = 0; j < stride; j += 16) {
        a0 = _mm256_fmadd_ps(bf8(q + j), bf8(g + j), a0);
        a1 = _mm256_fmadd_ps(bf8(q + j + 8), bf8(g + j + 8), a1);
    }
    return hsum_ps(_mm256_add_ps(a0, a1));
}
static inline void bfdot4(const std::uint16_t* q, const std::uint16_t* g, std::size_t stride, float* out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const std::uint16_t *g0 = g, *g1 = g + stride, *g2 = g + 2 * stride, *g3 = g + 3 * stride;
    for (std::size_t j = 0; j < stride; j += 8) {
        __m256 x = bf8(q + j);
        a0 = _mm256_fmadd_ps(x, bf8(g0 + j), a0);
        a1 = _mm256_fmadd_ps(x, bf8(g1 + j), a1);
        a2 = _mm256_fmadd_ps(x, bf8(g2 + j), a2);
        a3 = _mm256_fmadd_ps(x, bf8(g3 + j), a3);
    }
    out[0] = hsum_ps(a0);
    out[1] = hsum_ps(a1);
    out[2] = hsum_ps(a2);
    out[3] = hsum_ps(a3);
}

#include "compact_impl.inc"

}  // namespace compact_avx2_k

const CompactKernels compact_kernels_avx2 = {
    .name = "avx2",
    .int8_dots = compact_avx2_k::int8_dots,
    .bf16_dots = compact_avx2_k::bf16_dots,
};

}  // namespace pfm
