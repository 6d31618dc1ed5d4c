// NEON kernels for 64-bit Arm (AArch64 always has NEON and FMA; compiled only on Arm targets).
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "table.hpp"

namespace pfm {
namespace neon_k {

#include "heap_impl.inc"
#include "codesel_impl.inc"
#include "hamming_impl.inc"

struct V {
    using reg = float32x4_t;
    static constexpr int W = 4;
    static constexpr unsigned full_mask = 0xFu;
    static inline reg zero() { return vdupq_n_f32(0.0f); }
    static inline reg load(const float* p) { return vld1q_f32(p); }
    static inline reg load_n(const float* p, int n) {
        float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int j = 0; j < n; ++j) tmp[j] = p[j];
        return vld1q_f32(tmp);
    }
    static inline reg set1(float x) { return vdupq_n_f32(x); }
    static inline reg add(reg a, reg b) { return vaddq_f32(a, b); }
    static inline reg mul(reg a, reg b) { return vmulq_f32(a, b); }
    static inline reg fma(reg a, reg b, reg c) { return vfmaq_f32(c, a, b); }
    static inline float hsum(reg a) { return vaddvq_f32(a); }
    static inline void store(float* p, reg a) { vst1q_f32(p, a); }
    static inline void store_n(float* p, reg a, int n) {
        float tmp[4];
        vst1q_f32(tmp, a);
        for (int j = 0; j < n; ++j) p[j] = tmp[j];
    }
    static inline unsigned lanes_to_bits(uint32x4_t m) {
        const uint32x4_t w = {1u, 2u, 4u, 8u};
        return vaddvq_u32(vandq_u32(m, w));
    }
    static inline unsigned gt_mask(reg a, float t) { return lanes_to_bits(vcgtq_f32(a, vdupq_n_f32(t))); }
    static inline unsigned bad_mask(reg a) {
        reg z = vmulq_f32(a, vdupq_n_f32(0.0f));
        return lanes_to_bits(vmvnq_u32(vceqq_f32(z, z)));
    }
};

static constexpr int NV = 4;         // 16 rows per panel
static constexpr int MR_MAX = 6;     // 24 accumulators of 32 q registers
static constexpr std::size_t PACK_BYTES = 192 * 1024;

#include "kernels_body.inc"

}  // namespace neon_k

/** @brief The NEON kernel table. */
const KernelTable kernel_table_neon = {
    .level = SimdLevel::neon,
    .name = "neon",
    .dot = neon_k::dot,
    .dot3 = neon_k::dot3,
    .topk_stream = neon_k::topk_stream,
    .topk_gemm = neon_k::topk_gemm,
    .scores_stream = neon_k::scores_stream,
    .scores_gemm = neon_k::scores_gemm,
    .pack_floats = neon_k::pack_floats,
    .hamming_topk = neon_k::hamming_topk_words,
    .dot_masked = neon_k::dot_masked,
    .hamming_topk2 = neon_k::hamming_topk2_words,
    .sum4 = neon_k::sum4,
};

}  // namespace pfm
