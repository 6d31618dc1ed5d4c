// AVX-512 (F, BW, DQ, VL) kernels, compiled with those flags for this file only. The Hamming scan
// uses VPOPCNTDQ through a function-level target attribute, called only when the CPU has it.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <cstring>
#include <vector>

#include "table.hpp"

namespace pfm {


namespace avx512_k {

#include "heap_impl.inc"
#include "codesel_impl.inc"
#include "approx_impl.inc"
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

// Code sums of four registers holding two 256-bit codes each (rows 2j in 64-bit lanes 0-3 of w[j],
// rows 2j+1 in lanes 4-7): lane r of the result is row r's sum, r = 0 … 7.
PFM_VPOP static inline __m512i pair8(const __m512i* w) {
    __m512i t0 = _mm512_add_epi64(_mm512_unpacklo_epi64(w[0], w[1]), _mm512_unpackhi_epi64(w[0], w[1]));
    __m512i t1 = _mm512_add_epi64(_mm512_unpacklo_epi64(w[2], w[3]), _mm512_unpackhi_epi64(w[2], w[3]));
    // t: 128-bit lane L holds (partial of w[2j], partial of w[2j+1]); lanes 0,1 are code A, 2,3 code B.
    __m512i s = _mm512_add_epi64(_mm512_shuffle_i64x2(t0, t1, 0x88), _mm512_shuffle_i64x2(t0, t1, 0xDD));
    // s holds rows {0, 2, 1, 3, 4, 6, 5, 7}; the permutation is its own inverse. Row order matters:
    // the selections' tie rule expects rows offered in increasing order.
    return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 1, 3, 4, 6, 5, 7), s);
}

// Hamming distances of eight consecutive 256-bit codes (at g) to the probe q2 (256 bits, duplicated).
PFM_VPOP static inline __m512i dist8_256(__m512i q2, const std::uint8_t* g) {
    __m512i w[4];
    for (int j = 0; j < 4; ++j) w[j] = _mm512_popcnt_epi64(_mm512_xor_si512(q2, _mm512_loadu_si512(g + 64 * j)));
    return pair8(w);
}

// The same for eight listed rows of a plane of 256-bit codes.
PFM_VPOP static inline __m512i dist8_256_rows(__m512i q2, const std::uint8_t* G, const std::int64_t* rows) {
    __m512i w[4];
    for (int j = 0; j < 4; ++j) {
        __m512i g2 = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(G + (std::size_t)rows[2 * j] * 32)));
        g2 = _mm512_inserti64x4(g2, _mm256_loadu_si256((const __m256i*)(G + (std::size_t)rows[2 * j + 1] * 32)), 1);
        w[j] = _mm512_popcnt_epi64(_mm512_xor_si512(q2, g2));
    }
    return pair8(w);
}

PFM_VPOP static inline __m512i broadcast_256(const std::uint8_t* q) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)q));
}

