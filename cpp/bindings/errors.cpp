// Maps pfm::ErrorKind to the classes of pyfacematch.errors (looked up once, kept for the process).
#include <pybind11/pybind11.h>

#include "pyfacematch/errors.hpp"

namespace py = pybind11;

namespace pfm_py {

PyObject* error_class(pfm::ErrorKind kind) {
    static PyObject* classes[6] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
    static const char* names[6] = {"InputError", "DimensionError", "NonFiniteError",
                                   "DTypeError", "EmptyInputError", "ZeroVectorError"};
    int k = static_cast<int>(kind);
    if (!classes[k]) {
        PyObject* mod = PyImport_ImportModule("pyfacematch.errors");
        if (!mod) {
            PyErr_Clear();
            return PyExc_ValueError;
        }
        PyObject* cls = PyObject_GetAttrString(mod, names[k]);
        Py_DECREF(mod);
        if (!cls) {
            PyErr_Clear();
            return PyExc_ValueError;
        }
        classes[k] = cls;  // a strong reference kept for the life of the process
    }
    return classes[k];
}

}  // namespace pfm_py
