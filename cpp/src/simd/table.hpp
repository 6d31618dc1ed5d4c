#pragma once
/** @file table.hpp
 *  @brief The table of kernel function pointers, private to the core (cpp/src).
 *
 *  Kernels are named <op>_<isa>, share one signature per op, never throw and trust their inputs:
 *  validation happens once, above them. The serial table is the precise oracle (double accumulation).
 *  Each kernel file fills its table by field name (make_table_<isa>()); a field left unset is null
 *  and means "this level has no such kernel" (only topk_bf16/bf16_convert may be null).
 */
#include <cstddef>
#include <cstdint>

#include "pyfacematch/simd.hpp"
#include "pyfacematch/types.hpp"

namespace pfm {

/** @brief One instruction set's kernels. Pointers, lengths in elements, row-major float32. */
struct KernelTable {
    SimdLevel level;
    const char* name;
    /** @brief Dot product of two d-vectors. */
    float (*dot)(const float* a, const float* b, std::size_t d);
    /** @brief a·b, a·a and b·b of two d-vectors in one pass. */
    void (*dot3)(const float* a, const float* b, std::size_t d, float* ab, float* aa, float* bb);
    /** @brief Scores of m probes Q (m×d) against gallery rows [r0, r1) of G (…×d) pushed into heaps[0..m);
     *  *bad set to 1 if a non-finite score was seen. Streaming form for small m. */
    void (*topk_stream)(const float* Q, std::size_t m, const float* G, std::size_t r0, std::size_t r1,
                        std::size_t d, TopKHeap* heaps, int* bad);
    /** @brief Same as topk_stream, cache-blocked matrix-multiply form for large m; pack is scratch of
     *  pack_floats(d) floats, 64-byte aligned. */
    void (*topk_gemm)(const float* Q, std::size_t m, const float* G, std::size_t r0, std::size_t r1,
                      std::size_t d, TopKHeap* heaps, int* bad, float* pack);
    /** @brief Writes the m×(r1-r0) score block into out (row stride ldo), streaming form. */
    void (*scores_stream)(const float* Q, std::size_t m, const float* G, std::size_t r0, std::size_t r1,
                          std::size_t d, float* out, std::size_t ldo);
    /** @brief Writes the m×(r1-r0) score block into out (row stride ldo), blocked form. */
    void (*scores_gemm)(const float* Q, std::size_t m, const float* G, std::size_t r0, std::size_t r1,
                        std::size_t d, float* out, std::size_t ldo, float* pack);
    /** @brief Number of floats the gemm kernels need as pack scratch for dimension d. */
    std::size_t (*pack_floats)(std::size_t d);
    /** @brief Hamming top-k: m probe codes vs gallery codes rows [r0, r1), nbytes per code, offered
     *  in increasing row order to the probes' selections sels[0..m). */
    void (*hamming_topk)(const std::uint8_t* Q, std::size_t m, const std::uint8_t* G, std::size_t r0,
                         std::size_t r1, std::size_t nbytes, CodeSel* sels);
    /** @brief Σ a·b and Σ w·b·b over d elements in one pass (masked cosine: a is the probe with the
     *  blocks outside the shared set zeroed, w their 0/1 indicator). */
    void (*dot_masked)(const float* a, const float* w, const float* b, std::size_t d, float* ab, float* wbb);
    /** @brief bf16 first pass of a large-batch top-k (null where the level has none; the CPU must
     *  also have AVX512_BF16, see cpu_has_avx512_bf16): QB holds the probes as bf16 pairs (m × dp,
     *  dp = ceil(d/2) 32-bit words, from bf16_convert), qn their norms; scans rows [r0, r1) of G
     *  offering approximate scores with their error bound to sels[0..m). pack is scratch of
     *  pack_floats(d) floats; *bad set to 1 on a non-finite score. */
    void (*topk_bf16)(const std::uint32_t* QB, const float* qn, std::size_t m, const float* G, std::size_t r0,
                      std::size_t r1, std::size_t d, ApproxSel* sels, int* bad, float* pack) = nullptr;
    /** @brief Rows of X (n × d) as bf16 pairs (round to nearest even), n × ceil(d/2) words, zero-padded;
     *  norms[r] = |X_r| from a float32 sum of squares (the error bound of topk_bf16 allows for it). */
    void (*bf16_convert)(const float* X, std::size_t n, std::size_t d, std::uint32_t* out, float* norms) = nullptr;
    /** @brief Two-plane Hamming scan of rows [r0, r1): codes split in planes A (nba bytes per row) and
     *  B (nbb); a row whose A-distance is below admit[i].bound is counted in admit[i] and its full
     *  distance (A + B) offered to heaps[i] as -distance. */
    void (*hamming_topk2)(const std::uint8_t* QA, const std::uint8_t* QB, std::size_t m, const std::uint8_t* GA,
                          const std::uint8_t* GB, std::size_t r0, std::size_t r1, std::size_t nba, std::size_t nbb,
                          CodeSel* admit, TopKHeap* heaps);
    /** @brief Σ of four len-float streams read together, one vector load per stream per step (a
     *  read-bandwidth probe: the same four concurrent streams as the one-probe scan's dot_1x4, no
     *  arithmetic to wait for). Null where the level has none (stream_read falls back to dot). */
    float (*sum4)(const float* a, const float* b, const float* c, const float* e, std::size_t len) = nullptr;
};

/** @brief The active kernel table (chosen once: PYFACEMATCH_SIMD, else the best available). */
const KernelTable& kernels();
/** @brief The table of one level; throws pfm::Error if not compiled or not available. */
const KernelTable& kernels_for(SimdLevel level);
/** @brief True when this CPU and OS can run the level (detect.cpp). */
bool level_available(SimdLevel level);
/** @brief True when the CPU has AVX-512 VPOPCNTDQ (detect.cpp; the AVX-512 Hamming scans use it). */
bool cpu_has_avx512_vpopcntdq();

/** @brief Software prefetch of the one-probe streaming scans (dot_1x4 in kernels_body.inc). */
enum class StreamPrefetch { none, nta };
/** @brief The streaming scans' prefetch, chosen once from the CPU class (detect.cpp;
 *  PYFACEMATCH_PREFETCH=none|nta overrides). */
StreamPrefetch stream_prefetch();

#ifdef PFM_HAVE_AMX
/** @brief The bf16 first pass of topk_bf16 on AMX tiles (kernels_amx.cpp; call only when
 *  cpu_has_amx_bf16()): same inputs, same candidates' contract and error bound; its own scratch. */
void topk_bf16_amx(const std::uint32_t* QB, const float* qn, std::size_t m, const float* G, std::size_t r0,
                   std::size_t r1, std::size_t d, ApproxSel* sels, int* bad);
#endif

/** @brief Each compiled level's table, defined in its kernel file. */
extern const KernelTable kernel_table_serial;
#ifdef PFM_HAVE_AVX2
extern const KernelTable kernel_table_avx2;
#endif
#ifdef PFM_HAVE_AVX512
extern const KernelTable kernel_table_avx512;
#endif
#ifdef PFM_HAVE_NEON
extern const KernelTable kernel_table_neon;
#endif

}  // namespace pfm