// Hands take(distance, row) each of rows r … r+7 whose distance is below the selection's bound
// (re-read after every row: taking one may lower it).
template <class Take>
PFM_VPOP static inline void offer8(const CodeSel& s, __m512i dist, std::size_t r, Take&& take) {
    __mmask8 keep = _mm512_cmplt_epi64_mask(dist, _mm512_set1_epi64(s.bound));
    if (!keep) return;
    alignas(64) long long dd[8];
    _mm512_store_si512(dd, dist);
    while (keep) {
        int j = __builtin_ctz(keep);
        keep &= keep - 1;
        if (dd[j] < s.bound) take((std::int32_t)dd[j], r + j);
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
    for (std::size_t rb = r0; rb < r1; rb += blk) {
        std::size_t re = r1 - rb < blk ? r1 : rb + blk;
        for (std::size_t i = 0; i < m; ++i) {
            const std::uint8_t* q = Q + i * nb;
            CodeSel& s = sels[i];
            auto push = [&s](std::int32_t v, std::size_t row) { codesel_push(s, v, (int64_t)row); };
            std::size_t r = rb;
            if (nb == 32) {  // the first plane of a two-plane scan: two codes per register
                const __m512i q2 = broadcast_256(q);
                for (; r + 8 <= re; r += 8) offer8(s, dist8_256(q2, G + r * 32), r, push);
            } else if (nb == 64) {  // d = 512: the probe stays in a register
                const __m512i q0 = _mm512_loadu_si512(q);
                for (; r + 8 <= re; r += 8) {
                    __m512i v[8];
                    for (int j = 0; j < 8; ++j)
                        v[j] = _mm512_popcnt_epi64(_mm512_xor_si512(q0, _mm512_loadu_si512(G + (r + j) * 64)));
                    offer8(s, sum8(v), r, push);
                }
            } else {
                for (; r + 8 <= re; r += 8) {
                    __m512i v[8];
                    for (int j = 0; j < 8; ++j) v[j] = popcnt_lanes(q, G + (r + j) * nb, full, rest, tail);
                    offer8(s, sum8(v), r, push);
                }
            }
            for (; r < re; ++r) {
                std::int32_t v = (std::int32_t)_mm512_reduce_add_epi64(popcnt_lanes(q, G + r * nb, full, rest, tail));
                if (v < s.bound) push(v, r);
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

// ---------------------------------------------------------------------------------------------
// bf16 first pass of a large-batch top-k (AVX512_BF16, through a function-level target, called only
// when the CPU has it). Gallery blocks are packed as bf16 pairs in panels of 32 rows
// (panel[p*32 + j] = row j's dims 2p, 2p+1) and VDPBF16PS does 32 multiply-adds per instruction,
// twice the f32 FMA's. Each approximate score a comes with a bound e on |a - exact|: bf16 keeps 8
// significant bits, so rounding to nearest moves a value by at most 2^-8 of itself, and rounding
// both vectors changes every product by at most ((1 + 2^-8)^2 - 1)|q_i g_i| = (2^-7 + 2^-16)|q_i g_i|
// (the bound once said 2^-8 + 2^-18, half of that: tests/test_bf16_bound.py builds inputs that
// reach it), the f32 accumulation
// of 2 roundings per pair adds (d + 2)·2^-24 Σ|q_i g_i|, the exact re-rank's own f32 sum d·2^-24,
// and Σ|q_i g_i| <= |q||g| (Cauchy-Schwarz). |g| is bounded per block by its largest row norm.

#define PFM_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// e = bf16_error_scale(d) · |q| · |g|, with both norms from float32 sums of squares (each within
// (d + 16)·2^-24 relative of exact, hence the last factor).
static inline float bf16_error_scale(std::size_t d) {
    const double u = std::ldexp(1.0, -24);
    const double c = std::ldexp(1.0, -7) + std::ldexp(1.0, -16) + (double)(2 * d + 16) * u;
    return (float)(c * (1.0 + 2.0 * (double)(d + 16) * u) * (1.0 + 8 * u));
}

// One row as bf16 pairs (ceil(d/2) words; the last pair zero-padded when d is odd); returns |row|²
// summed in float32 (within (d + 16)·2^-24 of exact, which bf16_error_scale allows for).
PFM_BF16 static inline float bf16_row(const float* x, std::size_t d, std::uint32_t* out) {
    __m512 ss = _mm512_setzero_ps();
    std::uint16_t* o = reinterpret_cast<std::uint16_t*>(out);
    std::size_t p = 0;
    for (; p + 16 <= d; p += 16) {
        __m512 v = _mm512_loadu_ps(x + p);
        ss = _mm512_fmadd_ps(v, v, ss);
        __m256bh h = _mm512_cvtneps_pbh(v);
        _mm256_storeu_si256((__m256i*)(o + p), (__m256i)h);
    }
    if (p < d) {
        const int n = (int)(d - p);
        __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), x + p);
        ss = _mm512_fmadd_ps(v, v, ss);
        __m256bh h = _mm512_cvtneps_pbh(v);
        _mm256_mask_storeu_epi16(o + p, (__mmask16)((1u << n) - 1u), (__m256i)h);
    }
    if (d & 1) o[d] = 0;
    return _mm512_reduce_add_ps(ss);
}

PFM_BF16 static void bf16_convert(const float* X, std::size_t n, std::size_t d, std::uint32_t* out, float* norms) {
    const std::size_t dp = (d + 1) / 2;
    for (std::size_t r = 0; r < n; ++r) norms[r] = std::sqrt(bf16_row(X + r * d, d, out + r * dp));
}

// Packs rows [r, r + rows) of G into bf16 panels (zero rows past `valid`); returns the largest row norm.
PFM_BF16 static float bf16_pack_block(const float* G, std::size_t r, std::size_t rows, std::size_t valid,
                                      std::size_t d, std::uint32_t* pack, std::uint32_t* tmp) {
    const std::size_t dp = (d + 1) / 2;
    float gmax2 = 0.0f;
    for (std::size_t p0 = 0; p0 < rows; p0 += NR) {
        std::uint32_t* panel = pack + p0 * dp;
        for (int j = 0; j < NR; ++j) {
            std::size_t row = p0 + j;
            if (row < valid) {
                float n2 = bf16_row(G + (r + row) * d, d, tmp);
                gmax2 = n2 > gmax2 ? n2 : gmax2;
                for (std::size_t p = 0; p < dp; ++p) panel[p * NR + j] = tmp[p];
            } else {
                for (std::size_t p = 0; p < dp; ++p) panel[p * NR + j] = 0u;
            }
        }
    }
    return std::sqrt(gmax2);
}

// MR probes × 32 packed rows; the accumulators stay in registers (written out once, at the end).
template <int MR>
PFM_BF16 static inline __attribute__((always_inline)) void micro_bf16(const std::uint32_t* const* q,
                                                                     const std::uint32_t* panel, std::size_t dp,
                                                                     __m512* out) {
    __m512 acc[MR * 2];
    for (int a = 0; a < MR * 2; ++a) acc[a] = _mm512_setzero_ps();
    const std::uint32_t* qq[MR];
    for (int i = 0; i < MR; ++i) qq[i] = q[i];
    for (std::size_t p = 0; p < dp; ++p) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + p * NR);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + p * NR + 16);
#pragma GCC unroll 6
        for (int i = 0; i < MR; ++i) {
            const __m512bh x = (__m512bh)_mm512_set1_epi32((int)qq[i][p]);
            acc[2 * i] = _mm512_dpbf16_ps(acc[2 * i], x, b0);
            acc[2 * i + 1] = _mm512_dpbf16_ps(acc[2 * i + 1], x, b1);
        }
    }
#pragma GCC unroll 12
    for (int a = 0; a < MR * 2; ++a) out[a] = acc[a];
}

