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

#define PFM_VPOP __attribute__((target("avx512f,avx512vpopcntdq,avx512bw")))

// Per-lane popcounts of (q XOR g) summed over the code's 64-byte chunks (a masked load covers the tail).
PFM_VPOP static inline __m512i popcnt_lanes(const std::uint8_t* q, const std::uint8_t* g, std::size_t full,
                                            std::size_t rest, __mmask64 tail) {
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
    return acc;
}

// Lane sums of eight vectors in one vector (lane r = sum of v[r]) by a transpose-add tree: 19
// instructions for eight codes instead of a horizontal reduction per code.
PFM_VPOP static inline __m512i sum8(const __m512i* v) {
    __m512i t[4];
    for (int j = 0; j < 4; ++j)
        t[j] = _mm512_add_epi64(_mm512_unpacklo_epi64(v[2 * j], v[2 * j + 1]),
                                _mm512_unpackhi_epi64(v[2 * j], v[2 * j + 1]));
    // t[j]: each 128-bit lane L holds (partial of v[2j], partial of v[2j+1]) over 64-bit lanes 2L, 2L+1.
    __m512i u0 = _mm512_add_epi64(_mm512_shuffle_i64x2(t[0], t[1], 0x88), _mm512_shuffle_i64x2(t[0], t[1], 0xDD));
    __m512i u1 = _mm512_add_epi64(_mm512_shuffle_i64x2(t[2], t[3], 0x88), _mm512_shuffle_i64x2(t[2], t[3], 0xDD));
    // u0: lanes (v0,v1) over L∈{0,1}, (v0,v1) over L∈{2,3}, (v2,v3) over {0,1}, (v2,v3) over {2,3}.
    return _mm512_add_epi64(_mm512_shuffle_i64x2(u0, u1, 0x88), _mm512_shuffle_i64x2(u0, u1, 0xDD));
}

PFM_VPOP static void hamming_topk_vpopcnt(const std::uint8_t* Q, std::size_t m, const std::uint8_t* G,
                                          std::size_t r0, std::size_t r1, std::size_t nb, TopKHeap* heaps) {
    std::size_t blk = (256u * 1024u) / (nb ? nb : 1);
    blk = blk < 64 ? 64 : blk / 8 * 8;
    const std::size_t full = nb / 64, rest = nb % 64;
    const __mmask64 tail = rest ? (~0ULL >> (64 - rest)) : 0;
    for (std::size_t rb = r0; rb < r1; rb += blk) {
        std::size_t re = r1 - rb < blk ? r1 : rb + blk;
        for (std::size_t i = 0; i < m; ++i) {
            const std::uint8_t* q = Q + i * nb;
            TopKHeap& h = heaps[i];
            float t = heap_thresh(h);
            std::size_t r = rb;
            // d = 512 (one 64-byte chunk, the common case): the probe stays in a register.
            const __m512i q0 = nb == 64 ? _mm512_loadu_si512(q) : _mm512_setzero_si512();
            for (; r + 8 <= re; r += 8) {
                __m512i v[8];
                if (nb == 64) {
                    for (int j = 0; j < 8; ++j)
                        v[j] = _mm512_popcnt_epi64(_mm512_xor_si512(q0, _mm512_loadu_si512(G + (r + j) * 64)));
                } else {
                    for (int j = 0; j < 8; ++j) v[j] = popcnt_lanes(q, G + (r + j) * nb, full, rest, tail);
                }
                __m512i dist = sum8(v);
                // keep rows with -dist > t, i.e. dist < -t (every row while the heap fills)
                __mmask8 keep = t == -__builtin_inff()
                                    ? (__mmask8)0xFF
                                    : _mm512_cmplt_epi64_mask(dist, _mm512_set1_epi64((long long)(-t)));
                if (keep) {
                    alignas(64) long long dd[8];
                    _mm512_store_si512(dd, dist);
                    while (keep) {
                        int j = __builtin_ctz(keep);
                        keep &= keep - 1;
                        float s = -(float)dd[j];
                        if (s > t) {
                            heap_push(h, s, (int64_t)(r + j));
                            t = heap_thresh(h);
                        }
                    }
                }
            }
            for (; r < re; ++r) {
                float s = -(float)_mm512_reduce_add_epi64(popcnt_lanes(q, G + r * nb, full, rest, tail));
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
