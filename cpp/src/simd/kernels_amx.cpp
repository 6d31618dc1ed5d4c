// AMX-BF16 first pass of a large-batch top-k (Intel Sapphire Rapids and later). Compiled with
// -mamx-tile -mamx-bf16 (+ AVX-512 BF16 for the conversions) for this file only, and only where the
// compiler knows them (CMakeLists.txt); called only when cpu_has_amx_bf16() (cpuid, XCR0 and the
// Linux tile permission, detect.cpp) and amx_active() (scoring.cpp).
//
// Same contract as topk_bf16 in kernels_avx512.cpp: every (probe, row) gets an approximate score a
// with a proven bound e on |a - exact| and is offered to the probe's ApproxSel; the exact float32
// re-score in scoring.cpp then decides. The bound is the one derived there (bf16_error_scale):
//  - the inputs are the same bf16 numbers: each float rounded to nearest even (VCVTNEPS2BF16 for
//    the probes, VCVTNE2PS2BF16 for the gallery rows: the same rounding, Intel SDM vol. 2),
//    the norms summed in float32, the block's largest row norm (|g| ≤ gmax);
//  - the accumulation: TDPBF16PS is specified (Intel SDM vol. 2, TDPBF16PS operation) as, for every
//    output element, tmp += a[2k]·b[2k]; tmp += a[2k+1]·b[2k+1] over k in order, each product of two
//    bf16 numbers exact in float32 (8 + 8 significant bits ≤ 24) and each addition rounded to
//    nearest even in float32. The C tile accumulates over all d/32 tile steps, so each score is one
//    chain of d (d + 1 when d is odd) float32 additions onto 0, exactly VDPBF16PS's chain per lane.
//    A recursive sum of products x_i with at most h roundings on any term's path has error at most
//    γ_h Σ|x_i| ≤ 1.01·h·2^-24 Σ|x_i| (Higham, Accuracy and Stability of Numerical Algorithms, 2nd
//    ed., §4.2, eq. 4.3 for any summation order); h ≤ d + 2 here as on AVX-512, and an
//    implementation that rounds less often (fused pairs) only lowers h, so the AVX-512 term
//    (d + 2)·2^-24 Σ|q_i g_i| covers the AMX pass too. The zero padding (probes to 32 rows, the
//    pairs to a multiple of 16) adds exact zeros and changes no sum.
//  - TDPBF16PS flushes denormal inputs and outputs to zero: each flush moves a sum by < 2^-126, at
//    most d + 2 times, far below the 1e-30 absolute slack the bound already carries (d < 10^7).
#include <immintrin.h>

#include "transpose16_avx512.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "table.hpp"

