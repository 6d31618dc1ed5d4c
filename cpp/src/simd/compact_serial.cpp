// Serial compact kernels: the oracle. Integer dots are exact (int64 accumulation); bf16 dots
// accumulate the decoded values in double.
#include <cstdint>
#include <cstring>

#include "compact_table.hpp"

namespace pfm {
namespace compact_serial_k {

static inline std::int32_t i8dot1(const std::int8_t* q, const std::int8_t* g, std::int32_t, std::size_t stride) {
    std::int64_t s = 0;
    for (std::size_t j = 0; j < stride; ++j) s += (std::int64_t)q[j] * (std::int64_t)g[j];
    return (std::int32_t)s;
}
static inline void i8dot4(const std::int8_t* q, const std::int8_t* g, const std::int32_t* gs, std::size_t stride,
                          std::int32_t* out) {
    for (int t = 0; t < 4; ++t) out[t] = i8dot1(q, g + t * stride, gs[t], stride);
}
static inline float bf(std::uint16_t h) {
    std::uint32_t u = (std::uint32_t)h << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static inline float bfdot1(const std::uint16_t* q, const std::uint16_t* g, std::size_t stride) {
    double s = 0.0;
    for (std::size_t j = 0; j < stride; ++j) s += (double)bf(q[j]) * (double)bf(g[j]);
    return (float)s;
}
static inline void bfdot4(const std::uint16_t* q, const std::uint16_t* g, std::size_t stride, float* out) {
    for (int t = 0; t < 4; ++t) out[t] = bfdot1(q, g + t * stride, stride);
}

#include "compact_impl.inc"

}  // namespace compact_serial_k

const CompactKernels compact_kernels_serial = {
    .name = "serial",
    .int8_dots = compact_serial_k::int8_dots,
    .bf16_dots = compact_serial_k::bf16_dots,
};

}  // namespace pfm
