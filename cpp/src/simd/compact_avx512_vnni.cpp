// AVX-512 VNNI int8 kernel (this file alone is compiled with -mavx512vnni; used only when the CPU
// has AVX512_VNNI). vpdpbusd multiplies unsigned by signed bytes, so the probe is biased to
// unsigned (q ^ 0x80 = q + 128) and the bias removed with the row's code sum:
// Σ (q_j + 128)·g_j − 128·Σ g_j = Σ q_j·g_j, exactly (|partial sums| ≤ d·255·128 < 2^31 for d ≤ 65536).
#include <immintrin.h>

#include <cstdint>

#include "compact_table.hpp"

namespace pfm {
namespace compact_vnni_k {

#include "compact_avx512_hsum.inc"

static inline __m512i ld(const std::int8_t* p) { return _mm512_loadu_si512(p); }
static inline std::int32_t i8dot1(const std::int8_t* q, const std::int8_t* g, std::int32_t gs, std::size_t stride) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m512i a0 = _mm512_setzero_si512();
    for (std::size_t j = 0; j < stride; j += 64) a0 = _mm512_dpbusd_epi32(a0, _mm512_xor_si512(ld(q + j), bias), ld(g + j));
    return _mm512_reduce_add_epi32(a0) - 128 * gs;
}
static inline void i8dot4(const std::int8_t* q, const std::int8_t* g, const std::int32_t* gs, std::size_t stride,
                          std::int32_t* out) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    const std::int8_t *g0 = g, *g1 = g + stride, *g2 = g + 2 * stride, *g3 = g + 3 * stride;
    // The next four rows are prefetched a cache line per row per step (a one-probe scan is
    // bandwidth-bound; see dot_1x4 in kernels_body.inc).
    const std::int8_t* ahead = g + 4 * stride;
    for (std::size_t j = 0; j < stride; j += 64) {
        __builtin_prefetch(ahead + 4 * j, 0, 0);
        __builtin_prefetch(ahead + 4 * j + 64, 0, 0);
        __builtin_prefetch(ahead + 4 * j + 128, 0, 0);
        __builtin_prefetch(ahead + 4 * j + 192, 0, 0);
        __m512i x = _mm512_xor_si512(ld(q + j), bias);
        a0 = _mm512_dpbusd_epi32(a0, x, ld(g0 + j));
        a1 = _mm512_dpbusd_epi32(a1, x, ld(g1 + j));
        a2 = _mm512_dpbusd_epi32(a2, x, ld(g2 + j));
        a3 = _mm512_dpbusd_epi32(a3, x, ld(g3 + j));
    }
    const __m128i bias4 = _mm_slli_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(gs)), 7);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_sub_epi32(hsum4_epi32(a0, a1, a2, a3), bias4));
}

static inline void bfdot4(const std::uint16_t*, const std::uint16_t*, std::size_t, float*) {}
static inline float bfdot1(const std::uint16_t*, const std::uint16_t*, std::size_t) { return 0.0f; }

#include "compact_impl.inc"

}  // namespace compact_vnni_k

/** @brief The VNNI int8 block kernel (compact_table.cpp puts it in the AVX-512 table when the CPU has VNNI). */
void compact_int8_dots_avx512_vnni(const std::int8_t* Q, std::size_t m, const std::int8_t* G, const std::int32_t* gsum,
                                   std::size_t r0, std::size_t r1, std::size_t stride, std::int32_t* out,
                                   std::size_t ldo) {
    compact_vnni_k::int8_dots(Q, m, G, gsum, r0, r1, stride, out, ldo);
}

}  // namespace pfm
