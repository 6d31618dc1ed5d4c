// Bindings of 1-bit codes: packing and the Hamming top-k scan.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "common.hpp"
#include "pyfacematch/scoring.hpp"

namespace pfm_py {

void bind_codes(py::module_& m) {
    m.def("pack_signs", [](const f32arr& x, py::object center_o) {
        require_2d(x, "templates");
        const std::size_t n = x.shape(0), d = x.shape(1), nb = (d + 7) / 8;
        f32arr center;
        const float* cp = nullptr;
        if (!center_o.is_none()) {
            center = center_o.cast<f32arr>();
            require(center.ndim() == 1 && (std::size_t)center.shape(0) == d, pfm::ErrorKind::dimension,
                    "center must be 1-D of the template dimension " + std::to_string(d));
            cp = center.data();
        }
        py::array_t<std::uint8_t> out({(py::ssize_t)n, (py::ssize_t)nb});
        std::uint8_t* o = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            pfm::pack_signs(x.data(), n, d, cp, o);
        }
        return out;
    }, py::arg("templates").noconvert(), py::arg("center"));

    m.def("hamming_topk", [](const u8arr& q, const u8arr& g, long k) {
        require_2d(q, "probe_codes");
        require_2d(g, "gallery_codes");
        require(q.shape(1) == g.shape(1), pfm::ErrorKind::dimension,
                "probe codes have " + std::to_string(q.shape(1)) + " bytes but gallery codes have " +
                    std::to_string(g.shape(1)));
        require(q.shape(0) > 0, pfm::ErrorKind::empty, "the probe batch is empty");
        require(g.shape(0) > 0, pfm::ErrorKind::empty, "the gallery is empty");
        require(k >= 1, pfm::ErrorKind::input, "k must be >= 1, got " + std::to_string(k));
        const std::size_t M = q.shape(0), N = g.shape(0), nb = q.shape(1);
        const std::size_t kk = std::min<std::size_t>((std::size_t)k, N);
        py::array_t<std::int32_t> dist({(py::ssize_t)M, (py::ssize_t)kk});
        py::array_t<std::int64_t> idx({(py::ssize_t)M, (py::ssize_t)kk});
        std::int32_t* dp = dist.mutable_data();
        std::int64_t* ip = idx.mutable_data();
        {
            py::gil_scoped_release nogil;
            pfm::hamming_topk(q.data(), M, g.data(), N, nb, kk, dp, ip);
        }
        return py::make_tuple(dist, idx);
    }, py::arg("probe_codes").noconvert(), py::arg("gallery_codes").noconvert(), py::arg("k"));

    m.def("hamming_topk2", [](const u8arr& qa, const u8arr& qb, const u8arr& ga, const u8arr& gb, long k,
                              long admit) {
        require_2d(qa, "probe_codes (first plane)");
        require_2d(qb, "probe_codes (second plane)");
        require_2d(ga, "gallery first plane");
        require_2d(gb, "gallery second plane");
        require(qa.shape(1) == ga.shape(1) && qb.shape(1) == gb.shape(1), pfm::ErrorKind::dimension,
                "probe code planes have " + std::to_string(qa.shape(1)) + " + " + std::to_string(qb.shape(1)) +
                    " bytes but gallery planes have " + std::to_string(ga.shape(1)) + " + " +
                    std::to_string(gb.shape(1)));
        require(qa.shape(0) == qb.shape(0) && ga.shape(0) == gb.shape(0), pfm::ErrorKind::dimension,
                "both planes must have the same number of rows");
        require(qa.shape(0) > 0, pfm::ErrorKind::empty, "the probe batch is empty");
        require(ga.shape(0) > 0, pfm::ErrorKind::empty, "the gallery is empty");
        require(k >= 1, pfm::ErrorKind::input, "k must be >= 1, got " + std::to_string(k));
        require(admit >= 1, pfm::ErrorKind::input, "scan must be >= 1, got " + std::to_string(admit));
        const std::size_t M = qa.shape(0), N = ga.shape(0);
        const std::size_t kk = std::min<std::size_t>((std::size_t)k, N);
        const std::size_t ak = std::min<std::size_t>(std::max<std::size_t>((std::size_t)admit, kk), N);
        py::array_t<std::int32_t> dist({(py::ssize_t)M, (py::ssize_t)kk});
        py::array_t<std::int64_t> idx({(py::ssize_t)M, (py::ssize_t)kk});
        std::int32_t* dp = dist.mutable_data();
        std::int64_t* ip = idx.mutable_data();
        {
            py::gil_scoped_release nogil;
            pfm::hamming_topk2(qa.data(), qb.data(), M, ga.data(), gb.data(), N, qa.shape(1), qb.shape(1), ak, kk,
                               dp, ip);
        }
        return py::make_tuple(dist, idx);
    }, py::arg("probe_first").noconvert(), py::arg("probe_rest").noconvert(), py::arg("gallery_first").noconvert(),
       py::arg("gallery_rest").noconvert(), py::arg("k"), py::arg("scan"));
}

}  // namespace pfm_py