template <int MR>
PFM_BF16 static inline void tile_bf16(const std::uint32_t* const* q, const std::uint32_t* panel, std::size_t dp,
                                      std::size_t row0, std::size_t valid, ApproxSel* sel, const float* e,
                                      unsigned* badm) {
    __m512 acc[MR * 2];
    micro_bf16<MR>(q, panel, dp, acc);
    for (int i = 0; i < MR; ++i) {
        for (int v = 0; v < 2; ++v) {
            std::size_t base = v * 16;
            if (base >= valid) break;
            unsigned lanes = valid - base >= 16 ? 0xFFFFu : ((1u << (valid - base)) - 1u);
            *badm |= V::bad_mask(acc[2 * i + v]) & lanes;
            // a candidate while a + e >= the k-th best lower bound
            const float thr = heap_thresh(sel[i].lower) - e[i];
            unsigned mk = (unsigned)_mm512_cmp_ps_mask(acc[2 * i + v], _mm512_set1_ps(thr), _CMP_GE_OQ) & lanes;
            if (mk) {
                alignas(64) float tmp[16];
                _mm512_store_ps(tmp, acc[2 * i + v]);
                while (mk) {
                    int j = __builtin_ctz(mk);
                    mk &= mk - 1;
                    approx_push(sel[i], tmp[j], e[i], (int64_t)(row0 + base + j));
                }
            }
        }
    }
}

