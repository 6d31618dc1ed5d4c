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

/** @brief Instruction-set levels of the kernel table, lowest first. */
enum class SimdLevel : int { serial = 0, neon = 1, avx2 = 2, avx512 = 3 };

}  // namespace pfm
