#pragma once
/** @file compact_table.hpp
 *  @brief Kernels of compact (int8 / bf16) templates, one table per instruction set, private to
 *         the core. Separate from KernelTable so that the float32 kernels and these evolve apart.
 *
 *  Both kernels write raw dot products of m probes against gallery rows [r0, r1) into
 *  out[i * ldo + (r - r0)]; the scaling, error bounds and selection are common code (compact.cpp),
 *  so every level turns the same dot products into the same scores.
 */
#include <cstddef>
#include <cstdint>

#include "pyfacematch/types.hpp"

namespace pfm {

struct CompactKernels {
    const char* name;
    /** @brief Exact integer dots Σ q_j·g_j of int8 rows (stride a multiple of 64, zero padded);
     *  gsum[r] = Σ g_r (used by kernels that bias the probe to unsigned). */
    void (*int8_dots)(const std::int8_t* Q, std::size_t m, const std::int8_t* G, const std::int32_t* gsum,
                      std::size_t r0, std::size_t r1, std::size_t stride, std::int32_t* out, std::size_t ldo);
    /** @brief Dots of bf16 rows (stride a multiple of 32, zero padded), float32 accumulation
     *  (serial: double). */
    void (*bf16_dots)(const std::uint16_t* Q, std::size_t m, const std::uint16_t* G, std::size_t r0,
                      std::size_t r1, std::size_t stride, float* out, std::size_t ldo);
};

/** @brief The compact kernels of a level (null if not compiled), choosing the best variant this
 *  CPU runs (e.g. AVX-512 VNNI / BF16 when present). */
const CompactKernels* compact_kernels_for(SimdLevel level);

extern const CompactKernels compact_kernels_serial;
#ifdef PFM_HAVE_AVX2
extern const CompactKernels compact_kernels_avx2;
#endif
#ifdef PFM_HAVE_AVX512
extern const CompactKernels compact_kernels_avx512;
extern const CompactKernels compact_kernels_avx512_vnni_bf16;
bool cpu_has_avx512_vnni();
#endif
#ifdef PFM_HAVE_NEON
extern const CompactKernels compact_kernels_neon;
#endif

}  // namespace pfm
