// Bindings of cosine scoring. Arrays arrive float32/C-contiguous (the Python layer converts once);
// shapes are checked here, the GIL is released for every call whose cost grows with the gallery.
// cosine() is a raw METH_FASTCALL function reading the buffer protocol directly: a payment
// terminal's service calls it once per face, so its fixed cost is what matters.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstring>
#include <string>

#include "common.hpp"
#include "pyfacematch/scoring.hpp"

namespace pfm_py {

namespace {

PyObject* g_cosine_fallback = nullptr;  // pyfacematch.scoring._cosine_slow, set at import

bool is_f32_vector(const Py_buffer& b) {
    if (b.itemsize != 4 || b.ndim != 1 || !b.format) return false;
    const char* f = b.format;
    if (*f == '<' || *f == '=' || *f == '@') ++f;
    return f[0] == 'f' && f[1] == '\0';
}

// A 1-D, C-contiguous, native-order float32 numpy array (pybind11's public array API only).
bool is_plain_f32_vector(const py::array& a) {
    static const int f32 = py::dtype::of<float>().num();
    if (a.ndim() != 1 || !(a.flags() & py::array::c_style)) return false;
    const py::dtype dt = a.dtype();
    return dt.num() == f32 && dt.byteorder() != '>';
}

PyObject* call_fallback(PyObject* const* args) {
    if (!g_cosine_fallback) {
        PyErr_SetString(PyExc_TypeError, "cosine() expects two 1-D float32 vectors");
        return nullptr;
    }
    return PyObject_Vectorcall(g_cosine_fallback, args, 2, nullptr);
}

PyObject* fast_cosine(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "cosine() takes 2 positional arguments (a, b), got %zd", nargs);
        return nullptr;
    }
    // numpy arrays: read shape, flags and dtype through pybind11's array API (no buffer export).
    // This is a raw CPython function: no C++ exception may leave it.
    try {
        if (py::isinstance<py::array>(args[0]) && py::isinstance<py::array>(args[1])) {
            const auto pa = py::reinterpret_borrow<py::array>(args[0]);
            const auto pb = py::reinterpret_borrow<py::array>(args[1]);
            if (is_plain_f32_vector(pa) && is_plain_f32_vector(pb) && pa.shape(0) == pb.shape(0) &&
                pa.shape(0) > 0) {
                float r = pfm::cosine(static_cast<const float*>(pa.data()), static_cast<const float*>(pb.data()),
                                      (std::size_t)pa.shape(0));
                if (r == r) return PyFloat_FromDouble((double)r);
                return call_fallback(args);  // NaN: a zero vector or a non-finite value; name it
            }
        }
    } catch (py::error_already_set& e) {
        e.restore();
        return nullptr;
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
        return nullptr;
    }
    // Other objects with the buffer protocol (array.array, memoryview …).
    Py_buffer a, b;
    if (PyObject_GetBuffer(args[0], &a, PyBUF_ND | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        return call_fallback(args);
    }
    if (PyObject_GetBuffer(args[1], &b, PyBUF_ND | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        PyBuffer_Release(&a);
        return call_fallback(args);
    }
    if (!is_f32_vector(a) || !is_f32_vector(b) || a.shape[0] != b.shape[0] || a.shape[0] == 0) {
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        return call_fallback(args);  // converts or raises the typed error
    }
    float r = pfm::cosine(static_cast<const float*>(a.buf), static_cast<const float*>(b.buf),
                          (std::size_t)a.shape[0]);
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    if (r != r) return call_fallback(args);  // NaN: a zero vector or a non-finite value; name it
    return PyFloat_FromDouble((double)r);
}

PyMethodDef cosine_def = {"cosine", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_cosine)),
                          METH_FASTCALL,
                          "cosine(a, b) -> float\n\nCosine similarity of two 1-D vectors (divides by both norms).\n\n"
                          "float32 C-contiguous vectors take the fast path; other dtypes are converted.\n"
                          "Raises DimensionError, NonFiniteError, ZeroVectorError or InputError."};

