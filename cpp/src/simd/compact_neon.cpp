// NEON compact kernels (AArch64): int8 products widened with vmull_s8 (|q·g| ≤ 127² fits int16) and
// pairwise-accumulated into int32 (exact); bf16 rows widened to float32 by a 16-bit shift, FMA.
#include <arm_neon.h>

#include <cstdint>

#include "compact_table.hpp"

namespace pfm {
namespace compact_neon_k {

static inline std::int32_t i8dot1(const std::int8_t* q, const std::int8_t* g, std::int32_t, std::size_t stride) {
    int32x4_t a = vdupq_n_s32(0);
    for (std::size_t j = 0; j < stride; j += 16) {
        int8x16_t x = vld1q_s8(q + j), y = vld1q_s8(g + j);
        a = vpadalq_s16(a, vmull_s8(vget_low_s8(x), vget_low_s8(y)));
        a = vpadalq_s16(a, vmull_high_s8(x, y));
    }
    return vaddvq_s32(a);
}
static inline void i8dot4(const std::int8_t* q, const std::int8_t* g, const std::int32_t* gs, std::size_t stride,
                          std::int32_t* out) {
    for (int t = 0; t < 4; ++t) out[t] = i8dot1(q, g + t * stride, gs[t], stride);
}
static inline float32x4_t bf4(const std::uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
static inline float bfdot1(const std::uint16_t* q, const std::uint16_t* g, std::size_t stride) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
    for (std::size_t j = 0; j < stride; j += 8) {
        a0 = vfmaq_f32(a0, bf4(q + j), bf4(g + j));
        a1 = vfmaq_f32(a1, bf4(q + j + 4), bf4(g + j + 4));
    }
    return vaddvq_f32(vaddq_f32(a0, a1));
}
static inline void bfdot4(const std::uint16_t* q, const std::uint16_t* g, std::size_t stride, float* out) {
    for (int t = 0; t < 4; ++t) out[t] = bfdot1(q, g + t * stride, stride);
}

#include "compact_impl.inc"

}  // namespace compact_neon_k

const CompactKernels compact_kernels_neon = {
    .name = "neon",
    .int8_dots = compact_neon_k::int8_dots,
    .bf16_dots = compact_neon_k::bf16_dots,
};

}  // namespace pfm