PFM_BF16 static void tile_bf16_tail(std::size_t mr, const std::uint32_t* const* q, const std::uint32_t* panel,
                                    std::size_t dp, std::size_t row0, std::size_t valid, ApproxSel* sel,
                                    const float* e, unsigned* badm) {
    switch (mr) {
        case 1: tile_bf16<1>(q, panel, dp, row0, valid, sel, e, badm); break;
        case 2: tile_bf16<2>(q, panel, dp, row0, valid, sel, e, badm); break;
        case 3: tile_bf16<3>(q, panel, dp, row0, valid, sel, e, badm); break;
        case 4: tile_bf16<4>(q, panel, dp, row0, valid, sel, e, badm); break;
        default: tile_bf16<5>(q, panel, dp, row0, valid, sel, e, badm); break;
    }
}

PFM_BF16 static void topk_bf16(const std::uint32_t* QB, const float* qn, std::size_t m, const float* G,
                                    std::size_t r0, std::size_t r1, std::size_t d, ApproxSel* sels, int* bad,
                                    float* pack_f) {
    const std::size_t dp = (d + 1) / 2;
    // rows per block: the f32 block's bytes hold twice the rows in bf16
    std::size_t nc = block_rows(d) * d / dp / NR * NR;
    if (nc < (std::size_t)NR) nc = NR;
    std::uint32_t* pack = reinterpret_cast<std::uint32_t*>(pack_f);
    std::vector<std::uint32_t> tmp(dp + 1);
    std::vector<float> e(m);
    const float scale = bf16_error_scale(d);
    unsigned badm = 0;
    for (std::size_t r = r0; r < r1; r += nc) {
        std::size_t valid = r1 - r < nc ? r1 - r : nc;
        std::size_t rows = round_up(valid, NR);
        const float gmax = bf16_pack_block(G, r, rows, valid, d, pack, tmp.data());
        for (std::size_t i = 0; i < m; ++i) {
            e[i] = scale * qn[i] * gmax + 1e-30f;
            // A norm that overflowed float (|q| >= ~1.8e19) times a block of zero rows is NaN, and a
            // NaN bound admitted no row at all (found by cpp/tests/fuzz_core.cpp): no bound then,
            // every row stays a candidate and the exact pass decides.
            if (!(e[i] <= std::numeric_limits<float>::max())) e[i] = std::numeric_limits<float>::infinity();
        }
        std::size_t i = 0;
        for (; i + MR_MAX <= m; i += MR_MAX) {
            const std::uint32_t* q[MR_MAX];
            for (int a = 0; a < MR_MAX; ++a) q[a] = QB + (i + a) * dp;
            for (std::size_t p0 = 0; p0 < rows; p0 += NR) {
                std::size_t v = valid - p0 < (std::size_t)NR ? valid - p0 : NR;
                tile_bf16<MR_MAX>(q, pack + p0 * dp, dp, r + p0, v, sels + i, e.data() + i, &badm);
            }
        }
        if (i < m) {
            const std::size_t mr = m - i;
            const std::uint32_t* q[MR_MAX];
            for (std::size_t a = 0; a < mr; ++a) q[a] = QB + (i + a) * dp;
            for (std::size_t p0 = 0; p0 < rows; p0 += NR) {
                std::size_t v = valid - p0 < (std::size_t)NR ? valid - p0 : NR;
                tile_bf16_tail(mr, q, pack + p0 * dp, dp, r + p0, v, sels + i, e.data() + i, &badm);
            }
        }
    }
    if (badm) *bad = 1;
}


// Batched scans transpose each block of 256-bit codes once into groups of eight rows, word-major
// (il[32g + 8w + j] = 64-bit word w of row 8g + j), so that every probe then gets eight rows'
// distances from four XOR + VPOPCNTQ and three adds, lanes already in row order. Read in place, a
// register holds two rows and eight distances cost seven lane shuffles (pair8) on top: on Intel
// both VPOPCNTQ and the shuffles issue on port 5 only, so the shuffles were most of a batch's scan.
// One transpose per block and part is repaid from about eight probes on.
static constexpr std::size_t kInterleaveMinProbes = 8;