void check_pair(const py::array& q, const py::array& g) {
    require_2d(q, "probes");
    require_2d(g, "gallery");
    require(q.shape(1) == g.shape(1), pfm::ErrorKind::dimension,
            "probes have dimension " + std::to_string(q.shape(1)) + " but the gallery has dimension " +
                std::to_string(g.shape(1)) + ": were they made by the same model?");
    require(q.shape(0) > 0, pfm::ErrorKind::empty, "the probe batch is empty: pass at least one probe");
    require(g.shape(0) > 0, pfm::ErrorKind::empty, "the gallery is empty: enroll at least one template");
    require(g.shape(1) > 0, pfm::ErrorKind::input, "templates have dimension 0");
}

pfm::Blocks check_blocks(const i64arr& off, std::size_t d) {
    require(off.ndim() == 1 && off.shape(0) >= 2 && off.shape(0) <= 65, pfm::ErrorKind::input,
            "blocks must be 1-D offsets [0, …, d] describing 1 to 64 blocks");
    const std::int64_t* o = off.data();
    require(o[0] == 0 && o[off.shape(0) - 1] == (std::int64_t)d, pfm::ErrorKind::dimension,
            "blocks must start at 0 and end at the template dimension " + std::to_string(d) + ", got " +
                std::to_string(o[0]) + " … " + std::to_string(o[off.shape(0) - 1]));
    for (py::ssize_t j = 1; j < off.shape(0); ++j)
        require(o[j] > o[j - 1], pfm::ErrorKind::input, "block offsets must be strictly increasing");
    return pfm::Blocks{o, (std::size_t)off.shape(0) - 1};
}

void check_masks(const u64arr& mk, py::ssize_t n, const char* name) {
    require(mk.ndim() == 1 && mk.shape(0) == n, pfm::ErrorKind::dimension,
            std::string(name) + " must be a 1-D uint64 array with one mask per row (" + std::to_string(n) +
                "), got shape of " + std::to_string(mk.ndim() ? mk.shape(0) : 0));
}

void check_fraction(float f) {
    require(f >= 0.0f && f <= 1.0f, pfm::ErrorKind::input,
            "min_fraction must be within [0, 1], got " + std::to_string(f));
}

}  // namespace

