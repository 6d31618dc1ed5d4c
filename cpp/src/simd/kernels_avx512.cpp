// AVX-512 (F, BW, DQ, VL) kernels, compiled with those flags for this file only. The Hamming scan
// uses VPOPCNTDQ through a function-level target attribute, called only when the CPU has it.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "pyfacematch/simd.hpp"

namespace pfm {

bool cpu_has_avx512_vpopcntdq();

namespace avx512_k {

#include "heap_impl.inc"
#include "codesel_impl.inc"
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

// Code sums of four registers holding two 256-bit codes each (A in 64-bit lanes 0-3, B in 4-7):
// lanes of the result are the codes (A0, A1, B0, B1, A2, A3, B2, B3) of w[0..3].
PFM_VPOP static inline __m512i pair8(const __m512i* w) {
    __m512i t0 = _mm512_add_epi64(_mm512_unpacklo_epi64(w[0], w[1]), _mm512_unpackhi_epi64(w[0], w[1]));
    __m512i t1 = _mm512_add_epi64(_mm512_unpacklo_epi64(w[2], w[3]), _mm512_unpackhi_epi64(w[2], w[3]));
    // t: 128-bit lane L holds (partial of w[2j], partial of w[2j+1]); lanes 0,1 are code A, 2,3 code B.
    return _mm512_add_epi64(_mm512_shuffle_i64x2(t0, t1, 0x88), _mm512_shuffle_i64x2(t0, t1, 0xDD));
}

// Offers the rows of one group of eight whose distance is below the selection's bound.
PFM_VPOP static inline void offer8(CodeSel& s, __m512i dist, std::size_t r) {
    __mmask8 keep = _mm512_cmplt_epi64_mask(dist, _mm512_set1_epi64(s.bound));
    if (!keep) return;
    alignas(64) long long dd[8];
    _mm512_store_si512(dd, dist);
    while (keep) {
        int j = __builtin_ctz(keep);
        keep &= keep - 1;
        if (dd[j] < s.bound) codesel_push(s, (std::int32_t)dd[j], (int64_t)(r + j));
    }
}

PFM_VPOP static void hamming_topk_vpopcnt(const std::uint8_t* Q, std::size_t m, const std::uint8_t* G,
                                          std::size_t r0, std::size_t r1, std::size_t nb, CodeSel* sels) {
    // Rows per block: a batch passes every probe over a block while it is in L1/L2; one probe
    // streams larger blocks.
    std::size_t blk = (m > 1 ? 16384u : 256u * 1024u) / (nb ? nb : 1);
    blk = blk < 64 ? 64 : blk / 8 * 8;
    const std::size_t full = nb / 64, rest = nb % 64;
    const __mmask64 tail = rest ? (~0ULL >> (64 - rest)) : 0;
    // pair8 leaves rows r + {0, 2, 1, 3, 4, 6, 5, 7} in its lanes; this permutation (its own
    // inverse) puts them back in row order, which the selection's tie rule needs.
    const __m512i unpair = _mm512_setr_epi64(0, 2, 1, 3, 4, 6, 5, 7);
    for (std::size_t rb = r0; rb < r1; rb += blk) {
        std::size_t re = r1 - rb < blk ? r1 : rb + blk;
        for (std::size_t i = 0; i < m; ++i) {
            const std::uint8_t* q = Q + i * nb;
            CodeSel& s = sels[i];
            std::size_t r = rb;
            if (nb == 32) {
                // 256-bit codes (the first plane of a two-stage scan): two codes per register,
                // the probe duplicated in both halves.
                const __m512i q2 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)q));
                for (; r + 8 <= re; r += 8) {
                    __m512i w[4];
                    for (int j = 0; j < 4; ++j)
                        w[j] = _mm512_popcnt_epi64(_mm512_xor_si512(q2, _mm512_loadu_si512(G + (r + 2 * j) * 32)));
                    offer8(s, _mm512_permutexvar_epi64(unpair, pair8(w)), r);
                }
            } else if (nb == 64) {
                // d = 512: the probe stays in a register
                const __m512i q0 = _mm512_loadu_si512(q);
                for (; r + 8 <= re; r += 8) {
                    __m512i v[8];
                    for (int j = 0; j < 8; ++j)
                        v[j] = _mm512_popcnt_epi64(_mm512_xor_si512(q0, _mm512_loadu_si512(G + (r + j) * 64)));
                    offer8(s, sum8(v), r);
                }
            } else {
                for (; r + 8 <= re; r += 8) {
                    __m512i v[8];
                    for (int j = 0; j < 8; ++j) v[j] = popcnt_lanes(q, G + (r + j) * nb, full, rest, tail);
                    offer8(s, sum8(v), r);
                }
            }
            for (; r < re; ++r) {
                std::int32_t v = (std::int32_t)_mm512_reduce_add_epi64(popcnt_lanes(q, G + r * nb, full, rest, tail));
                if (v < s.bound) codesel_push(s, v, (int64_t)r);
            }
        }
    }
}

