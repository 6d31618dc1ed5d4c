#pragma once
/** @file simd.hpp
 *  @brief Runtime CPU detection and the choice of SIMD level. The kernel table itself is private to
 *         the core (cpp/src/simd/table.hpp).
 */
#include <string>
#include <utility>
#include <vector>

#include "pyfacematch/types.hpp"

namespace pfm {


/** @brief True when the CPU and OS run AVX-512 BF16 (VDPBF16PS). */
bool cpu_has_avx512_bf16();

/** @brief True when the CPU has AMX-BF16 tiles, the OS enables them (XCR0) and Linux granted this
 *  process the tile data permission (requested at the first call). */
bool cpu_has_amx_bf16();
/** @brief True when this build contains the AMX kernels (the compiler knew them). */
bool amx_compiled();
/** @brief Use (default) or not the AMX tiles for the bf16 first pass of large-batch top-k
 *  (PYFACEMATCH_AMX=0 turns them off for a process; the result is the same either way). */
void set_amx(bool on);
/** @brief True when large-batch top-k runs its bf16 first pass on AMX tiles: compiled, the CPU and
 *  OS allow it, the active level is avx512, the bf16 first pass and AMX are on. */
bool amx_active();
/** @brief True when the CPU has AMX-INT8 tiles, the OS enables them and Linux granted the tile
 *  data permission (requested at the first call). */
bool cpu_has_amx_int8();
/** @brief True when this build contains the AMX-INT8 compact kernel (compact_amx.cpp). */
bool amx_int8_compiled();
/** @brief True when batches of int8 compact templates (≥ 16 probes per block) are scored on AMX
 *  tiles: compiled, the CPU and OS allow it, the active level is avx512 and AMX is on (set_amx,
 *  PYFACEMATCH_AMX). The answer is the same either way (exact integer dots). */
bool amx_int8_active();

/** @brief Levels compiled into this build, lowest first. */
std::vector<SimdLevel> compiled_levels();
/** @brief Levels this CPU and operating system can run, lowest first. */
std::vector<SimdLevel> available_levels();
/** @brief The active level (chosen once: PYFACEMATCH_SIMD, else the best available; see set_simd_level). */
SimdLevel active_level();
/** @brief Forces the active level; throws pfm::Error if it cannot run here. */
void set_simd_level(SimdLevel level);
/** @brief "serial", "neon", "avx2" or "avx512". */
const char* level_name(SimdLevel level);
/** @brief Parses a level name; throws pfm::Error on an unknown name. */
SimdLevel parse_level(const std::string& name);
/** @brief CPU vendor string from cpuid ("GenuineIntel", "AuthenticAMD", …; "" off x86). */
std::string cpu_vendor();
/** @brief x86 display family and model (cpuid leaf 1), {0, 0} off x86. */
std::pair<unsigned, unsigned> cpu_family_model();
/** @brief The one-probe scans' software prefetch in use: "none" or "nta" (see detect.cpp). */
const char* stream_prefetch_name();

/** @brief CPU feature flags detected (for reports), e.g. {"avx2", "fma", "avx512f", "avx512vpopcntdq"}. */
std::vector<std::string> cpu_features();

}  // namespace pfm