// Transposes `groups` groups of eight consecutive 256-bit codes at G into il (32 words a group).
PFM_VPOP static inline void interleave_256(const std::uint8_t* G, std::size_t groups, std::uint64_t* il) {
    const __m512i lo = _mm512_setr_epi64(0, 4, 8, 12, 1, 5, 9, 13);
    const __m512i hi = _mm512_setr_epi64(2, 6, 10, 14, 3, 7, 11, 15);
    for (std::size_t g = 0; g < groups; ++g, G += 256, il += 32) {
        // A = rows 0,1 (words 0-3 each); B = rows 2,3; C = rows 4,5; D = rows 6,7
        __m512i A = _mm512_loadu_si512(G), B = _mm512_loadu_si512(G + 64);
        __m512i C = _mm512_loadu_si512(G + 128), D = _mm512_loadu_si512(G + 192);
        __m512i ab01 = _mm512_permutex2var_epi64(A, lo, B);  // w0 of rows 0-3, w1 of rows 0-3
        __m512i ab23 = _mm512_permutex2var_epi64(A, hi, B);  // w2, w3 of rows 0-3
        __m512i cd01 = _mm512_permutex2var_epi64(C, lo, D);
        __m512i cd23 = _mm512_permutex2var_epi64(C, hi, D);
        _mm512_storeu_si512(il, _mm512_shuffle_i64x2(ab01, cd01, 0x44));       // w0 of rows 0-7
        _mm512_storeu_si512(il + 8, _mm512_shuffle_i64x2(ab01, cd01, 0xEE));   // w1
        _mm512_storeu_si512(il + 16, _mm512_shuffle_i64x2(ab23, cd23, 0x44));  // w2
        _mm512_storeu_si512(il + 24, _mm512_shuffle_i64x2(ab23, cd23, 0xEE));  // w3
    }
}

// Distances of the eight rows of one interleaved group to a probe (q[w] = its word w, broadcast).
PFM_VPOP static inline __m512i dist8_il(const __m512i* q, const std::uint64_t* il) {
    __m512i a = _mm512_popcnt_epi64(_mm512_xor_si512(q[0], _mm512_loadu_si512(il)));
    __m512i b = _mm512_popcnt_epi64(_mm512_xor_si512(q[1], _mm512_loadu_si512(il + 8)));
    __m512i c = _mm512_popcnt_epi64(_mm512_xor_si512(q[2], _mm512_loadu_si512(il + 16)));
    __m512i d = _mm512_popcnt_epi64(_mm512_xor_si512(q[3], _mm512_loadu_si512(il + 24)));
    return _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d));
}

PFM_VPOP static inline void broadcast_words_256(const std::uint8_t* q, __m512i* out) {
    for (int w = 0; w < 4; ++w) {
        std::uint64_t x;
        std::memcpy(&x, q + 8 * w, 8);
        out[w] = _mm512_set1_epi64((long long)x);
    }
}

