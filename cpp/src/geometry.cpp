// Face geometry kernels: per-face work is small (P ~ 68..478 points), so faces are split into
// contiguous ranges over the pool; each face is independent and nothing here allocates per face.
#include "pyfacematch/geometry.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "pyfacematch/simd.hpp"
#include "simd/table.hpp"
#include "pyfacematch/threads.hpp"

namespace pfm {

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

/// Cyclic Jacobi eigen-decomposition of a symmetric N×N matrix (in place). evecs columns.
template <int N>
void jacobi_eigen(double a[N][N], double evals[N], double evecs[N][N]) {
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) evecs[i][j] = (i == j) ? 1.0 : 0.0;
    for (int sweep = 0; sweep < 50; ++sweep) {
        double off = 0.0, diag = 0.0;
        for (int i = 0; i < N; ++i) {
            diag += a[i][i] * a[i][i];
            for (int j = i + 1; j < N; ++j) off += a[i][j] * a[i][j];
        }
        if (off <= 1e-30 * diag || off == 0.0) break;
        for (int p = 0; p < N - 1; ++p) {
            for (int q = p + 1; q < N; ++q) {
                if (a[p][q] == 0.0) continue;
                double theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
                double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < N; ++k) {  // A <- A J (columns p, q)
                    double akp = a[k][p], akq = a[k][q];
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for (int k = 0; k < N; ++k) {  // A <- J^T A (rows p, q)
                    double apk = a[p][k], aqk = a[q][k];
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for (int k = 0; k < N; ++k) {
                    double vkp = evecs[k][p], vkq = evecs[k][q];
                    evecs[k][p] = c * vkp - s * vkq;
                    evecs[k][q] = s * vkp + c * vkq;
                }
            }
        }
    }
    for (int i = 0; i < N; ++i) evals[i] = a[i][i];
}

/// Similarity transform: y = s R x + t (R row-major D×D).
struct Sim {
    double s = 0, R[9] = {0}, t[3] = {0};
};

inline bool visible(const std::uint8_t* v, std::size_t p) { return v == nullptr || v[p] != 0; }

/// Aligns one face; returns a FaceStatus and fills T / residual when ok.
/// One pass over the points accumulates weighted moments (double) about a reference point (the
/// first visible one, to keep cancellation small for pixel coordinates); hidden points are
/// selected out (never multiplied), so they may hold NaN; NaN/Inf in a visible point propagates
/// into the sums and is detected once at the end.
template <int D>
std::int32_t align_one_t(const float* x, const std::uint8_t* v, std::size_t P, const float* mean,
                         const float* w, std::size_t min_visible, Sim& T, double& residual) {
    std::size_t first = 0;
    if (v) {
        while (first < P && !v[first]) ++first;
        if (first == P) return face_all_hidden;
    }
    double ref[D];
    for (int a = 0; a < D; ++a) ref[a] = std::isfinite(x[first * D + a]) ? x[first * D + a] : 0.0;
    double sw = 0, sx[D] = {}, sy[D] = {}, sxx[D][D] = {}, sxy[D][D] = {}, syy = 0;
    std::size_t nvis = 0;
    for (std::size_t p = 0; p < P; ++p) {
        const bool vis = v ? v[p] != 0 : true;
        nvis += vis;
        const double wp = vis ? (w ? (double)w[p] : 1.0) : 0.0;
        double xa[D], ya[D];
        for (int a = 0; a < D; ++a) {
            xa[a] = vis ? (double)x[p * D + a] - ref[a] : 0.0;
            ya[a] = mean[p * D + a];
        }
        sw += wp;
        for (int a = 0; a < D; ++a) {
            const double wx = wp * xa[a];
            sx[a] += wx;
            sy[a] += wp * ya[a];
            syy += wp * ya[a] * ya[a];
            for (int b = 0; b < D; ++b) {
                sxx[a][b] += wx * xa[b];
                sxy[a][b] += wx * ya[b];
            }
        }
    }
    if (nvis == 0) return face_all_hidden;
    bool finite = std::isfinite(sw);
    for (int a = 0; a < D; ++a) {
        finite = finite && std::isfinite(sx[a]);
        for (int b = 0; b < D; ++b) finite = finite && std::isfinite(sxx[a][b]) && std::isfinite(sxy[a][b]);
    }
    if (!finite) return face_non_finite;
    if (nvis < std::max<std::size_t>(min_visible, 2)) return face_too_few_visible;
    if (!(sw > 0)) return face_too_few_visible;
    double mx[3] = {0, 0, 0}, my[3] = {0, 0, 0};
    for (int a = 0; a < D; ++a) {
        mx[a] = sx[a] / sw;
        my[a] = sy[a] / sw;
    }
    double Sxx = 0, C[3][3] = {{0}}, M[3][3] = {{0}};
    for (int a = 0; a < D; ++a) {
        for (int b = 0; b < D; ++b) {
            C[a][b] = sxx[a][b] - sw * mx[a] * mx[b];
            M[a][b] = sxy[a][b] - sw * mx[a] * my[b];
        }
        Sxx += C[a][a];
    }
    double Syy = syy;
    for (int a = 0; a < D; ++a) Syy -= sw * my[a] * my[a];
    // collapsed: no spread, or spread along one line only (second eigenvalue ~ 0)
    double ref2 = 0;
    for (int a = 0; a < D; ++a) ref2 = std::max(ref2, ref[a] * ref[a] + mx[a] * mx[a]);
    if (!(Sxx > 1e-20 * (ref2 + 1.0) * sw)) return face_collapsed;
    double second;
    if (D == 2) {
        double tr = C[0][0] + C[1][1], det = C[0][0] * C[1][1] - C[0][1] * C[1][0];
        double disc = std::sqrt(std::max(0.0, tr * tr / 4 - det));
        second = tr / 2 - disc;
    } else {
        double A[3][3], ev[3], V[3][3];
        std::memcpy(A, C, sizeof(A));
        jacobi_eigen<3>(A, ev, V);
        std::sort(ev, ev + 3);
        second = ev[1];
    }
    if (!(second > 1e-10 * Sxx)) return face_collapsed;

    double trRM;
    if (D == 2) {
        double a = M[0][0] + M[1][1];  // sum x'.y'
        double b = M[0][1] - M[1][0];  // sum x'_0 y'_1 - x'_1 y'_0
        double h = std::sqrt(a * a + b * b);
        if (!(h > 0)) return face_collapsed;
        T.s = h / Sxx;
        double c = a / h, sn = b / h;
        T.R[0] = c;
        T.R[1] = -sn;
        T.R[2] = sn;
        T.R[3] = c;
        trRM = h;
    } else {
        // Horn (1987): the unit quaternion maximising sum y'.(R x') is the top eigenvector of N.
        const double Sxy = M[0][1], Sxz = M[0][2], Syx = M[1][0], Syz = M[1][2], Szx = M[2][0], Szy = M[2][1];
        const double Sx = M[0][0], Sy = M[1][1], Sz = M[2][2];
        double N[4][4] = {{Sx + Sy + Sz, Syz - Szy, Szx - Sxz, Sxy - Syx},
                          {Syz - Szy, Sx - Sy - Sz, Sxy + Syx, Szx + Sxz},
                          {Szx - Sxz, Sxy + Syx, -Sx + Sy - Sz, Syz + Szy},
                          {Sxy - Syx, Szx + Sxz, Syz + Szy, -Sx - Sy + Sz}};
        double ev[4], V[4][4];
        jacobi_eigen<4>(N, ev, V);
        int k = 0;
        for (int i = 1; i < 4; ++i)
            if (ev[i] > ev[k]) k = i;
        double q0 = V[0][k], qx = V[1][k], qy = V[2][k], qz = V[3][k];
        double qn = std::sqrt(q0 * q0 + qx * qx + qy * qy + qz * qz);
        q0 /= qn;
        qx /= qn;
        qy /= qn;
        qz /= qn;
        double* R = T.R;
        R[0] = q0 * q0 + qx * qx - qy * qy - qz * qz;
        R[1] = 2 * (qx * qy - q0 * qz);
        R[2] = 2 * (qx * qz + q0 * qy);
        R[3] = 2 * (qy * qx + q0 * qz);
        R[4] = q0 * q0 - qx * qx + qy * qy - qz * qz;
        R[5] = 2 * (qy * qz - q0 * qx);
        R[6] = 2 * (qz * qx - q0 * qy);
        R[7] = 2 * (qz * qy + q0 * qx);
        R[8] = q0 * q0 - qx * qx - qy * qy + qz * qz;
        // s = sum y'.(R x') / Sxx = trace(R M) / Sxx  with M[a][b] = sum x'_a y'_b
        double tr = 0;
        for (int a = 0; a < 3; ++a)
            for (int b = 0; b < 3; ++b) tr += R[a * 3 + b] * M[b][a];
        if (!(tr > 0)) return face_collapsed;
        T.s = tr / Sxx;
        trRM = tr;
    }
    // t maps the (reference-shifted) centroid onto the mean's centroid: y = s R (x - ref) + t'
    for (int a = 0; a < D; ++a) {
        double rx = 0, rr = 0;
        for (int b = 0; b < D; ++b) {
            rx += T.R[a * D + b] * mx[b];
            rr += T.R[a * D + b] * ref[b];
        }
        T.t[a] = my[a] - T.s * rx - T.s * rr;
    }
    if (!std::isfinite(T.s) || !(T.s > 0)) return face_collapsed;
    // at the optimum, sum w |s R x' + t - y|^2 = Syy - s tr(R M)
    residual = std::sqrt(std::max(0.0, Syy - T.s * trRM) / sw);
    return face_ok;
}

std::int32_t align_one(const float* x, const std::uint8_t* v, std::size_t P, std::size_t D,
                       const float* mean, const float* w, std::size_t min_visible, Sim& T,
                       double& residual) {
    return D == 2 ? align_one_t<2>(x, v, P, mean, w, min_visible, T, residual)
                  : align_one_t<3>(x, v, P, mean, w, min_visible, T, residual);
}

/// Applies T to every point of a face (float32 out).
inline void apply(const Sim& T, const float* x, std::size_t P, std::size_t D, float* out) {
    float sR[9], t[3];
    for (std::size_t i = 0; i < D * D; ++i) sR[i] = static_cast<float>(T.s * T.R[i]);
    for (std::size_t a = 0; a < D; ++a) t[a] = static_cast<float>(T.t[a]);
    if (D == 2) {
        for (std::size_t p = 0; p < P; ++p) {
            float x0 = x[2 * p], x1 = x[2 * p + 1];
            out[2 * p] = sR[0] * x0 + sR[1] * x1 + t[0];
            out[2 * p + 1] = sR[2] * x0 + sR[3] * x1 + t[1];
        }
    } else {
        for (std::size_t p = 0; p < P; ++p) {
            float x0 = x[3 * p], x1 = x[3 * p + 1], x2 = x[3 * p + 2];
            out[3 * p] = sR[0] * x0 + sR[1] * x1 + sR[2] * x2 + t[0];
            out[3 * p + 1] = sR[3] * x0 + sR[4] * x1 + sR[5] * x2 + t[1];
            out[3 * p + 2] = sR[6] * x0 + sR[7] * x1 + sR[8] * x2 + t[2];
        }
    }
}

/// Splits n faces over the pool in contiguous ranges; fn(begin, end).
template <class F>
void for_ranges(std::size_t n, F&& fn) {
    if (n == 0) return;
    std::size_t parts = std::min<std::size_t>(n, std::max<std::size_t>(1, get_num_threads()) * 4);
    if (n < 256) parts = 1;
    parallel_for(parts, [&](std::size_t k) {
        std::size_t b = n * k / parts, e = n * (k + 1) / parts;
        fn(b, e);
    });
}

/// Features of one aligned face + block mask.
void face_features(const float* al, const std::uint8_t* v, std::size_t P, std::size_t D,
                   const FeatureSpec& sp, float* f, std::uint64_t& mask, int* block_count) {
    for (std::size_t b = 0; b < sp.n_blocks; ++b) block_count[b] = 0;
    for (std::size_t p = 0; p < P; ++p) {
        int b = sp.point_block[p];
        if (b >= 0 && visible(v, p)) ++block_count[b];
    }
    mask = 0;
    for (std::size_t b = 0; b < sp.n_blocks; ++b)
        if (block_count[b] >= sp.block_min_visible[b] && block_count[b] > 0) mask |= (std::uint64_t(1) << b);
    for (std::size_t i = 0; i < sp.n_features; ++i) {
        const int k = sp.kind[i];
        const std::size_t p = (std::size_t)sp.p[i];
        if (k >= 0) {
            f[i] = visible(v, p) ? al[p * D + k] : sp.fill[i];
        } else {
            const std::size_t q = (std::size_t)sp.q[i];
            if (visible(v, p) && visible(v, q)) {
                float s = 0;
                for (std::size_t a = 0; a < D; ++a) {
                    float d = al[p * D + a] - al[q * D + a];
                    s += d * d;
                }
                f[i] = std::sqrt(s);
            } else {
                f[i] = sp.fill[i];
            }
        }
    }
}

}  // namespace