void bind_scoring(py::module_& m) {
    m.add_object("cosine", py::reinterpret_steal<py::object>(PyCFunction_New(&cosine_def, nullptr)));
    m.def("_set_cosine_fallback", [](py::object fn) {
        Py_XDECREF(g_cosine_fallback);
        g_cosine_fallback = fn.release().ptr();
    }, py::arg("fn"));
    m.def("cosine_checked", [](const f32arr& a, const f32arr& b) {
        require(a.ndim() == 1 && b.ndim() == 1, pfm::ErrorKind::input, "cosine takes two 1-D vectors");
        require(a.shape(0) == b.shape(0), pfm::ErrorKind::dimension,
                "vectors have dimensions " + std::to_string(a.shape(0)) + " and " + std::to_string(b.shape(0)));
        require(a.shape(0) > 0, pfm::ErrorKind::empty, "vectors are empty");
        return pfm::cosine(a.data(), b.data(), (std::size_t)a.shape(0));
    }, py::arg("a").noconvert(), py::arg("b").noconvert());

    m.def("first_nonfinite_row", [](const f32arr& x) {
        require_2d(x, "array");
        const std::size_t n = x.shape(0), d = x.shape(1);
        py::gil_scoped_release nogil;
        return pfm::first_nonfinite_row(x.data(), n, d);
    }, py::arg("x").noconvert());

    m.def("stream_read", [](const f32arr& x, int variant, std::size_t d) {
        require(x.ndim() >= 1 && x.size() > 0, pfm::ErrorKind::empty, "array is empty");
        require(variant >= 0 && variant <= 2, pfm::ErrorKind::input,
                "stream_read variant must be 0 (one stream), 1 (four streams) or 2 (four rows of d)");
        const std::size_t n = (std::size_t)x.size();
        py::gil_scoped_release nogil;
        return pfm::stream_read(x.data(), n, variant, d);
    }, py::arg("x").noconvert(), py::arg("variant") = 0, py::arg("d") = 0,
       "Reads every float of x once on the thread pool (the active SIMD level): a read-bandwidth probe. "
       "variant 0: one stream per part (returns sum of squares); 1: four streams per part read together; "
       "2: rows of d floats four at a time, as the one-probe scan reads them (1 and 2 return the sum).");

    m.def("scores", [](const f32arr& q, const f32arr& g) {
        check_pair(q, g);
        const std::size_t M = q.shape(0), N = g.shape(0), d = q.shape(1);
        py::array_t<float> out({(py::ssize_t)M, (py::ssize_t)N});
        float* o = out.mutable_data();
        bool ok;
        {
            py::gil_scoped_release nogil;
            ok = pfm::scores(q.data(), M, g.data(), N, d, o);
        }
        return py::make_tuple(out, ok);
    }, py::arg("probes").noconvert(), py::arg("gallery").noconvert());

    m.def("topk", [](const f32arr& q, const f32arr& g, long k) {
        check_pair(q, g);
        require(k >= 1, pfm::ErrorKind::input, "k must be >= 1, got " + std::to_string(k));
        const std::size_t M = q.shape(0), N = g.shape(0), d = q.shape(1);
        const std::size_t kk = std::min<std::size_t>((std::size_t)k, N);
        py::array_t<float> s({(py::ssize_t)M, (py::ssize_t)kk});
        py::array_t<std::int64_t> i({(py::ssize_t)M, (py::ssize_t)kk});
        float* sp = s.mutable_data();
        std::int64_t* ip = i.mutable_data();
        bool ok;
        {
            py::gil_scoped_release nogil;
            ok = pfm::topk(q.data(), M, g.data(), N, d, kk, sp, ip);
        }
        return py::make_tuple(s, i, ok);
    }, py::arg("probes").noconvert(), py::arg("gallery").noconvert(), py::arg("k"));

    m.def("masked_cosine", [](const f32arr& a, const f32arr& b, std::uint64_t ma, std::uint64_t mb,
                              const i64arr& off, float minf) {
        require(a.ndim() == 1 && b.ndim() == 1, pfm::ErrorKind::input, "masked_cosine takes two 1-D vectors");
        require(a.shape(0) == b.shape(0), pfm::ErrorKind::dimension,
                "vectors have dimensions " + std::to_string(a.shape(0)) + " and " + std::to_string(b.shape(0)));
        check_fraction(minf);
        pfm::Blocks bl = check_blocks(off, a.shape(0));
        return pfm::masked_cosine(a.data(), b.data(), a.shape(0), ma, mb, bl, minf);
    }, py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("mask_a"), py::arg("mask_b"),
       py::arg("blocks").noconvert(), py::arg("min_fraction"));

    m.def("masked_scores", [](const f32arr& q, const u64arr& mq, const f32arr& g, const u64arr& mg,
                              const i64arr& off, float minf) {
        check_pair(q, g);
        check_masks(mq, q.shape(0), "probe_masks");
        check_masks(mg, g.shape(0), "gallery_masks");
        check_fraction(minf);
        const std::size_t M = q.shape(0), N = g.shape(0), d = q.shape(1);
        pfm::Blocks bl = check_blocks(off, d);
        py::array_t<float> out({(py::ssize_t)M, (py::ssize_t)N});
        float* o = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            pfm::masked_scores(q.data(), mq.data(), M, g.data(), mg.data(), N, d, bl, minf, o);
        }
        return out;
    }, py::arg("probes").noconvert(), py::arg("probe_masks").noconvert(), py::arg("gallery").noconvert(),
       py::arg("gallery_masks").noconvert(), py::arg("blocks").noconvert(), py::arg("min_fraction"));

    m.def("masked_topk", [](const f32arr& q, const u64arr& mq, const f32arr& g, const u64arr& mg,
                            const i64arr& off, float minf, long k) {
        check_pair(q, g);
        check_masks(mq, q.shape(0), "probe_masks");
        check_masks(mg, g.shape(0), "gallery_masks");
        check_fraction(minf);
        require(k >= 1, pfm::ErrorKind::input, "k must be >= 1, got " + std::to_string(k));
        const std::size_t M = q.shape(0), N = g.shape(0), d = q.shape(1);
        const std::size_t kk = std::min<std::size_t>((std::size_t)k, N);
        pfm::Blocks bl = check_blocks(off, d);
        py::array_t<float> s({(py::ssize_t)M, (py::ssize_t)kk});
        py::array_t<std::int64_t> i({(py::ssize_t)M, (py::ssize_t)kk});
        float* sp = s.mutable_data();
        std::int64_t* ip = i.mutable_data();
        {
            py::gil_scoped_release nogil;
            pfm::masked_topk(q.data(), mq.data(), M, g.data(), mg.data(), N, d, bl, minf, kk, sp, ip);
        }
        return py::make_tuple(s, i);
    }, py::arg("probes").noconvert(), py::arg("probe_masks").noconvert(), py::arg("gallery").noconvert(),
       py::arg("gallery_masks").noconvert(), py::arg("blocks").noconvert(), py::arg("min_fraction"), py::arg("k"));

    m.def("rerank", [](const f32arr& q, const f32arr& g, const i64arr& cand, long k, py::object mq_o,
                       py::object mg_o, py::object off_o, float minf) {
        check_pair(q, g);
        const std::size_t M = q.shape(0), N = g.shape(0), d = q.shape(1);
        require(cand.ndim() == 2 && (std::size_t)cand.shape(0) == M, pfm::ErrorKind::dimension,
                "candidates must be a 2-D int64 array with one row per probe (" + std::to_string(M) + ")");
        require(k >= 1, pfm::ErrorKind::input, "k must be >= 1, got " + std::to_string(k));
        const std::size_t C = cand.shape(1);
        const std::int64_t* cp = cand.data();
        for (std::size_t j = 0; j < M * C; ++j)
            require(cp[j] >= -1 && cp[j] < (std::int64_t)N, pfm::ErrorKind::input,
                    "candidate index " + std::to_string(cp[j]) + " at probe " + std::to_string(j / (C ? C : 1)) +
                        " is outside the gallery [0, " + std::to_string(N) + "); use -1 for padding");
        check_fraction(minf);
        const bool masked = !mq_o.is_none();
        u64arr mq, mg;
        i64arr off;
        pfm::Blocks bl{nullptr, 0};
        if (masked) {
            mq = mq_o.cast<u64arr>();
            mg = mg_o.cast<u64arr>();
            off = off_o.cast<i64arr>();
            check_masks(mq, M, "probe_masks");
            check_masks(mg, N, "gallery_masks");
            bl = check_blocks(off, d);
        }
        // No probe has more than C candidates: more columns would only be padding (and memory).
        const std::size_t kk = std::min<std::size_t>((std::size_t)k, std::max<std::size_t>(C, 1));
        py::array_t<float> s({(py::ssize_t)M, (py::ssize_t)kk});
        py::array_t<std::int64_t> i({(py::ssize_t)M, (py::ssize_t)kk});
        float* sp = s.mutable_data();
        std::int64_t* ip = i.mutable_data();
        {
            py::gil_scoped_release nogil;
            pfm::rerank(q.data(), masked ? mq.data() : nullptr, M, g.data(), masked ? mg.data() : nullptr, N, d,
                        cp, C, masked ? &bl : nullptr, minf, kk, sp, ip);
        }
        return py::make_tuple(s, i);
    }, py::arg("probes").noconvert(), py::arg("gallery").noconvert(), py::arg("candidates").noconvert(),
       py::arg("k"), py::arg("probe_masks"), py::arg("gallery_masks"), py::arg("blocks"), py::arg("min_fraction"));
}

}  // namespace pfm_py
