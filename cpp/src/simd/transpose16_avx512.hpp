// The AMX kernels' shared AVX-512 helper (included by kernels_amx.cpp and compact_amx.cpp, both
// compiled with -mavx512f and above; see CMakeLists.txt).
#pragma once

#include <immintrin.h>

namespace pfm::amx_detail {

// 16 × 16 transpose of 32-bit words held in 16 vectors (r[i] = row i in, row i = column i out).
static inline void transpose16(__m512i* r) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    // Now r[4g + j] holds, in its 128-bit lane L, column 4L + j of rows 4g … 4g + 3: two rounds of
    // 128-bit lane shuffles gather each column's four lanes in row order.
    for (int j = 0; j < 4; ++j) {
        __m512i a0 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88), a1 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xDD);
        __m512i b0 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88), b1 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xDD);
        t[j] = _mm512_shuffle_i32x4(a0, b0, 0x88);
        t[8 + j] = _mm512_shuffle_i32x4(a0, b0, 0xDD);
        t[4 + j] = _mm512_shuffle_i32x4(a1, b1, 0x88);
        t[12 + j] = _mm512_shuffle_i32x4(a1, b1, 0xDD);
    }
    for (int i = 0; i < 16; ++i) r[i] = t[i];
}

}  // namespace pfm::amx_detail
