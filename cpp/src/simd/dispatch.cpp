// The active kernel table: chosen once (PYFACEMATCH_SIMD or the best available level), and
// switchable at run time (an atomic pointer, so concurrent calls see one table or the other).
#include <atomic>
#include <cstdlib>
#include <string>

#include "pyfacematch/errors.hpp"
#include "table.hpp"

namespace pfm {

namespace {

const KernelTable* table_of(SimdLevel level) {
    switch (level) {
        case SimdLevel::serial: return &kernel_table_serial;
#ifdef PFM_HAVE_AVX2
        case SimdLevel::avx2: return &kernel_table_avx2;
#endif
#ifdef PFM_HAVE_AVX512
        case SimdLevel::avx512: return &kernel_table_avx512;
#endif
#ifdef PFM_HAVE_NEON
        case SimdLevel::neon: return &kernel_table_neon;
#endif
        default: return nullptr;
    }
}

const KernelTable* best_table() {
    const KernelTable* best = &kernel_table_serial;
    for (SimdLevel l : available_levels()) best = table_of(l);
    return best;
}

const KernelTable* initial_table() {
    const char* env = std::getenv("PYFACEMATCH_SIMD");
    if (env && *env && std::string(env) != "auto") {
        // An unusable request falls back to the best level rather than failing the import; the
        // Python layer reads the variable too and warns when the level differs.
        try {
            SimdLevel want = parse_level(env);
            const KernelTable* t = table_of(want);
            if (t && level_available(want)) return t;
        } catch (const Error&) {
        }
    }
    return best_table();
}

std::atomic<const KernelTable*>& active() {
    static std::atomic<const KernelTable*> a{initial_table()};
    return a;
}

}  // namespace

const char* level_name(SimdLevel level) {
    switch (level) {
        case SimdLevel::serial: return "serial";
        case SimdLevel::neon: return "neon";
        case SimdLevel::avx2: return "avx2";
        case SimdLevel::avx512: return "avx512";
    }
    return "unknown";
}

SimdLevel parse_level(const std::string& name) {
    if (name == "serial") return SimdLevel::serial;
    if (name == "neon") return SimdLevel::neon;
    if (name == "avx2") return SimdLevel::avx2;
    if (name == "avx512") return SimdLevel::avx512;
    throw Error(ErrorKind::input, "unknown SIMD level '" + name +
                                      "': expected one of serial, neon, avx2, avx512 (or auto)");
}

std::vector<SimdLevel> compiled_levels() {
    std::vector<SimdLevel> out{SimdLevel::serial};
#ifdef PFM_HAVE_NEON
    out.push_back(SimdLevel::neon);
#endif
#ifdef PFM_HAVE_AVX2
    out.push_back(SimdLevel::avx2);
#endif
#ifdef PFM_HAVE_AVX512
    out.push_back(SimdLevel::avx512);
#endif
    return out;
}

std::vector<SimdLevel> available_levels() {
    std::vector<SimdLevel> out;
    for (SimdLevel l : compiled_levels())
        if (level_available(l)) out.push_back(l);
    return out;
}

SimdLevel active_level() { return kernels().level; }

const KernelTable& kernels() { return *active().load(std::memory_order_acquire); }

const KernelTable& kernels_for(SimdLevel level) {
    const KernelTable* t = table_of(level);
    if (!t)
        throw Error(ErrorKind::input, std::string("SIMD level '") + level_name(level) +
                                          "' is not compiled into this build; see pyfacematch.simd.info()");
    if (!level_available(level))
        throw Error(ErrorKind::input, std::string("SIMD level '") + level_name(level) +
                                          "' cannot run on this CPU/OS; see pyfacematch.simd.info()");
    return *t;
}

void set_simd_level(SimdLevel level) { active().store(&kernels_for(level), std::memory_order_release); }

}  // namespace pfm
