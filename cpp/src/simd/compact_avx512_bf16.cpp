// AVX-512 BF16 kernel (this file alone is compiled with -mavx512bf16; used only when the CPU has
// AVX512_BF16). vdpbf16ps multiplies bf16 pairs exactly and accumulates in float32 (round to
// nearest even, denormals flushed: compact.cpp's bound allows for both).
#include <immintrin.h>

#include <cstdint>

#include "compact_table.hpp"

namespace pfm {
namespace compact_bf16_k {

#include "compact_avx512_hsum.inc"

static inline __m512bh ld(const std::uint16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
static inline float bfdot1(const std::uint16_t* q, const std::uint16_t* g, std::size_t stride) {
    __m512 a0 = _mm512_setzero_ps();
    for (std::size_t j = 0; j < stride; j += 32) a0 = _mm512_dpbf16_ps(a0, ld(q + j), ld(g + j));
    return _mm512_reduce_add_ps(a0);
}
static inline void bfdot4(const std::uint16_t* q, const std::uint16_t* g, std::size_t stride, float* out) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const std::uint16_t *g0 = g, *g1 = g + stride, *g2 = g + 2 * stride, *g3 = g + 3 * stride;
    const std::uint16_t* ahead = g + 4 * stride;
    for (std::size_t j = 0; j < stride; j += 32) {
        __builtin_prefetch(ahead + 4 * j, 0, 0);
        __builtin_prefetch(ahead + 4 * j + 32, 0, 0);
        __builtin_prefetch(ahead + 4 * j + 64, 0, 0);
        __builtin_prefetch(ahead + 4 * j + 96, 0, 0);
        __m512bh x = ld(q + j);
        a0 = _mm512_dpbf16_ps(a0, x, ld(g0 + j));
        a1 = _mm512_dpbf16_ps(a1, x, ld(g1 + j));
        a2 = _mm512_dpbf16_ps(a2, x, ld(g2 + j));
        a3 = _mm512_dpbf16_ps(a3, x, ld(g3 + j));
    }
    _mm_storeu_ps(out, hsum4_ps(a0, a1, a2, a3));
}
static inline void i8dot4(const std::int8_t*, const std::int8_t*, const std::int32_t*, std::size_t, std::int32_t*) {}
static inline std::int32_t i8dot1(const std::int8_t*, const std::int8_t*, std::int32_t, std::size_t) { return 0; }

#include "compact_impl.inc"

}  // namespace compact_bf16_k

/** @brief The BF16 block kernel (compact_table.cpp puts it in the AVX-512 table when the CPU has AVX512_BF16). */
void compact_bf16_dots_avx512_bf16(const std::uint16_t* Q, std::size_t m, const std::uint16_t* G, std::size_t r0,
                                   std::size_t r1, std::size_t stride, float* out, std::size_t ldo) {
    compact_bf16_k::bf16_dots(Q, m, G, r0, r1, stride, out, ldo);
}

}  // namespace pfm
