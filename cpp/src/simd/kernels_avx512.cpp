// AVX-512 (F, BW, DQ, VL) kernels, compiled with those flags for this file only. The Hamming scan
// uses VPOPCNTDQ through a function-level target attribute, called only when the CPU has it.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "pyfacematch/simd.hpp"

namespace pfm {

bool cpu_has_avx512_vpopcntdq();

namespace avx512_k {

#include "heap_impl.inc"
#include "hamming_impl.inc"

struct V {
    using reg = __m512;
    static constexpr int W = 16;
    static constexpr unsigned full_mask = 0xFFFFu;
    static inline reg zero() { return _mm512_setzero_ps(); }
    static inline reg load(const float* p) { return _mm512_loadu_ps(p); }
    static inline reg load_n(const float* p, int n) {
        return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
    }
    static inline reg set1(float x) { return _mm512_set1_ps(x); }
    static inline reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
    static inline reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
    static inline reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
    static inline float hsum(reg a) { return _mm512_reduce_add_ps(a); }
    static inline void store(float* p, reg a) { _mm512_storeu_ps(p, a); }
    static inline void store_n(float* p, reg a, int n) {
        _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), a);
    }
    static inline unsigned gt_mask(reg a, float t) {
        return (unsigned)_mm512_cmp_ps_mask(a, _mm512_set1_ps(t), _CMP_GT_OQ);
    }
    static inline unsigned bad_mask(reg a) {
        reg z = _mm512_mul_ps(a, _mm512_setzero_ps());
        return (unsigned)_mm512_cmp_ps_mask(z, z, _CMP_UNORD_Q);
    }
};

static constexpr int NV = 2;         // 32 rows per panel
static constexpr int MR_MAX = 6;     // 12 accumulators of 32 zmm registers
static constexpr std::size_t PACK_BYTES = 384 * 1024;

#include "kernels_body.inc"

// One 64-byte chunk per step: XOR, VPOPCNTQ, accumulate; a masked load covers the tail.
__attribute__((target("avx512f,avx512vpopcntdq,avx512bw"))) static void hamming_topk_vpopcnt(
    const std::uint8_t* Q, std::size_t m, const std::uint8_t* G, std::size_t r0, std::size_t r1,
    std::size_t nb, TopKHeap* heaps) {
    std::size_t blk = (256u * 1024u) / (nb ? nb : 1);
    if (blk < 64) blk = 64;
    const std::size_t full = nb / 64, rest = nb % 64;
    const __mmask64 tail = rest ? (~0ULL >> (64 - rest)) : 0;
    for (std::size_t rb = r0; rb < r1; rb += blk) {
        std::size_t re = r1 - rb < blk ? r1 : rb + blk;
        for (std::size_t i = 0; i < m; ++i) {
            const std::uint8_t* q = Q + i * nb;
            TopKHeap& h = heaps[i];
            float t = heap_thresh(h);
            for (std::size_t r = rb; r < re; ++r) {
                const std::uint8_t* g = G + r * nb;
                __m512i acc = _mm512_setzero_si512();
                for (std::size_t c = 0; c < full; ++c) {
                    __m512i x = _mm512_xor_si512(_mm512_loadu_si512(q + 64 * c), _mm512_loadu_si512(g + 64 * c));
                    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
                }
                if (rest) {
                    __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, q + 64 * full),
                                                 _mm512_maskz_loadu_epi8(tail, g + 64 * full));
                    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
                }
                float s = -(float)_mm512_reduce_add_epi64(acc);
                if (s > t) {
                    heap_push(h, s, (int64_t)r);
                    t = heap_thresh(h);
                }
            }
        }
    }
}

static void hamming_topk(const std::uint8_t* Q, std::size_t m, const std::uint8_t* G, std::size_t r0,
                         std::size_t r1, std::size_t nb, TopKHeap* heaps) {
    static const bool vpop = cpu_has_avx512_vpopcntdq();
    if (vpop)
        hamming_topk_vpopcnt(Q, m, G, r0, r1, nb, heaps);
    else
        hamming_topk_words(Q, m, G, r0, r1, nb, heaps);
}

}  // namespace avx512_k

/** @brief The AVX-512 kernel table. */
extern const KernelTable kernel_table_avx512;
const KernelTable kernel_table_avx512 = {
    SimdLevel::avx512,
    "avx512",
    avx512_k::dot,
    avx512_k::dot3,
    avx512_k::topk_stream,
    avx512_k::topk_gemm,
    avx512_k::scores_stream,
    avx512_k::scores_gemm,
    avx512_k::pack_floats,
    avx512_k::hamming_topk,
    avx512_k::dot_masked,
};

}  // namespace pfm