void align_batch(const float* X, const std::uint8_t* vis, std::size_t n, std::size_t P, std::size_t D,
                 const float* mean, const float* weights, std::size_t min_visible, float* aligned,
                 float* transform, float* residual, std::int32_t* status) {
    const std::size_t tw = 1 + D * D + D;
    for_ranges(n, [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) {
            const float* x = X + i * P * D;
            const std::uint8_t* v = vis ? vis + i * P : nullptr;
            Sim T;
            double res = 0;
            std::int32_t st = align_one(x, v, P, D, mean, weights, min_visible, T, res);
            status[i] = st;
            if (st == face_ok) {
                if (aligned) apply(T, x, P, D, aligned + i * P * D);
                if (transform) {
                    float* o = transform + i * tw;
                    o[0] = (float)T.s;
                    for (std::size_t k = 0; k < D * D; ++k) o[1 + k] = (float)T.R[k];
                    for (std::size_t a = 0; a < D; ++a) o[1 + D * D + a] = (float)T.t[a];
                }
                if (residual) residual[i] = (float)res;
            } else {
                if (aligned) std::fill(aligned + i * P * D, aligned + (i + 1) * P * D, kNaN);
                if (transform) std::fill(transform + i * tw, transform + (i + 1) * tw, kNaN);
                if (residual) residual[i] = kNaN;
            }
        }
    });
}

