// Bindings of compact (int8 / bf16) templates: conversion, approximate scores with their bounds,
// the bounded top-k with exact float32 re-score, and the re-rank of a candidate shortlist.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include "common.hpp"
#include "pyfacematch/compact.hpp"

namespace pfm_py {

namespace {

using i8arr = py::array_t<std::int8_t, py::array::c_style>;
using u16arr = py::array_t<std::uint16_t, py::array::c_style>;
using i32arr = py::array_t<std::int32_t, py::array::c_style>;

// A compact matrix as the Python layer holds it: (kind, d, codes, scale, norm, resid, gsum).
struct Held {
    pfm::CompactView v{};
    py::object keep;  // the tuple, alive while the view is used
};

void check_dim(std::size_t d) {
    require(d >= 1 && d <= 65536, pfm::ErrorKind::dimension,
            "compact templates need a dimension within [1, 65536], got " + std::to_string(d));
}

void check_k(long k) { require(k >= 1, pfm::ErrorKind::input, "k must be >= 1, got " + std::to_string(k)); }

// The codes' row stride must be what the kind and dimension give (padding included).
template <class A>
void set_codes(pfm::CompactView& v, const A& codes, pfm::CompactKind kind, const char* what) {
    require_2d(codes, what);
    v.kind = kind;
    v.n = codes.shape(0);
    v.stride = codes.shape(1);
    const std::size_t want = pfm::compact_stride(kind, v.d);
    require(v.stride == want, pfm::ErrorKind::dimension,
            std::string(what) + " have row stride " + std::to_string(v.stride) + ", expected " + std::to_string(want));
    v.codes = codes.data();
}

Held view_of(const py::tuple& t) {
    require(t.size() == 7, pfm::ErrorKind::input, "compact matrix must be (kind, d, codes, scale, norm, resid, gsum)");
    Held h;
    h.keep = t;
    const std::string kind = t[0].cast<std::string>();
    const std::size_t d = t[1].cast<std::size_t>();
    check_dim(d);
    h.v.d = d;
    auto norm = t[4].cast<f32arr>();
    if (kind == "int8") {
        auto codes = t[2].cast<i8arr>();
        auto scale = t[3].cast<f32arr>();
        auto resid = t[5].cast<f32arr>();
        auto gsum = t[6].cast<i32arr>();
        set_codes(h.v, codes, pfm::CompactKind::int8, "int8 codes");
        require((std::size_t)scale.size() == h.v.n && (std::size_t)resid.size() == h.v.n &&
                    (std::size_t)gsum.size() == h.v.n && (std::size_t)norm.size() == h.v.n,
                pfm::ErrorKind::dimension, "int8 scale/norm/resid/gsum must hold one value per row");
        h.v.scale = scale.data();
        h.v.resid = resid.data();
        h.v.gsum = gsum.data();
    } else if (kind == "bf16") {
        auto codes = t[2].cast<u16arr>();
        set_codes(h.v, codes, pfm::CompactKind::bf16, "bf16 codes");
        require((std::size_t)norm.size() == h.v.n, pfm::ErrorKind::dimension, "bf16 norm must hold one value per row");
    } else {
        throw pfm::Error(pfm::ErrorKind::input, "compact kind must be 'int8' or 'bf16', got '" + kind + "'");
    }
    h.v.norm = norm.data();
    require(h.v.n >= 1, pfm::ErrorKind::empty, "the compact gallery is empty");
    return h;
}

void check_probes(const f32arr& q, const pfm::CompactView& v) {
    require_2d(q, "probes");
    require((std::size_t)q.shape(1) == v.d, pfm::ErrorKind::dimension,
            "probes have dimension " + std::to_string(q.shape(1)) + " but the compact gallery has " + std::to_string(v.d));
    require(q.shape(0) > 0, pfm::ErrorKind::empty, "the probe batch is empty");
}

const float* exact_of(const py::object& G, const pfm::CompactView& v, f32arr& keep) {
    if (G.is_none()) return nullptr;
    keep = G.cast<f32arr>();
    require_2d(keep, "exact templates");
    require((std::size_t)keep.shape(0) == v.n && (std::size_t)keep.shape(1) == v.d, pfm::ErrorKind::dimension,
            "the float32 templates are " + std::to_string(keep.shape(0)) + " × " + std::to_string(keep.shape(1)) +
                " but the compact gallery is " + std::to_string(v.n) + " × " + std::to_string(v.d) +
                ": they must be the same rows");
    return keep.data();
}

}  // namespace

void bind_compact(py::module_& m) {
    m.def("compact_quantize_int8", [](const f32arr& x) {
        require_2d(x, "templates");
        const std::size_t n = x.shape(0), d = x.shape(1);
        check_dim(d);
        const std::size_t st = pfm::compact_stride(pfm::CompactKind::int8, d);
        i8arr codes({(py::ssize_t)n, (py::ssize_t)st});
        f32arr scale((py::ssize_t)n), norm((py::ssize_t)n), resid((py::ssize_t)n);
        i32arr gsum((py::ssize_t)n);
        bool ok;
        {
            py::gil_scoped_release nogil;
            ok = pfm::compact_quantize_int8(x.data(), n, d, codes.mutable_data(), scale.mutable_data(),
                                            norm.mutable_data(), resid.mutable_data(), gsum.mutable_data());
        }
        return py::make_tuple(codes, scale, norm, resid, gsum, ok);
    }, py::arg("templates").noconvert());

    m.def("compact_convert_bf16", [](const f32arr& x) {
        require_2d(x, "templates");
        const std::size_t n = x.shape(0), d = x.shape(1);
        check_dim(d);
        const std::size_t st = pfm::compact_stride(pfm::CompactKind::bf16, d);
        u16arr codes({(py::ssize_t)n, (py::ssize_t)st});
        f32arr norm((py::ssize_t)n);
        bool ok;
        {
            py::gil_scoped_release nogil;
            ok = pfm::compact_convert_bf16(x.data(), n, d, codes.mutable_data(), norm.mutable_data());
        }
        return py::make_tuple(codes, norm, ok);
    }, py::arg("templates").noconvert());

    m.def("compact_scores", [](const py::tuple& g, const f32arr& q) {
        Held h = view_of(g);
        check_probes(q, h.v);
        const std::size_t M = q.shape(0);
        f32arr out({(py::ssize_t)M, (py::ssize_t)h.v.n}), bound({(py::ssize_t)M, (py::ssize_t)h.v.n});
        float* o = out.mutable_data();
        float* b = bound.mutable_data();
        {
            py::gil_scoped_release nogil;
            pfm::compact_scores(h.v, q.data(), M, o, b);
        }
        return py::make_tuple(out, bound);
    }, py::arg("gallery"), py::arg("probes").noconvert());

    m.def("compact_topk", [](const py::tuple& g, const f32arr& q, const py::object& G, long k) {
        Held h = view_of(g);
        check_probes(q, h.v);
        check_k(k);
        f32arr keep;
        const float* gp = exact_of(G, h.v, keep);
        const std::size_t M = q.shape(0), kk = std::min<std::size_t>((std::size_t)k, h.v.n);
        f32arr s({(py::ssize_t)M, (py::ssize_t)kk});
        i64arr i({(py::ssize_t)M, (py::ssize_t)kk});
        i64arr nc((py::ssize_t)M);
        float* sp = s.mutable_data();
        std::int64_t* ip = i.mutable_data();
        std::int64_t* cp = nc.mutable_data();
        bool ok;
        {
            py::gil_scoped_release nogil;
            ok = pfm::compact_topk(h.v, q.data(), M, gp, kk, sp, ip, cp);
        }
        return py::make_tuple(s, i, nc, ok);
    }, py::arg("gallery"), py::arg("probes").noconvert(), py::arg("exact"), py::arg("k"));

    m.def("compact_candidates", [](const py::tuple& g, const f32arr& q, long k) {
        Held h = view_of(g);
        check_probes(q, h.v);
        check_k(k);
        const std::size_t M = q.shape(0), kk = std::min<std::size_t>((std::size_t)k, h.v.n);
        std::vector<std::vector<std::int64_t>> rows;
        {
            py::gil_scoped_release nogil;
            pfm::compact_candidates(h.v, q.data(), M, kk, rows);
        }
        py::list out;
        for (auto& r : rows) {
            i64arr a((py::ssize_t)r.size());
            if (!r.empty()) std::memcpy(a.mutable_data(), r.data(), r.size() * sizeof(std::int64_t));
            out.append(a);
        }
        return out;
    }, py::arg("gallery"), py::arg("probes").noconvert(), py::arg("k"));

    m.def("compact_rerank", [](const py::tuple& g, const f32arr& q, const py::object& G, const i64arr& cand, long k) {
        Held h = view_of(g);
        check_probes(q, h.v);
        check_k(k);
        f32arr keep;
        const float* gp = exact_of(G, h.v, keep);
        require(gp != nullptr, pfm::ErrorKind::input, "compact re-rank needs the float32 templates (exact)");
        require_2d(cand, "candidates");
        require(cand.shape(0) == q.shape(0), pfm::ErrorKind::dimension, "one row of candidates per probe is needed");
        const std::size_t M = q.shape(0), C = cand.shape(1);
        require(C >= 1, pfm::ErrorKind::empty, "the candidate lists are empty");
        const std::int64_t* cd = cand.data();
        for (std::size_t j = 0; j < M * C; ++j)
            require(cd[j] >= -1 && cd[j] < (std::int64_t)h.v.n, pfm::ErrorKind::input,
                    "candidate row " + std::to_string(cd[j]) + " is outside [0, " + std::to_string(h.v.n) +
                        ") (use -1 for padding)");
        const std::size_t kk = std::min<std::size_t>((std::size_t)k, C);
        f32arr s({(py::ssize_t)M, (py::ssize_t)kk});
        i64arr i({(py::ssize_t)M, (py::ssize_t)kk});
        i64arr nc((py::ssize_t)M);
        float* sp = s.mutable_data();
        std::int64_t* ip = i.mutable_data();
        std::int64_t* cp = nc.mutable_data();
        bool ok;
        {
            py::gil_scoped_release nogil;
            ok = pfm::compact_rerank(h.v, q.data(), M, gp, cd, C, kk, sp, ip, cp);
        }
        return py::make_tuple(s, i, nc, ok);
    }, py::arg("gallery"), py::arg("probes").noconvert(), py::arg("exact"), py::arg("candidates").noconvert(),
       py::arg("k"));
}

}  // namespace pfm_py
