// AMX-INT8 block kernel of the int8 compact templates (Intel Sapphire Rapids and later). Compiled
// with -mamx-tile -mamx-int8 (+ AVX-512 for the packing) for this file only, and only where the
// compiler knows them (CMakeLists.txt); called only when compact_amx_int8_active() (scoring.cpp:
// compiled, AMX wanted, the avx512 level active, cpuid + XCR0 + the Linux tile permission,
// detect.cpp) and for blocks of at least kAmxMinProbes probes (compact_table.cpp).
//
// Same contract as every int8_dots (compact_table.hpp): exact integer dots Σ q_j·g_j. TDPBSSD
// multiplies signed by signed bytes and adds each group of four products to the int32 element
// (Intel SDM vol. 2, TDPBSSD operation: DPBD(c, x, y) = c + x.byte[0]·y.byte[0] + … + x.byte[3]·
// y.byte[3], 32-bit wrap-around arithmetic). Every product is ≤ 128·128 = 2^14 in magnitude, so
// every partial sum of a stride ≤ 65536 stays below 2^30: no wrap happens and the result is the
// exact integer, the same number the VNNI and serial kernels return — the scaling, error bound,
// selection and float32 re-score downstream (compact.cpp) are therefore unchanged, bit for bit.
#include <immintrin.h>

#include "transpose16_avx512.hpp"

#include <cstdint>
#include <cstring>
#include <vector>

#include "compact_table.hpp"

namespace pfm {
namespace compact_amx_k {
using amx_detail::transpose16;

constexpr std::size_t NR = 32;                      // gallery rows per panel: two B tiles of 16
constexpr std::size_t MB = 32;                      // probes per step: two A tiles of 16
constexpr std::size_t kBlockBytes = 256 * 1024;     // packed codes per block, within L2

static inline std::size_t round_up(std::size_t x, std::size_t m) { return (x + m - 1) / m * m; }


// Rows [r, r + rows) of G (int8, `stride` bytes per row) packed in the order the B tiles load them:
// panel of NR rows, then per 64-byte step s two tiles (rows 0-15, 16-31) of 16 tile rows × 64 bytes,
// tile row t holding bytes 4t … 4t + 3 of the step for each of the 16 gallery rows (the "VNNI"
// layout TDPBSSD reads B in). Rows past `valid` are zeros.
static void pack_block(const std::int8_t* G, std::size_t r, std::size_t rows, std::size_t valid, std::size_t stride,
                       std::int8_t* pack) {
    const std::size_t steps = stride / 64;
    for (std::size_t q0 = 0; q0 < rows; q0 += 16) {
        std::int8_t* out = pack + (q0 / NR) * NR * stride + ((q0 % NR) / 16) * 1024;
        for (std::size_t s = 0; s < steps; ++s) {
            __m512i v[16];
            for (std::size_t j = 0; j < 16; ++j)
                v[j] = q0 + j < valid ? _mm512_loadu_si512(G + (r + q0 + j) * stride + 64 * s) : _mm512_setzero_si512();
            transpose16(v);
            std::int8_t* tile = out + 2048 * s;
            for (int t = 0; t < 16; ++t) _mm512_storeu_si512(tile + 64 * t, v[t]);
        }
    }
}

struct alignas(64) TileConfig {
    std::uint8_t palette_id = 1;
    std::uint8_t start_row = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
};

// Tiles 0-3: the 2×2 C blocks (16 × 16 int32); 4-5: A (16 probes × 64 bytes); 6-7: B (16 × 64 bytes).
static void configure_tiles() {
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

}  // namespace compact_amx_k

void compact_int8_dots_amx(const std::int8_t* Q, std::size_t m, const std::int8_t* G, const std::int32_t*,
                           std::size_t r0, std::size_t r1, std::size_t stride, std::int32_t* out, std::size_t ldo) {
    using namespace compact_amx_k;
    if (m == 0 || r1 <= r0) return;
    const std::size_t steps = stride / 64;
    // Whole groups of 32 probes load their A tiles straight from Q; the last, partial group from a
    // copy padded with zero rows (zeros add nothing to any dot). Buffers are the thread's own and
    // kept between calls (the scan calls this once per block of rows).
    thread_local std::vector<std::int8_t> tail, pack;
    const std::size_t full = m / MB * MB;
    if (full < m) {
        tail.assign(MB * stride, 0);
        std::memcpy(tail.data(), Q + full * stride, (m - full) * stride);
    }
    std::size_t nc = kBlockBytes / stride / NR * NR;
    if (nc < NR) nc = NR;
    nc = std::min(nc, round_up(r1 - r0, NR));
    if (pack.size() < nc * stride) pack.resize(nc * stride);
    alignas(64) std::int32_t c[MB * NR];
    const std::size_t ldb = ldo * sizeof(std::int32_t);
    configure_tiles();
    for (std::size_t b0 = r0; b0 < r1; b0 += nc) {
        const std::size_t valid = r1 - b0 < nc ? r1 - b0 : nc, rows = round_up(valid, NR);
        pack_block(G, b0, rows, valid, stride, pack.data());
        for (std::size_t i0 = 0; i0 < m; i0 += MB) {
            const std::int8_t* qa = i0 < full ? Q + i0 * stride : tail.data();
            for (std::size_t p0 = 0; p0 < rows; p0 += NR) {
                const std::int8_t* panel = pack.data() + p0 * stride;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (std::size_t s = 0; s < steps; ++s) {
                    _tile_loadd(4, qa + 64 * s, stride);
                    _tile_loadd(6, panel + 2048 * s, 64);
                    _tile_loadd(5, qa + 16 * stride + 64 * s, stride);
                    _tile_loadd(7, panel + 2048 * s + 1024, 64);
                    _tile_dpbssd(0, 4, 6);
                    _tile_dpbssd(1, 4, 7);
                    _tile_dpbssd(2, 5, 6);
                    _tile_dpbssd(3, 5, 7);
                }
                std::int32_t* o = out + i0 * ldo + (b0 - r0) + p0;
                const std::size_t mr = m - i0 < MB ? m - i0 : MB, v = valid - p0 < NR ? valid - p0 : NR;
                if (mr == MB && v == NR) {  // a whole 32 × 32 block: straight into the output
                    _tile_stored(0, o, ldb);
                    _tile_stored(1, o + 16, ldb);
                    _tile_stored(2, o + 16 * ldo, ldb);
                    _tile_stored(3, o + 16 * ldo + 16, ldb);
                } else {
                    _tile_stored(0, c, NR * 4);
                    _tile_stored(1, c + 16, NR * 4);
                    _tile_stored(2, c + 16 * NR, NR * 4);
                    _tile_stored(3, c + 16 * NR + 16, NR * 4);
                    for (std::size_t i = 0; i < mr; ++i) std::memcpy(o + i * ldo, c + i * NR, v * sizeof(std::int32_t));
                }
            }
        }
    }
    _tile_release();
}

}  // namespace pfm