void features_batch(const float* X, const std::uint8_t* vis, std::size_t n, std::size_t P, std::size_t D,
                    const float* mean, const float* weights, std::size_t min_visible,
                    const FeatureSpec& spec, float* features, std::uint64_t* masks,
                    std::int32_t* status) {
    const std::size_t F = spec.n_features;
    for_ranges(n, [&](std::size_t b, std::size_t e) {
        std::vector<float> al(P * D);
        std::vector<int> cnt(spec.n_blocks + 1);
        for (std::size_t i = b; i < e; ++i) {
            const float* x = X + i * P * D;
            const std::uint8_t* v = vis ? vis + i * P : nullptr;
            Sim T;
            double res = 0;
            std::int32_t st = align_one(x, v, P, D, mean, weights, min_visible, T, res);
            float* f = features + i * F;
            if (st == face_ok) {
                apply(T, x, P, D, al.data());
                face_features(al.data(), v, P, D, spec, f, masks[i], cnt.data());
                if (masks[i] == 0) st = face_no_valid_block;
            }
            if (st != face_ok) {
                std::memcpy(f, spec.fill, F * sizeof(float));
                masks[i] = 0;
            }
            status[i] = st;
        }
    });
}

void encode_batch(const float* X, const std::uint8_t* vis, std::size_t n, std::size_t P, std::size_t D,
                  const float* mean, const float* weights, std::size_t min_visible,
                  const FeatureSpec& spec, const KeyProjection& proj, float* keys,
                  std::uint64_t* masks, std::int32_t* status, float* residual) {
    const std::size_t F = spec.n_features, B = spec.n_blocks;
    const std::size_t d = (std::size_t)proj.key_offsets[B];
    const KernelTable& K = kernels();
    for_ranges(n, [&](std::size_t b0, std::size_t e0) {
        std::vector<float> al(P * D), f(F);
        std::vector<int> cnt(B + 1);
        for (std::size_t i = b0; i < e0; ++i) {
            const float* x = X + i * P * D;
            const std::uint8_t* v = vis ? vis + i * P : nullptr;
            float* key = keys + i * d;
            std::fill(key, key + d, 0.0f);
            Sim T;
            double res = 0;
            std::int32_t st = align_one(x, v, P, D, mean, weights, min_visible, T, res);
            std::uint64_t mask = 0;
            if (st == face_ok) {
                apply(T, x, P, D, al.data());
                face_features(al.data(), v, P, D, spec, f.data(), mask, cnt.data());
                if (mask == 0) st = face_no_valid_block;
            }
            if (st == face_ok) {
                for (std::size_t i0 = 0; i0 < F; ++i0) f[i0] -= proj.mu[i0];
                double norm2 = 0;
                for (std::size_t b = 0; b < B; ++b) {
                    if (!(mask >> b & 1)) continue;
                    const std::size_t f0 = (std::size_t)spec.feat_offsets[b], f1 = (std::size_t)spec.feat_offsets[b + 1];
                    const std::size_t k0 = (std::size_t)proj.key_offsets[b], k1 = (std::size_t)proj.key_offsets[b + 1];
                    const std::size_t db = k1 - k0;
                    const float* Wt = proj.W + proj.w_offsets[b];
                    float* kb = key + k0;
                    // W_b is stored transposed (d_b, F_b): each key value is one dispatched SIMD dot
                    for (std::size_t c = 0; c < db; ++c) kb[c] = K.dot(f.data() + f0, Wt + c * (f1 - f0), f1 - f0);
                    for (std::size_t c = 0; c < db; ++c) norm2 += (double)kb[c] * kb[c];
                }
                if (!(norm2 > 0) || !std::isfinite(norm2)) {
                    std::fill(key, key + d, 0.0f);
                    mask = 0;
                    st = face_collapsed;
                } else {
                    const float inv = (float)(1.0 / std::sqrt(norm2));
                    for (std::size_t c = 0; c < d; ++c) key[c] *= inv;
                }
            }
            masks[i] = st == face_ok ? mask : 0;
            status[i] = st;
            if (residual) residual[i] = st == face_ok ? (float)res : kNaN;
        }
    });
}

}  // namespace pfm
