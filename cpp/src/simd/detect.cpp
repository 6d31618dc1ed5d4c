// CPU feature detection, done once. On x86 the operating system must also save the wide register
// state (XCR0 via xgetbv), or AVX code faults even on a CPU that has it.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "table.hpp"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <cpuid.h>
#define PFM_X86 1
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace pfm {

namespace {

struct Features {
    bool avx2 = false, fma = false, popcnt = false;
    bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, vpopcntdq = false;
    bool avx512bf16 = false;
    bool amx_tile = false, amx_bf16 = false, amx_int8 = false;  // CPU has them and XCR0 enables tiles
    bool neon = false;
    char vendor[13] = {0};
    unsigned family = 0, model = 0;
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
    if (__get_cpuid(0, &a, &b, &c, &d)) {
        std::memcpy(f.vendor, &b, 4);
        std::memcpy(f.vendor + 4, &d, 4);
        std::memcpy(f.vendor + 8, &c, 4);
    }
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    {  // display family and model (Intel SDM vol. 2A, CPUID leaf 01H, EAX)
        const unsigned base_fam = (a >> 8) & 0xF, base_model = (a >> 4) & 0xF;
        f.family = base_fam == 0xF ? base_fam + ((a >> 20) & 0xFF) : base_fam;
        f.model = (base_fam == 0x6 || base_fam == 0xF) ? (((a >> 16) & 0xF) << 4) + base_model : base_model;
    }
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
        // AMX: cpuid 7.0 EDX bits 24 (AMX-TILE), 22 (AMX-BF16), 25 (AMX-INT8); the OS must enable
        // XTILECFG and XTILEDATA in XCR0 (bits 17, 18). Intel SDM vol. 1, 13.2 and 18.
        const bool os_tiles = (xcr0 & 0x60000) == 0x60000;
        f.amx_tile = os_tiles && ((d >> 24) & 1);
        f.amx_bf16 = f.amx_tile && ((d >> 22) & 1);
        f.amx_int8 = f.amx_tile && ((d >> 25) & 1);
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

std::string cpu_vendor() { return features().vendor; }

std::pair<unsigned, unsigned> cpu_family_model() { return {features().family, features().model}; }

namespace {

// The one-probe scan is memory-bound and its best software prefetch depends on the CPU class, not
// on the instruction set, so it is chosen here at run time (never by a build flag):
//  - AMD (and Hygon, the same Zen cores): prefetchnta four rows ahead. Measured on an EPYC Zen 4:
//    the hardware prefetcher alone reached ~60% of the read bandwidth, with the prefetch ~90%.
//  - Intel and other x86: none. Measured on a Xeon family 6 model 167 (KVM, 2 cores): prefetchnta
//    made the scan 2-2.5× slower than the hardware prefetcher alone, at AVX-512 and AVX2 alike
//    (NTA lines skip L2, where Intel's L2 streamer runs ahead; see README "Scoring speed per machine").
//  - Arm: unchanged (the same prefetch as AMD; PRFM PLDL1STRM), not measured on Arm hardware yet.
StreamPrefetch choose_prefetch() {
    const char* env = std::getenv("PYFACEMATCH_PREFETCH");
    if (env && std::strcmp(env, "none") == 0) return StreamPrefetch::none;
    if (env && std::strcmp(env, "nta") == 0) return StreamPrefetch::nta;
#ifdef PFM_X86
    const std::string v = features().vendor;
    if (v == "AuthenticAMD" || v == "HygonGenuine") return StreamPrefetch::nta;
    return StreamPrefetch::none;
#else
    return StreamPrefetch::nta;
#endif
}

}  // namespace

StreamPrefetch stream_prefetch() {
    static const StreamPrefetch p = choose_prefetch();
    return p;
}

const char* stream_prefetch_name() { return stream_prefetch() == StreamPrefetch::nta ? "nta" : "none"; }

namespace {

// Linux keeps the 8 KB tile data state off by default for each process: it must be requested with
// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) before the first tile instruction, or that
// instruction faults (Documentation/arch/x86/xstate.rst). The permission is per process and
// inherited by every thread. Other systems: no AMX here.
bool request_tile_permission() {
#if defined(__linux__) && defined(__x86_64__)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
}

}  // namespace

bool cpu_has_amx_bf16() {
    static const bool ok = [] {
        const Features& f = features();
        return f.amx_bf16 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512bf16 && request_tile_permission();
    }();
    return ok;
}

bool cpu_has_amx_int8() {
    static const bool ok = [] {
        const Features& f = features();
        return f.amx_int8 && f.avx512f && f.avx512bw && request_tile_permission();
    }();
    return ok;
}

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
    add(f.amx_tile, "amx_tile");
    add(f.amx_bf16, "amx_bf16");
    add(f.amx_int8, "amx_int8");
    add(f.neon, "neon");
    return out;
}

}  // namespace pfm
