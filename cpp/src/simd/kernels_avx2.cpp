// AVX2 + FMA kernels (compiled with -mavx2 -mfma -mpopcnt for this file only).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "table.hpp"

namespace pfm {
namespace avx2_k {

#include "heap_impl.inc"
#include "codesel_impl.inc"
#include "hamming_impl.inc"

struct V {
    using reg = __m256;
    static constexpr int W = 8;
    static constexpr unsigned full_mask = 0xFFu;
    static inline reg zero() { return _mm256_setzero_ps(); }
    static inline reg load(const float* p) { return _mm256_loadu_ps(p); }
    static inline __m256i tail_mask(int n) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static inline reg load_n(const float* p, int n) { return _mm256_maskload_ps(p, tail_mask(n)); }
    static inline reg set1(float x) { return _mm256_set1_ps(x); }
    static inline reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
    static inline reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
    static inline reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    static inline float hsum(reg a) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static inline void store(float* p, reg a) { _mm256_storeu_ps(p, a); }
    static inline void store_n(float* p, reg a, int n) { _mm256_maskstore_ps(p, tail_mask(n), a); }
    static inline unsigned gt_mask(reg a, float t) {
        return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(t), _CMP_GT_OQ));
    }
    static inline unsigned bad_mask(reg a) {
        reg z = _mm256_mul_ps(a, _mm256_setzero_ps());  // 0 for finite lanes, NaN otherwise
        return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(z, z, _CMP_UNORD_Q));
    }
};

static constexpr int NV = 2;         // 16 rows per panel
static constexpr int MR_MAX = 6;     // 12 accumulators of 16 ymm registers
static constexpr std::size_t PACK_BYTES = 192 * 1024;

#include "kernels_body.inc"

}  // namespace avx2_k

/** @brief The AVX2 + FMA kernel table. */
const KernelTable kernel_table_avx2 = {
    .level = SimdLevel::avx2,
    .name = "avx2",
    .dot = avx2_k::dot,
    .dot3 = avx2_k::dot3,
    .topk_stream = avx2_k::topk_stream,
    .topk_gemm = avx2_k::topk_gemm,
    .scores_stream = avx2_k::scores_stream,
    .scores_gemm = avx2_k::scores_gemm,
    .pack_floats = avx2_k::pack_floats,
    .hamming_topk = avx2_k::hamming_topk_words,
    .dot_masked = avx2_k::dot_masked,
    .hamming_topk2 = avx2_k::hamming_topk2_words,
    .sum4 = avx2_k::sum4,
};

}  // namespace pfm