namespace pfm {
namespace amx_k {
using amx_detail::transpose16;

#include "heap_impl.inc"
#include "approx_impl.inc"

static inline std::size_t round_up(std::size_t x, std::size_t m) { return (x + m - 1) / m * m; }

constexpr int NR = 32;        // gallery rows per panel: two B tiles of 16 columns
constexpr int MB = 32;        // probes per step: two A tiles of 16 rows
constexpr int KW = 16;        // 32-bit words (bf16 pairs) per tile step: 64 bytes per tile row
constexpr std::size_t PACK_BYTES = 512 * 1024;  // packed bf16 block, within the 2 MB L2

// e = scale · |q| · |g| (the same expression as kernels_avx512.cpp's bf16_error_scale).
static inline float bf16_error_scale(std::size_t d) {
    const double u = std::ldexp(1.0, -24);
    const double c = std::ldexp(1.0, -7) + std::ldexp(1.0, -16) + (double)(2 * d + 16) * u;
    return (float)(c * (1.0 + 2.0 * (double)(d + 16) * u) * (1.0 + 8 * u));
}


// Rows [r, r + rows) of G as bf16 panels of NR rows, each panel in the order the tiles load it:
// for every step s of KW pairs, two B tiles (rows 0-15, then 16-31) of 16 pair-rows × 16 columns,
// 1 KB each, contiguous (panel[(2s + h)·256 + t·16 + c] = pair s·KW + t of row 16h + c; zeros
// past d and for rows past `valid`); returns the largest row norm. Sixteen rows at a time: 32
// floats of each rounded to bf16 (VCVTNE2PS2BF16, nearest even like VCVTNEPS2BF16) into one
// vector of 16 pairs, then a 16 × 16 word transpose gives one B tile.
static float pack_block(const float* G, std::size_t r, std::size_t rows, std::size_t valid, std::size_t d,
                        std::size_t dpp, std::uint32_t* pack) {
    float gmax2 = 0.0f;
    const std::size_t steps = dpp / KW;
    for (std::size_t q0 = 0; q0 < rows; q0 += 16) {
        std::uint32_t* out = pack + (q0 / NR) * NR * dpp + ((q0 % NR) / 16) * 256;
        const float* src[16];
        bool live[16];
        for (int j = 0; j < 16; ++j) {
            live[j] = q0 + j < valid;
            src[j] = G + (r + (live[j] ? q0 + j : 0)) * d;
        }
        __m512 ss[16];
        for (int j = 0; j < 16; ++j) ss[j] = _mm512_setzero_ps();
        for (std::size_t s = 0; s < steps; ++s) {
            const std::size_t p = 32 * s;
            __m512i v[16];
            const __mmask16 k0 = p >= d ? 0 : (d - p >= 16 ? 0xFFFF : (__mmask16)((1u << (d - p)) - 1u));
            const __mmask16 k1 = p + 16 >= d ? 0 : (d - p - 16 >= 16 ? 0xFFFF : (__mmask16)((1u << (d - p - 16)) - 1u));
            for (int j = 0; j < 16; ++j) {
                if (!live[j]) {
                    v[j] = _mm512_setzero_si512();
                    continue;
                }
                const __m512 lo = _mm512_maskz_loadu_ps(k0, src[j] + p), hi = _mm512_maskz_loadu_ps(k1, src[j] + p + 16);
                ss[j] = _mm512_fmadd_ps(lo, lo, ss[j]);
                ss[j] = _mm512_fmadd_ps(hi, hi, ss[j]);
                v[j] = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
            }
            transpose16(v);
            std::uint32_t* tile = out + 512 * s;
            for (int t = 0; t < 16; ++t) _mm512_storeu_si512(tile + 16 * t, v[t]);
        }
        for (int j = 0; j < 16; ++j)
            if (live[j]) {
                const float n2 = _mm512_reduce_add_ps(ss[j]);
                gmax2 = n2 > gmax2 ? n2 : gmax2;  // a NaN norm never enters (its row's scores flag `bad`)
            }
    }
    return std::sqrt(gmax2);
}

// Tile configuration (palette 1): tiles 0-3 the 2×2 C blocks (16 × 16 float32), 4-5 the A tiles
// (16 probes × 16 pairs), 6-7 the B tiles (16 pairs × 16 rows, the pair of row n at column n).
struct alignas(64) TileConfig {
    std::uint8_t palette_id = 1;
    std::uint8_t start_row = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
};

static void configure_tiles() {
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

// Scores of 32 (padded) probes × 32 packed rows into c (32 × 32 float32, row = probe). qt: the
// probes' tiles in load order (qt[(2s + h)·256 + i·16 + w] = pair s·KW + w of probe 16h + i).
static inline void tile_32x32(const std::uint32_t* qt, std::size_t dpp, const std::uint32_t* panel, float* c) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (std::size_t s = 0; s < dpp / KW; ++s) {
        _tile_loadd(4, qt + 512 * s, 64);
        _tile_loadd(6, panel + 512 * s, 64);
        _tile_loadd(5, qt + 512 * s + 256, 64);
        _tile_loadd(7, panel + 512 * s + 256, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, NR * 4);
    _tile_stored(1, c + 16, NR * 4);
    _tile_stored(2, c + 16 * NR, NR * 4);
    _tile_stored(3, c + 16 * NR + 16, NR * 4);
}

static inline unsigned bad_mask(__m512 a) {
    __m512 z = _mm512_mul_ps(a, _mm512_setzero_ps());
    return (unsigned)_mm512_cmp_ps_mask(z, z, _CMP_UNORD_Q);
}

}  // namespace amx_k

void topk_bf16_amx(const std::uint32_t* QB, const float* qn, std::size_t m, const float* G, std::size_t r0,
                   std::size_t r1, std::size_t d, ApproxSel* sels, int* bad) {
    using namespace amx_k;
    const std::size_t dp = (d + 1) / 2, dpp = round_up(dp, KW), mp = round_up(m, MB);
    // Probes padded to whole tiles: mp rows of dpp pairs, zeros past each probe and past m.
    std::vector<std::uint32_t> qp(mp * dpp, 0u);
    for (std::size_t i = 0; i < m; ++i) {
        std::uint32_t* dst = qp.data() + (i / MB) * MB * dpp + ((i % MB) / 16) * 256 + (i % 16) * 16;
        for (std::size_t p = 0; p < dp; ++p) dst[(p / KW) * 512 + p % KW] = QB[i * dp + p];
    }
    std::size_t nc = PACK_BYTES / (dpp * 4) / NR * NR;
    if (nc < (std::size_t)NR) nc = NR;
    std::vector<std::uint32_t> pack(nc * dpp + 16);
    alignas(64) float c[MB * NR];
    std::vector<float> e(m);
    const float scale = bf16_error_scale(d);
    unsigned badm = 0;
    configure_tiles();
    for (std::size_t r = r0; r < r1; r += nc) {
        const std::size_t valid = r1 - r < nc ? r1 - r : nc, rows = round_up(valid, NR);
        const float gmax = pack_block(G, r, rows, valid, d, dpp, pack.data());
        for (std::size_t i = 0; i < m; ++i) {
            e[i] = scale * qn[i] * gmax + 1e-30f;
            // as in kernels_avx512.cpp: an overflowed norm times a zero block is NaN; no bound then
            if (!(e[i] <= std::numeric_limits<float>::max())) e[i] = std::numeric_limits<float>::infinity();
        }
        for (std::size_t i0 = 0; i0 < m; i0 += MB) {
            const std::size_t mr = m - i0 < (std::size_t)MB ? m - i0 : MB;
            for (std::size_t p0 = 0; p0 < rows; p0 += NR) {
                const std::size_t v = valid - p0 < (std::size_t)NR ? valid - p0 : NR;
                tile_32x32(qp.data() + i0 * dpp, dpp, pack.data() + p0 * dpp, c);
                for (std::size_t i = 0; i < mr; ++i) {
                    ApproxSel& s = sels[i0 + i];
                    for (int h = 0; h < 2; ++h) {
                        const std::size_t base = 16 * h;
                        if (base >= v) break;
                        const unsigned lanes = v - base >= 16 ? 0xFFFFu : ((1u << (v - base)) - 1u);
                        const __m512 acc = _mm512_load_ps(c + i * NR + base);
                        badm |= bad_mask(acc) & lanes;
                        // a candidate while a + e >= the k-th best lower bound (as topk_bf16)
                        const float thr = heap_thresh(s.lower) - e[i0 + i];
                        unsigned mk = (unsigned)_mm512_cmp_ps_mask(acc, _mm512_set1_ps(thr), _CMP_GE_OQ) & lanes;
                        while (mk) {
                            const int j = __builtin_ctz(mk);
                            mk &= mk - 1;
                            approx_push(s, c[i * NR + base + j], e[i0 + i], (std::int64_t)(r + p0 + base + j));
                        }
                    }
                }
            }
        }
    }
    _tile_release();
    if (badm) *bad = 1;
}

}  // namespace pfm
