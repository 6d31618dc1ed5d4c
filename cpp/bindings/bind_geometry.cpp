// Bindings of the geometry kernels: check shapes, take pointers under the GIL, release it, call the
// core, return numpy arrays allocated here. Arrays arrive with the right dtype (pyfacematch.geometry
// converts once); noconvert() keeps anything from being copied silently.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "common.hpp"
#include "pyfacematch/geometry.hpp"

namespace pfm_py {

namespace {

using i32arr = py::array_t<std::int32_t, py::array::c_style>;

struct Faces {
    const float* X;
    const std::uint8_t* vis;
    std::size_t n, P, D;
    const float* mean;
    const float* weights;
};

Faces check_faces(const f32arr& X, const py::object& vis, const f32arr& mean, const py::object& weights) {
    require(X.ndim() == 3, pfm::ErrorKind::input,
            "landmarks must be a 3-D array (faces × points × coordinates), got " + std::to_string(X.ndim()) + "-D");
    Faces f{X.data(), nullptr, (std::size_t)X.shape(0), (std::size_t)X.shape(1), (std::size_t)X.shape(2),
            mean.data(), nullptr};
    require(f.D == 2 || f.D == 3, pfm::ErrorKind::dimension,
            "landmarks must have 2 or 3 coordinates per point, got " + std::to_string(f.D));
    require(mean.ndim() == 2 && (std::size_t)mean.shape(0) == f.P && (std::size_t)mean.shape(1) == f.D,
            pfm::ErrorKind::dimension, "mean shape must be (points, coordinates) matching the landmarks");
    if (!vis.is_none()) {
        auto v = vis.cast<u8arr>();
        require(v.ptr() == vis.ptr(), pfm::ErrorKind::dtype, "visibility must be a C-contiguous uint8 array");
        require(v.ndim() == 2 && (std::size_t)v.shape(0) == f.n && (std::size_t)v.shape(1) == f.P,
                pfm::ErrorKind::dimension, "visibility must be (faces, points) matching the landmarks");
        f.vis = v.data();
    }
    if (!weights.is_none()) {
        auto w = weights.cast<f32arr>();
        require(w.ptr() == weights.ptr(), pfm::ErrorKind::dtype, "weights must be a C-contiguous float32 array");
        require(w.ndim() == 1 && (std::size_t)w.shape(0) == f.P, pfm::ErrorKind::dimension,
                "weights must be (points,) matching the landmarks");
        f.weights = w.data();
    }
    return f;
}

pfm::FeatureSpec make_spec(const i32arr& kind, const i32arr& p, const i32arr& q, const f32arr& fill,
                           const i64arr& feat_offsets, const i32arr& point_block,
                           const i32arr& block_min_visible, std::size_t P, std::size_t D) {
    pfm::FeatureSpec s;
    s.n_features = (std::size_t)kind.size();
    require(p.size() == kind.size() && q.size() == kind.size() && fill.size() == kind.size(),
            pfm::ErrorKind::dimension, "feature arrays kind, p, q, fill must have one entry per feature");
    s.n_blocks = (std::size_t)block_min_visible.size();
    require(s.n_blocks >= 1 && s.n_blocks <= 64, pfm::ErrorKind::input, "between 1 and 64 blocks are supported");
    require((std::size_t)feat_offsets.size() == s.n_blocks + 1, pfm::ErrorKind::dimension,
            "feat_offsets must have blocks + 1 entries");
    require((std::size_t)point_block.size() == P, pfm::ErrorKind::dimension,
            "point_block must have one entry per point");
    const auto* off = feat_offsets.data();
    require(off[0] == 0 && (std::size_t)off[s.n_blocks] == s.n_features, pfm::ErrorKind::input,
            "feat_offsets must run from 0 to the number of features");
    for (std::size_t b = 0; b < s.n_blocks; ++b)
        require(off[b] <= off[b + 1], pfm::ErrorKind::input, "feat_offsets must be non-decreasing");
    for (std::size_t i = 0; i < s.n_features; ++i) {
        int k = kind.data()[i];
        require(k >= -1 && k < (int)D, pfm::ErrorKind::input, "feature kind must be -1 (distance) or an axis");
        require(p.data()[i] >= 0 && (std::size_t)p.data()[i] < P && (k >= 0 || (q.data()[i] >= 0 && (std::size_t)q.data()[i] < P)),
                pfm::ErrorKind::input, "feature point index out of range");
    }
    for (std::size_t i = 0; i < P; ++i)
        require(point_block.data()[i] >= -1 && point_block.data()[i] < (int)s.n_blocks, pfm::ErrorKind::input,
                "point_block entries must be -1 or a block index");
    s.kind = kind.data();
    s.p = p.data();
    s.q = q.data();
    s.fill = fill.data();
    s.feat_offsets = off;
    s.point_block = point_block.data();
    s.block_min_visible = block_min_visible.data();
    return s;
}

}  // namespace

void bind_geometry(py::module_& m) {
    m.def(
        "geometry_align",
        [](const f32arr& X, const py::object& vis, const f32arr& mean, const py::object& weights,
           std::size_t min_visible) {
            Faces f = check_faces(X, vis, mean, weights);
            f32arr aligned({f.n, f.P, f.D});
            f32arr transform({f.n, 1 + f.D * f.D + f.D});
            f32arr residual(f.n);
            i32arr status(f.n);
            {
                py::gil_scoped_release nogil;
                pfm::align_batch(f.X, f.vis, f.n, f.P, f.D, f.mean, f.weights, min_visible,
                                 aligned.mutable_data(), transform.mutable_data(), residual.mutable_data(),
                                 status.mutable_data());
            }
            return py::make_tuple(aligned, transform, residual, status);
        },
        py::arg("landmarks").noconvert(), py::arg("visibility"), py::arg("mean").noconvert(),
        py::arg("weights"), py::arg("min_visible"),
        "Weighted similarity alignment of (n, P, D) faces to the mean; returns (aligned, transform, residual, status).");

    m.def(
        "geometry_features",
        [](const f32arr& X, const py::object& vis, const f32arr& mean, const py::object& weights,
           std::size_t min_visible, const i32arr& kind, const i32arr& p, const i32arr& q, const f32arr& fill,
           const i64arr& feat_offsets, const i32arr& point_block, const i32arr& block_min_visible) {
            Faces f = check_faces(X, vis, mean, weights);
            pfm::FeatureSpec s = make_spec(kind, p, q, fill, feat_offsets, point_block, block_min_visible, f.P, f.D);
            f32arr feats({f.n, s.n_features});
            u64arr masks(f.n);
            i32arr status(f.n);
            {
                py::gil_scoped_release nogil;
                pfm::features_batch(f.X, f.vis, f.n, f.P, f.D, f.mean, f.weights, min_visible, s,
                                    feats.mutable_data(), masks.mutable_data(), status.mutable_data());
            }
            return py::make_tuple(feats, masks, status);
        },
        py::arg("landmarks").noconvert(), py::arg("visibility"), py::arg("mean").noconvert(),
        py::arg("weights"), py::arg("min_visible"), py::arg("kind").noconvert(), py::arg("p").noconvert(),
        py::arg("q").noconvert(), py::arg("fill").noconvert(), py::arg("feat_offsets").noconvert(),
        py::arg("point_block").noconvert(), py::arg("block_min_visible").noconvert(),
        "Per-region features of (n, P, D) faces; returns (features (n, F), masks (n,), status (n,)).");

    m.def(
        "geometry_encode",
        [](const f32arr& X, const py::object& vis, const f32arr& mean, const py::object& weights,
           std::size_t min_visible, const i32arr& kind, const i32arr& p, const i32arr& q, const f32arr& fill,
           const i64arr& feat_offsets, const i32arr& point_block, const i32arr& block_min_visible,
           const f32arr& mu, const f32arr& W, const i64arr& w_offsets, const i64arr& key_offsets) {
            Faces f = check_faces(X, vis, mean, weights);
            pfm::FeatureSpec s = make_spec(kind, p, q, fill, feat_offsets, point_block, block_min_visible, f.P, f.D);
            const std::size_t B = s.n_blocks;
            require((std::size_t)mu.size() == s.n_features, pfm::ErrorKind::dimension, "mu must have one entry per feature");
            require((std::size_t)w_offsets.size() == B && (std::size_t)key_offsets.size() == B + 1,
                    pfm::ErrorKind::dimension, "w_offsets must have B entries and key_offsets B + 1");
            const auto* ko = key_offsets.data();
            const auto* wo = w_offsets.data();
            require(ko[0] == 0, pfm::ErrorKind::input, "key_offsets must start at 0");
            for (std::size_t b = 0; b < B; ++b) {
                require(ko[b] <= ko[b + 1], pfm::ErrorKind::input, "key_offsets must be non-decreasing");
                std::int64_t need = (s.feat_offsets[b + 1] - s.feat_offsets[b]) * (ko[b + 1] - ko[b]);
                require(wo[b] >= 0 && wo[b] + need <= (std::int64_t)W.size(), pfm::ErrorKind::dimension,
                        "projection matrix block " + std::to_string(b) + " runs past the end of W");
            }
            pfm::KeyProjection pj{mu.data(), W.data(), wo, ko};
            const std::size_t d = (std::size_t)ko[B];
            f32arr keys({f.n, d});
            u64arr masks(f.n);
            i32arr status(f.n);
            f32arr residual(f.n);
            {
                py::gil_scoped_release nogil;
                pfm::encode_batch(f.X, f.vis, f.n, f.P, f.D, f.mean, f.weights, min_visible, s, pj,
                                  keys.mutable_data(), masks.mutable_data(), status.mutable_data(),
                                  residual.mutable_data());
            }
            return py::make_tuple(keys, masks, status, residual);
        },
        py::arg("landmarks").noconvert(), py::arg("visibility"), py::arg("mean").noconvert(),
        py::arg("weights"), py::arg("min_visible"), py::arg("kind").noconvert(), py::arg("p").noconvert(),
        py::arg("q").noconvert(), py::arg("fill").noconvert(), py::arg("feat_offsets").noconvert(),
        py::arg("point_block").noconvert(), py::arg("block_min_visible").noconvert(), py::arg("mu").noconvert(),
        py::arg("W").noconvert(), py::arg("w_offsets").noconvert(), py::arg("key_offsets").noconvert(),
        "Fused landmark-key encoder; returns (keys (n, d), masks (n,), status (n,), residual (n,)).");
}

}  // namespace pfm_py
