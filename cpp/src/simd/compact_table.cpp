// The compact kernels of each level; the AVX-512 table takes the VNNI / BF16 forms when the CPU
// has them (features read once).
#include "compact_table.hpp"

#include "pyfacematch/simd.hpp"

namespace pfm {

#ifdef PFM_HAVE_AVX512
}  // namespace pfm
#include <cpuid.h>
namespace pfm {
void compact_int8_dots_avx512_vnni(const std::int8_t*, std::size_t, const std::int8_t*, const std::int32_t*,
                                   std::size_t, std::size_t, std::size_t, std::int32_t*, std::size_t);
void compact_bf16_dots_avx512_bf16(const std::uint16_t*, std::size_t, const std::uint16_t*, std::size_t,
                                   std::size_t, std::size_t, float*, std::size_t);

#ifdef PFM_HAVE_AMX_INT8
void compact_int8_dots_amx(const std::int8_t*, std::size_t, const std::int8_t*, const std::int32_t*, std::size_t,
                           std::size_t, std::size_t, std::int32_t*, std::size_t);
#endif

namespace {
// Blocks of at least this many probes go to the AMX tiles (two A tiles hold 32; below 16 a tile
// pass is mostly padding and VNNI's row-at-a-time form wins).
constexpr std::size_t kAmxMinProbes = 16;

void int8_dots_best(const std::int8_t* Q, std::size_t m, const std::int8_t* G, const std::int32_t* gsum,
                    std::size_t r0, std::size_t r1, std::size_t stride, std::int32_t* out, std::size_t ldo) {
#ifdef PFM_HAVE_AMX_INT8
    if (m >= kAmxMinProbes && amx_int8_active()) {
        compact_int8_dots_amx(Q, m, G, gsum, r0, r1, stride, out, ldo);
        return;
    }
#endif
    static const auto fallback =
        cpu_has_avx512_vnni() ? compact_int8_dots_avx512_vnni : compact_kernels_avx512.int8_dots;
    fallback(Q, m, G, gsum, r0, r1, stride, out, ldo);
}
}  // namespace

bool cpu_has_avx512_vnni() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (c >> 11) & 1;  // CPUID.(EAX=7,ECX=0):ECX[bit 11] AVX512_VNNI
}
#endif

const CompactKernels* compact_kernels_for(SimdLevel level) {
    switch (level) {
        case SimdLevel::serial: return &compact_kernels_serial;
#ifdef PFM_HAVE_AVX2
        case SimdLevel::avx2: return &compact_kernels_avx2;
#endif
#ifdef PFM_HAVE_AVX512
        case SimdLevel::avx512: {
            // The AVX-512 level is only active when the OS saves zmm state (detect.cpp).
            static const CompactKernels best = {
                .name = "avx512",
                // VNNI when the CPU has it; batches on AMX-INT8 tiles where amx_int8_active()
                .int8_dots = int8_dots_best,
                .bf16_dots = cpu_has_avx512_bf16() ? compact_bf16_dots_avx512_bf16 : compact_kernels_avx512.bf16_dots,
            };
            return &best;
        }
#endif
#ifdef PFM_HAVE_NEON
        case SimdLevel::neon: return &compact_kernels_neon;
#endif
        default: return nullptr;
    }
}

}  // namespace pfm