static void hamming_topk(const std::uint8_t* Q, std::size_t m, const std::uint8_t* G, std::size_t r0,
                         std::size_t r1, std::size_t nb, CodeSel* sels) {
    static const bool vpop = cpu_has_avx512_vpopcntdq();
    if (vpop)
        hamming_topk_vpopcnt(Q, m, G, r0, r1, nb, sels);
    else
        hamming_topk_words(Q, m, G, r0, r1, nb, sels);
}

// Two-plane scan with a 256-bit first plane: the first plane two codes per register as in the
// one-plane scan. Admitted rows are only noted (and their second-plane code prefetched) during a
// block; their full distances are taken at the end of the block, by when those scattered lines
// have arrived: reading each at once stalled a one-probe scan on memory latency (2× slower at an
// admission rank of 2048).
PFM_VPOP static void hamming_topk2_vpopcnt(const std::uint8_t* QA, const std::uint8_t* QB, std::size_t m,
                                           const std::uint8_t* GA, const std::uint8_t* GB, std::size_t r0,
                                           std::size_t r1, std::size_t nbb, CodeSel* admit, TopKHeap* heaps) {
    const std::size_t blk = (m > 1 ? 16384u : 256u * 1024u) / 32;
    const std::size_t fullb = nbb / 64, restb = nbb % 64;
    const __mmask64 tailb = restb ? (~0ULL >> (64 - restb)) : 0;
    const __m512i unpair = _mm512_setr_epi64(0, 2, 1, 3, 4, 6, 5, 7);
    std::vector<std::int64_t> pend_r(blk);
    std::vector<std::int32_t> pend_d(blk);
    for (std::size_t rb = r0; rb < r1; rb += blk) {
        std::size_t re = r1 - rb < blk ? r1 : rb + blk;
        for (std::size_t i = 0; i < m; ++i) {
            const std::uint8_t *qa = QA + i * 32, *qb = QB + i * nbb;
            CodeSel& s = admit[i];
            TopKHeap& h = heaps[i];
            const __m512i q2 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)qa));
            std::size_t np = 0;
            auto note = [&](std::size_t row, std::int32_t v) {
                codesel_count(s, v);
                __builtin_prefetch(GB + row * nbb, 0, 0);
                pend_r[np] = (std::int64_t)row;
                pend_d[np++] = v;
            };
            std::size_t r = rb;
            for (; r + 8 <= re; r += 8) {
                __m512i w[4];
                for (int j = 0; j < 4; ++j)
                    w[j] = _mm512_popcnt_epi64(_mm512_xor_si512(q2, _mm512_loadu_si512(GA + (r + 2 * j) * 32)));
                __m512i dist = _mm512_permutexvar_epi64(unpair, pair8(w));
                __mmask8 keep = _mm512_cmplt_epi64_mask(dist, _mm512_set1_epi64(s.bound));
                if (!keep) continue;
                alignas(64) long long dd[8];
                _mm512_store_si512(dd, dist);
                while (keep) {
                    int j = __builtin_ctz(keep);
                    keep &= keep - 1;
                    if (dd[j] < s.bound) note(r + j, (std::int32_t)dd[j]);
                }
            }
            for (; r < re; ++r) {
                std::int32_t v = (std::int32_t)_mm512_reduce_add_epi64(
                    popcnt_lanes(qa, GA + r * 32, 0, 32, (__mmask64)0xFFFFFFFFULL));
                if (v < s.bound) note(r, v);
            }
            // Full distances of the block's admitted rows (in row order, as the heap's ties need).
            for (std::size_t j = 0; j < np; ++j) {
                std::size_t row = (std::size_t)pend_r[j];
                std::int32_t vb = (std::int32_t)_mm512_reduce_add_epi64(popcnt_lanes(qb, GB + row * nbb, fullb, restb, tailb));
                float sc = -(float)(pend_d[j] + vb);
                if (sc > heap_thresh(h)) heap_push(h, sc, (int64_t)row);
            }
        }
    }
}

static void hamming_topk2(const std::uint8_t* QA, const std::uint8_t* QB, std::size_t m, const std::uint8_t* GA,
                          const std::uint8_t* GB, std::size_t r0, std::size_t r1, std::size_t nba, std::size_t nbb,
                          CodeSel* admit, TopKHeap* heaps) {
    static const bool vpop = cpu_has_avx512_vpopcntdq();
    if (vpop && nba == 32 && nbb > 0)
        hamming_topk2_vpopcnt(QA, QB, m, GA, GB, r0, r1, nbb, admit, heaps);
    else
        hamming_topk2_words(QA, QB, m, GA, GB, r0, r1, nba, nbb, admit, heaps);
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
    avx512_k::hamming_topk2,
};

}  // namespace pfm
