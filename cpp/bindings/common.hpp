#pragma once
// Helpers shared by the binding files: array checks that raise the core's typed errors. The Python
// layer converts inputs once, explicitly; these checks are the last line, not the conversion.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "pyfacematch/errors.hpp"

namespace pfm_py {

namespace py = pybind11;
using f32arr = py::array_t<float, py::array::c_style>;
using u8arr = py::array_t<std::uint8_t, py::array::c_style>;
using u64arr = py::array_t<std::uint64_t, py::array::c_style>;
using i64arr = py::array_t<std::int64_t, py::array::c_style>;

inline void require(bool ok, pfm::ErrorKind kind, const std::string& msg) {
    if (!ok) throw pfm::Error(kind, msg);
}

inline void require_2d(const py::array& a, const char* name) {
    require(a.ndim() == 2, pfm::ErrorKind::input,
            std::string(name) + " must be a 2-D array (rows × dimension), got " + std::to_string(a.ndim()) + "-D");
}

}  // namespace pfm_py