// Two-plane scan with a 256-bit first plane: the first plane two codes per register as in the
// one-plane scan (interleaved as above for batches). Admitted rows are only noted (and their second-plane code prefetched) during a
// block; their full distances are taken at the end of the block, by when those scattered lines
// have arrived: reading each at once stalled a one-probe scan on memory latency (2× slower at an
// admission rank of 2048).
PFM_VPOP static void hamming_topk2_vpopcnt(const std::uint8_t* QA, const std::uint8_t* QB, std::size_t m,
                                           const std::uint8_t* GA, const std::uint8_t* GB, std::size_t r0,
                                           std::size_t r1, std::size_t nbb, CodeSel* admit, TopKHeap* heaps) {
    const std::size_t blk = (m > 1 ? 16384u : 256u * 1024u) / 32;
    const std::size_t fullb = nbb / 64, restb = nbb % 64;
    const __mmask64 tailb = restb ? (~0ULL >> (64 - restb)) : 0;
    std::vector<std::int64_t> pend_r(blk);
    std::vector<std::int32_t> pend_d(blk);
    const bool inter = m >= kInterleaveMinProbes;
    std::vector<std::uint64_t> il(inter ? blk * 4 : 0);
    for (std::size_t rb = r0; rb < r1; rb += blk) {
        std::size_t re = r1 - rb < blk ? r1 : rb + blk;
        const std::size_t groups = inter ? (re - rb) / 8 : 0;
        if (inter) {
            interleave_256(GA + rb * 32, groups, il.data());
            // The block's second-plane codes, to L2 once: a batch's probes admit rows all over the
            // block, and each first read of such a row otherwise waited on memory (~14% of a
            // 1024-probe scan at 1M rows, sampled with perf).
            const char* b0 = (const char*)(GB + rb * nbb);
            for (std::size_t off = 0; off < (re - rb) * nbb; off += 64) _mm_prefetch(b0 + off, _MM_HINT_T1);
        }
        for (std::size_t i = 0; i < m; ++i) {
            const std::uint8_t *qa = QA + i * 32, *qb = QB + i * nbb;
            CodeSel& s = admit[i];
            TopKHeap& h = heaps[i];
            std::size_t np = 0;
            auto note = [&](std::int32_t v, std::size_t row) {
                codesel_count(s, v);
                __builtin_prefetch(GB + row * nbb, 0, 0);
                pend_r[np] = (std::int64_t)row;
                pend_d[np++] = v;
            };
            std::size_t r = rb;
            if (inter) {
                __m512i qw[4];
                broadcast_words_256(qa, qw);
                for (std::size_t g = 0; g < groups; ++g, r += 8) offer8(s, dist8_il(qw, il.data() + 32 * g), r, note);
            } else {
                const __m512i q2 = broadcast_256(qa);
                for (; r + 8 <= re; r += 8) offer8(s, dist8_256(q2, GA + r * 32), r, note);
            }
            for (; r < re; ++r) {
                std::int32_t v = (std::int32_t)_mm512_reduce_add_epi64(
                    popcnt_lanes(qa, GA + r * 32, 0, 32, (__mmask64)0xFFFFFFFFULL));
                if (v < s.bound) note(v, r);
            }
            // Full distances of the block's admitted rows (in row order, as the heap's ties need):
            // eight at a time when the second plane is 256 bits, like the first plane's scan.
            std::size_t j = 0;
            if (nbb == 32) {
                const __m512i qb2 = broadcast_256(qb);
                for (; j + 8 <= np; j += 8) {
                    __m512i tot = _mm512_add_epi64(
                        dist8_256_rows(qb2, GB, pend_r.data() + j),
                        _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i*)(pend_d.data() + j))));
                    float t = heap_thresh(h);
                    __mmask8 keep = t == -__builtin_inff()
                                        ? (__mmask8)0xFF
                                        : _mm512_cmplt_epi64_mask(tot, _mm512_set1_epi64((long long)(-t)));
                    if (!keep) continue;
                    alignas(64) long long tt[8];
                    _mm512_store_si512(tt, tot);
                    while (keep) {
                        int l = __builtin_ctz(keep);
                        keep &= keep - 1;
                        float sc = -(float)tt[l];
                        if (sc > heap_thresh(h)) heap_push(h, sc, (int64_t)pend_r[j + l]);
                    }
                }
            }
            for (; j < np; ++j) {
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
const KernelTable kernel_table_avx512 = {
    .level = SimdLevel::avx512,
    .name = "avx512",
    .dot = avx512_k::dot,
    .dot3 = avx512_k::dot3,
    .topk_stream = avx512_k::topk_stream,
    .topk_gemm = avx512_k::topk_gemm,
    .scores_stream = avx512_k::scores_stream,
    .scores_gemm = avx512_k::scores_gemm,
    .pack_floats = avx512_k::pack_floats,
    .hamming_topk = avx512_k::hamming_topk,
    .dot_masked = avx512_k::dot_masked,
    .topk_bf16 = avx512_k::topk_bf16,
    .bf16_convert = avx512_k::bf16_convert,
    .hamming_topk2 = avx512_k::hamming_topk2,
    .sum4 = avx512_k::sum4,
};

}  // namespace pfm
