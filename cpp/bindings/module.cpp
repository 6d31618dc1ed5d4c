// The private extension module pyfacematch._core: registers each concern's bindings and maps the
// core's typed errors to pyfacematch.errors classes. Nothing else lives here.
#include <pybind11/pybind11.h>

#include "pyfacematch/errors.hpp"

namespace py = pybind11;

namespace pfm_py {
void bind_simd(py::module_& m);
void bind_scoring(py::module_& m);
void bind_codes(py::module_& m);
void bind_compact(py::module_& m);
void bind_geometry(py::module_& m);
PyObject* error_class(pfm::ErrorKind kind);
}  // namespace pfm_py

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyfacematch C++ core (private: use the pyfacematch package)";
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const pfm::Error& e) {
            PyErr_SetString(pfm_py::error_class(e.kind()), e.what());
        }
    });
    pfm_py::bind_simd(m);
    pfm_py::bind_scoring(m);
    pfm_py::bind_codes(m);
    pfm_py::bind_compact(m);
    pfm_py::bind_geometry(m);
}
