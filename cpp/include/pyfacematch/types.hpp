#pragma once
/** @file types.hpp
 *  @brief Plain data shared by the scoring core and its SIMD kernels (no code, no std algorithms:
 *         it is included by translation units compiled with different instruction-set flags).
 */
#include <cstddef>
#include <cstdint>

namespace pfm {

/** @brief A bounded "best k" heap over (score, index) pairs; storage is owned by the caller.
 *
 *  The root (slot 0) is the worst kept pair: lowest score, and among equal scores the highest
 *  index, so that ties are resolved in favour of the lower index. Kernels only read `thresh()`
 *  to filter and call the ISA-local push (cpp/src/simd/heap_impl.inc) when a score beats it.
 */
struct TopKHeap {
    float* s;     ///< scores, capacity k
    int64_t* i;   ///< indices, capacity k
    int k;        ///< capacity (>= 1)
    int size;     ///< pairs currently held
};

/** @brief Best-k selection over small integer distances (Hamming), for large k.
 *
 *  A heap costs log k per accepted row and, split over threads, k pushes per part before its
 *  threshold means anything: at k = 2048 that cost more than the popcounts. Here a row is
 *  admitted when dist < bound, appended to a buffer (capacity cap >= 2k) and counted in a
 *  histogram of distances; once k rows are held, bound is the k-th smallest distance held, and
 *  it only falls. Rows must be offered in increasing order (ties are then won by the lower row,
 *  already held); a full buffer is compacted to the best k. Storage is owned by the caller;
 *  operations are in cpp/src/simd/codesel_impl.inc.
 */
struct CodeSel {
    std::int32_t* d;      ///< buffered distances, capacity cap
    std::int64_t* i;      ///< buffered rows, capacity cap
    std::int32_t* hist;   ///< admitted rows per distance value, nbits + 1 entries, zeroed
    int k;                ///< rows wanted
    int cap;              ///< buffer capacity (>= 2k)
    int n;                ///< rows buffered
    std::int64_t held;    ///< rows admitted while fewer than k were held
    std::int32_t bound;   ///< admit dist < bound (INT32_MAX until k rows are held)
    std::int64_t le;      ///< admitted rows with dist <= bound (once k are held)
};

/** @brief Selection over approximate scores known to within ±E of the exact ones (bf16 pass).
 *
 *  `lower` keeps the k best lower bounds (score − E); a row is a candidate while its upper bound
 *  (score + E) reaches the k-th best lower bound, so the exact top k are always among the
 *  candidates. Candidates are buffered (upper bound, row), pruned when the buffer fills; if it
 *  still overflows, `overflow` is set and the caller answers that probe exactly.
 *  Operations are in cpp/src/simd/approx_impl.inc.
 */
struct ApproxSel {
    TopKHeap lower;
    float* cu;            ///< candidates' upper bounds, capacity cap
    std::int64_t* ci;     ///< candidates' rows
    int cap;
    int n;
    int overflow;
};

/** @brief Instruction-set levels of the kernel table, lowest first. */
enum class SimdLevel : int { serial = 0, neon = 1, avx2 = 2, avx512 = 3 };

}  // namespace pfm
