// AVX-512 (F + BW) compact kernels: int8 rows widened to int16 and multiplied with vpmaddwd (exact),
// bf16 rows widened to float32 by a 16-bit shift and accumulated with FMA. CPUs with AVX512_VNNI /
// AVX512_BF16 get the single-instruction forms from compact_avx512_vnni.cpp / compact_avx512_bf16.cpp.
#include <immintrin.h>

#include <cstdint>

#include "compact_table.hpp"

namespace pfm {
namespace compact_avx512_k {

#include "compact_avx512_hsum.inc"

static inline __m512i w16(const std::int8_t* p) {
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
static inline std::int32_t i8dot1(const std::int8_t* q, const std::int8_t* g, std::int32_t, std::size_t stride) {
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    for (std::size_t j = 0; j < stride; j += 64) {
        a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(w16(q + j), w16(g + j)));
        a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(w16(q + j + 32), w16(g + j + 32)));
    }
    return _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1));
}
static inline void i8dot4(const std::int8_t* q, const std::int8_t* g, const std::int32_t*, std::size_t stride,
                          std::int32_t* out) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    const std::int8_t *g0 = g, *g1 = g + stride, *g2 = g + 2 * stride, *g3 = g + 3 * stride;
    for (std::size_t j = 0; j < stride; j += 32) {
        __m512i x = w16(q + j);
        a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(x, w16(g0 + j)));
        a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(x, w16(g1 + j)));
        a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(x, w16(g2 + j)));
        a3 = _mm512_add_epi32(a3, _mm512_madd_epi16(x, w16(g3 + j)));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), hsum4_epi32(a0, a1, a2, a3));
}
static inline __m512 bf16x16(const std::uint16_t* p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline float bfdot1(const std::uint16_t* q, const std::uint16_t* g, std::size_t stride) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (std::size_t j = 0; j < stride; j += 32) {
        a0 = _mm512_fmadd_ps(bf16x16(q + j), bf16x16(g + j), a0);
        a1 = _mm512_fmadd_ps(bf16x16(q + j + 16), bf16x16(g + j + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}
static inline void bfdot4(const std::uint16_t* q, const std::uint16_t* g, std::size_t stride, float* out) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const std::uint16_t *g0 = g, *g1 = g + stride, *g2 = g + 2 * stride, *g3 = g + 3 * stride;
    for (std::size_t j = 0; j < stride; j += 16) {
        __m512 x = bf16x16(q + j);
        a0 = _mm512_fmadd_ps(x, bf16x16(g0 + j), a0);
        a1 = _mm512_fmadd_ps(x, bf16x16(g1 + j), a1);
        a2 = _mm512_fmadd_ps(x, bf16x16(g2 + j), a2);
        a3 = _mm512_fmadd_ps(x, bf16x16(g3 + j), a3);
    }
    _mm_storeu_ps(out, hsum4_ps(a0, a1, a2, a3));
}

#include "compact_impl.inc"

}  // namespace compact_avx512_k

const CompactKernels compact_kernels_avx512 = {
    .name = "avx512",
    .int8_dots = compact_avx512_k::int8_dots,
    .bf16_dots = compact_avx512_k::bf16_dots,
};

}  // namespace pfm
