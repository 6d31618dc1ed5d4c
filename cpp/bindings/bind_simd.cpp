// Bindings of SIMD detection/dispatch and the thread pool.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "pyfacematch/scoring.hpp"
#include "pyfacematch/simd.hpp"
#include "pyfacematch/threads.hpp"
#include "common.hpp"

namespace pfm_py {

void bind_simd(py::module_& m) {
    auto names = [](const std::vector<pfm::SimdLevel>& ls) {
        std::vector<std::string> out;
        for (auto l : ls) out.emplace_back(pfm::level_name(l));
        return out;
    };
    m.def("simd_compiled", [names] { return names(pfm::compiled_levels()); },
          "SIMD levels compiled into this build, lowest first.");
    m.def("simd_available", [names] { return names(pfm::available_levels()); },
          "SIMD levels this CPU and OS can run, lowest first.");
    m.def("simd_active", [] { return std::string(pfm::level_name(pfm::active_level())); }, "The active SIMD level.");
    m.def("simd_set", [](const std::string& name) { pfm::set_simd_level(pfm::parse_level(name)); },
          py::arg("level"), "Forces a SIMD level (serial, neon, avx2, avx512).");
    m.def("cpu_features", &pfm::cpu_features, "CPU features detected, for reports.");
    m.def("cpu_vendor", &pfm::cpu_vendor, "CPU vendor string from cpuid ('' off x86).");
    m.def("cpu_family_model", &pfm::cpu_family_model, "x86 display family and model from cpuid.");
    m.def("stream_prefetch", [] { return std::string(pfm::stream_prefetch_name()); },
          "The one-probe scans' software prefetch chosen for this CPU: 'none' or 'nta'.");
    m.def("set_num_threads", [](long long n) {
        require(n >= 1 && (unsigned long long)n <= pfm::max_threads(), pfm::ErrorKind::input,
                "number of threads must be within [1, " + std::to_string(pfm::max_threads()) + "], got " +
                    std::to_string(n));
        py::gil_scoped_release nogil;
        pfm::set_num_threads((std::size_t)n);
    }, py::arg("n"), "Sets the threads one call may use; fewer start if the OS refuses some.");
    m.def("max_num_threads", [] { return pfm::max_threads(); }, "The most threads set_num_threads accepts.");
    m.def("get_num_threads", [] { return pfm::get_num_threads(); });
    m.def("set_bf16_prefilter", &pfm::set_bf16_prefilter, py::arg("on"),
          "Turns the bf16 first pass of large-batch topk on or off (results are the same).");
    m.def("set_amx", &pfm::set_amx, py::arg("on"),
          "Turns the AMX tiles of the bf16 first pass on or off (results are the same).");
    m.def("amx_active", &pfm::amx_active, "True when topk of a large batch runs its bf16 first pass on AMX.");
    m.def("amx_compiled", &pfm::amx_compiled, "True when this build contains the AMX kernels.");
    m.def("amx_int8_active", &pfm::amx_int8_active,
          "True when int8 compact batches (>= 16 probes per block) are scored on AMX-INT8 tiles.");
    m.def("amx_int8_compiled", &pfm::amx_int8_compiled, "True when this build contains the AMX-INT8 compact kernel.");
    m.def("cpu_has_amx_int8", &pfm::cpu_has_amx_int8,
          "True when the CPU, the OS (XCR0) and Linux's tile permission allow AMX-INT8.");
    m.def("cpu_has_amx_bf16", &pfm::cpu_has_amx_bf16,
          "True when the CPU, the OS (XCR0) and Linux's tile permission allow AMX-BF16.");
    m.def("bf16_prefilter_active", &pfm::bf16_prefilter_active,
          "True when topk of a large batch uses the bf16 first pass.");
}

}  // namespace pfm_py
