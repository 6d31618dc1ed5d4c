// CPU feature detection, done once. On x86 the operating system must also save the wide register
// state (XCR0 via xgetbv), or AVX code faults even on a CPU that has it.
#include <string>
#include <vector>

#include "table.hpp"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <cpuid.h>
#define PFM_X86 1
#endif

namespace pfm {

namespace {

struct Features {
    bool avx2 = false, fma = false, popcnt = false;
    bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, vpopcntdq = false;
    bool avx512bf16 = false;
    bool neon = false;
};

#ifdef PFM_X86
unsigned long long xgetbv0() {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

Features detect() {
    Features f;
#ifdef PFM_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    f.fma = (c >> 12) & 1;
    f.popcnt = (c >> 23) & 1;
    if (!osxsave || !avx) return f;
    const unsigned long long xcr0 = xgetbv0();
    const bool os_ymm = (xcr0 & 0x6) == 0x6;      // SSE + AVX state
    const bool os_zmm = (xcr0 & 0xE6) == 0xE6;    // + opmask, ZMM_Hi256, Hi16_ZMM
    if (!os_ymm) return f;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    f.avx2 = (b >> 5) & 1;
    if (os_zmm) {
        f.avx512f = (b >> 16) & 1;
        f.avx512dq = (b >> 17) & 1;
        f.avx512bw = (b >> 30) & 1;
        f.avx512vl = (b >> 31) & 1;
        f.vpopcntdq = (c >> 14) & 1;
        unsigned a1, b1, c1, d1;
        if (a >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512bf16 = (a1 >> 5) & 1;
    }
#elif defined(__aarch64__) || defined(_M_ARM64)
    f.neon = true;
#endif
    return f;
}

const Features& features() {
    static const Features f = detect();
    return f;
}

}  // namespace

bool cpu_has_avx512_vpopcntdq() { return features().avx512f && features().vpopcntdq; }

bool cpu_has_avx512_bf16() {
    const Features& f = features();
    return f.avx512f && f.avx512bw && f.avx512vl && f.avx512bf16;
}

bool level_available(SimdLevel level) {
    const Features& f = features();
    switch (level) {
        case SimdLevel::serial: return true;
        case SimdLevel::neon: return f.neon;
        case SimdLevel::avx2: return f.avx2 && f.fma && f.popcnt;
        case SimdLevel::avx512:
            return f.avx2 && f.fma && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl;
    }
    return false;
}

std::vector<std::string> cpu_features() {
    const Features& f = features();
    std::vector<std::string> out;
    auto add = [&](bool on, const char* name) {
        if (on) out.emplace_back(name);
    };
    add(f.popcnt, "popcnt");
    add(f.avx2, "avx2");
    add(f.fma, "fma");
    add(f.avx512f, "avx512f");
    add(f.avx512bw, "avx512bw");
    add(f.avx512dq, "avx512dq");
    add(f.avx512vl, "avx512vl");
    add(f.vpopcntdq, "avx512vpopcntdq");
    add(f.avx512bf16, "avx512bf16");
    add(f.neon, "neon");
    return out;
}

}  // namespace pfm
