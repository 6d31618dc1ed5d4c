// Compact templates (int8 per-row scale, bf16): conversion, the bounded compact scan, and the exact
// float32 re-score of the rows the bound cannot rule out. No instruction-set flags here: the wide
// loops are the per-level kernels of simd/compact_table.hpp.
//
// ── The error bound (why the re-scored shortlist is exactly the float32 top-k) ─────────────────────
// Notation: q the probe, g a gallery row (float32 values, taken as reals), t = q·g the real dot, f the
// score the exact kernel computes (K.dot, the re-score and pfm::rerank), â the compact approximate
// score, u = 2^-24 (float32 unit roundoff), γ_d = d·u / (1 − d·u).
//  (0) Exact kernel: any summation order of d float products (FMA or not) satisfies
//      |f − t| ≤ γ_d Σ|q_j g_j| ≤ γ_d |q| |g|                        (Higham, Accuracy and Stability of
//      Numerical Algorithms, 2nd ed., §3.1, eq. 3.5, and Cauchy–Schwarz).
//  int8: q = s_q·a + e, g = s_g·b + h with integer codes a, b (|·| ≤ 127, round to nearest) and
//      residuals e, h whose norms are computed in double at quantisation and rounded up.
//      q·g − (s_q a)·(s_g b) = (s_q a)·h + e·g, so by Cauchy–Schwarz
//  (1) |t − s_q s_g I| ≤ |s_q a| |h| + |e| |g|,  I = Σ a_j b_j computed exactly in int32
//      (|I| ≤ d·127² < 2^31 for d ≤ 65536; the VNNI bias trick stays below d·255·128 < 2^31).
//  (2) â = fl(fl(I) · fl(s_q s_g)): three roundings, |â − s_q s_g I| ≤ 3.001u |s_q s_g I| ≤ 2^-22 |â|.
//      So |â − f| ≤ (|e| + γ_d |q|)·|g| + |s_q a|·|h| + 2^-22 |â|            =: E.
//  bf16: q̂_j = q_j(1 + δ), ĝ_j = g_j(1 + ε), |δ|, |ε| ≤ u_b = 2^-8 (round to nearest even, 8
//      significant bits), products of bf16 pairs are exact in float32, the float32 accumulation adds
//      γ_d Σ|q̂_j ĝ_j| (serial: double, then one rounding, a smaller error); hence
//  (3) |â − f| ≤ ((2u_b + u_b²) + γ_d (1 + u_b)² + γ_d)·|q| |g|                        =: E.
//      VDPBF16PS flushes denormal inputs and outputs: below 2^-126 per term, d·2^-126·(1 + |q| + |g|)
//      in all, covered (also for (1)–(2) under flush-to-zero) by an absolute 2^-100 (1 + |q| + |g|).
//  Evaluation in float: E is computed from constants rounded up, then Ef = fl(E)·(1 + 2^-20) +
//      2^-21 |â| + 2^-100 (1 + |q| + |g|); the extra 2^-20 relative and 2^-22 |â| cover the roundings
//      of evaluating E and of lo = fl(â − Ef), hi = fl(â + Ef) (each ≤ u relative), so lo ≤ f ≤ hi.
//  Selection (ApproxSel, types.hpp): keep the k best lo; a row is a candidate while hi ≥ the k-th best
//      lo. k rows have f ≥ lo ≥ that threshold T, so every row of the float32 top-k (ties → lower row)
//      has hi ≥ f ≥ T and is a candidate; re-scoring the candidates with K.dot in increasing row order
//      through the same heap as rerank returns exactly rerank's answer over all rows.
#include "pyfacematch/compact.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "pyfacematch/simd.hpp"
#include "pyfacematch/threads.hpp"
#include "pyfacematch/types.hpp"
#include "simd/compact_table.hpp"
#include "simd/table.hpp"

namespace pfm {
namespace compact_common_k {
#include "simd/heap_impl.inc"
#include "simd/approx_impl.inc"
}  // namespace compact_common_k

namespace {

namespace ck = compact_common_k;

constexpr double kU = 1.0 / 16777216.0;  // 2^-24
constexpr double kUb = 1.0 / 256.0;      // 2^-8
const float kAbs = std::ldexp(1.0f, -100);
const float kRel = std::ldexp(1.0f, -21);
const float kInflate = 1.0f + std::ldexp(1.0f, -20);
constexpr std::size_t kRowsPerStep = 1024;

inline std::size_t round_up(std::size_t x, std::size_t m) { return (x + m - 1) / m * m; }

// Smallest float >= x (x >= 0, finite double).
inline float up(double x) {
    float f = (float)x;
    if ((double)f < x) f = std::nextafter(f, std::numeric_limits<float>::infinity());
    return f;
}
// A double computed with a few roundings, nudged above the real value it approximates.
inline float up_rel(double x) { return up(x * (1.0 + 1e-12)); }

inline double gamma_d(std::size_t d) { return (double)d * kU / (1.0 - (double)d * kU); }

inline std::uint16_t to_bf16(float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even (inputs are finite)
    return (std::uint16_t)(u >> 16);
}
inline bool bf16_finite(std::uint16_t h) { return (h & 0x7F80u) != 0x7F80u; }

// One row to int8: returns false if the norm overflows float.
bool quantize_row(const float* x, std::size_t d, std::size_t stride, std::int8_t* c, float* scale, float* norm,
                  float* resid, std::int32_t* gsum, double* qt_norm) {
    float amax = 0.0f;
    for (std::size_t j = 0; j < d; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float s = amax / 127.0f;
    const float inv = s > 0.0f ? 1.0f / s : 0.0f;
    double nn = 0.0, rr = 0.0, aa = 0.0;
    std::int32_t sum = 0;
    for (std::size_t j = 0; j < d; ++j) {
        float v = std::nearbyint(x[j] * inv);
        v = std::min(127.0f, std::max(-127.0f, v));
        const std::int8_t code = (std::int8_t)v;
        c[j] = code;
        sum += code;
        const double e = (double)x[j] - (double)s * (double)code;
        nn += (double)x[j] * (double)x[j];
        rr += e * e;
        aa += (double)code * (double)code;
    }
    for (std::size_t j = d; j < stride; ++j) c[j] = 0;
    *scale = s;
    *norm = up_rel(std::sqrt(nn));
    *resid = up_rel(std::sqrt(rr));
    if (gsum) *gsum = sum;
    if (qt_norm) *qt_norm = (double)s * std::sqrt(aa);
    return std::isfinite(*norm) && std::isfinite(*resid);
}

// One row to bf16: returns false if a value rounds to infinity or the norm overflows.
bool bf16_row(const float* x, std::size_t d, std::size_t stride, std::uint16_t* c, float* norm) {
    double nn = 0.0;
    bool ok = true;
    for (std::size_t j = 0; j < d; ++j) {
        c[j] = to_bf16(x[j]);
        ok &= bf16_finite(c[j]);
        nn += (double)x[j] * (double)x[j];
    }
    for (std::size_t j = d; j < stride; ++j) c[j] = 0;
    *norm = up_rel(std::sqrt(nn));
    return ok && std::isfinite(*norm);
}

template <class F>
bool parallel_rows(std::size_t n, std::size_t min_rows, F&& fn) {
    const std::size_t parts = std::max<std::size_t>(1, std::min(get_num_threads() * 4, n / min_rows));
    std::vector<int> ok(parts, 1);
    parallel_for(parts, [&](std::size_t p) {
        const std::size_t r0 = n * p / parts, r1 = n * (p + 1) / parts;
        for (std::size_t r = r0; r < r1; ++r)
            if (!fn(r)) ok[p] = 0;
    });
    return std::all_of(ok.begin(), ok.end(), [](int v) { return v != 0; });
}

// Probes prepared for the compact kernels, with the per-probe constants of the bound.
struct Probes {
    std::size_t m = 0, stride = 0;
    std::vector<std::int8_t> q8;
    std::vector<std::uint16_t> qb;
    std::vector<float> sq, c1, c2, qn;  // int8: E = c1·|g| + c2·|h|;  bf16: E = c1·|g|
};

Probes prepare(const CompactView& g, const float* Q, std::size_t m) {
    Probes P;
    P.m = m;
    P.stride = g.stride;
    P.sq.assign(m, 0.0f);
    P.c1.resize(m);
    P.c2.resize(m);
    P.qn.resize(m);
    const double gd = gamma_d(g.d);
    if (g.kind == CompactKind::int8) {
        P.q8.resize(m * g.stride);
        for (std::size_t i = 0; i < m; ++i) {
            float s, nq, e;
            double qt;
            quantize_row(Q + i * g.d, g.d, g.stride, P.q8.data() + i * g.stride, &s, &nq, &e, nullptr, &qt);
            P.sq[i] = s;
            P.qn[i] = nq;
            P.c1[i] = up_rel((double)e + gd * (double)nq);
            P.c2[i] = up_rel(qt);
        }
    } else {
        P.qb.resize(m * g.stride);
        const double coef = 2.0 * kUb + kUb * kUb + gd * (1.0 + kUb) * (1.0 + kUb) + gd;
        for (std::size_t i = 0; i < m; ++i) {
            float nq;
            bf16_row(Q + i * g.d, g.d, g.stride, P.qb.data() + i * g.stride, &nq);
            P.qn[i] = nq;
            P.c1[i] = up_rel(coef * (double)nq);
            P.c2[i] = 0.0f;
        }
    }
    return P;
}

// Approximate scores and bounds of probes [i0, i0 + mi) on rows [r0, r1); calls emit(i, row, a, e)
// for the rows whose upper bound a + e reaches thr(i) (a bound that only rises as rows are taken).
// Scores and bounds of a block are computed in a loop of their own, which the compiler vectorises.
template <class Thr, class Emit>
void scan(const CompactKernels& CK, const CompactView& g, const Probes& P, std::size_t i0, std::size_t mi,
          std::size_t r0, std::size_t r1, Thr&& thr, Emit&& emit) {
    const std::size_t step = std::min(kRowsPerStep, r1 - r0);
    std::vector<std::int32_t> idot(g.kind == CompactKind::int8 ? mi * step : 0);
    std::vector<float> fdot(g.kind == CompactKind::bf16 ? mi * step : 0);
    std::vector<float> av(step), ev(step);
    for (std::size_t b0 = r0; b0 < r1; b0 += step) {
        const std::size_t b1 = std::min(r1, b0 + step), cnt = b1 - b0;
        if (g.kind == CompactKind::int8)
            CK.int8_dots(P.q8.data() + i0 * P.stride, mi, static_cast<const std::int8_t*>(g.codes), g.gsum, b0, b1,
                         g.stride, idot.data(), step);
        else
            CK.bf16_dots(P.qb.data() + i0 * P.stride, mi, static_cast<const std::uint16_t*>(g.codes), b0, b1,
                         g.stride, fdot.data(), step);
        const float* nr = g.norm + b0;
        for (std::size_t i = 0; i < mi; ++i) {
            const std::size_t q = i0 + i;
            const float c1 = P.c1[q], c2 = P.c2[q], qn1 = 1.0f + P.qn[q];
            float* a = av.data();
            float* e = ev.data();
            if (g.kind == CompactKind::int8) {
                const float sq = P.sq[q];
                const std::int32_t* row = idot.data() + i * step;
                const float* sc = g.scale + b0;
                const float* rs = g.resid + b0;
                for (std::size_t j = 0; j < cnt; ++j) {
                    a[j] = (float)row[j] * (sq * sc[j]);
                    e[j] = (c1 * nr[j] + c2 * rs[j]) * kInflate + kRel * std::fabs(a[j]) + kAbs * (qn1 + nr[j]);
                }
            } else {
                const float* row = fdot.data() + i * step;
                for (std::size_t j = 0; j < cnt; ++j) {
                    a[j] = row[j];
                    e[j] = (c1 * nr[j]) * kInflate + kRel * std::fabs(a[j]) + kAbs * (qn1 + nr[j]);
                }
            }
            float t = thr(q);
            for (std::size_t j = 0; j < cnt; ++j)
                if (a[j] + e[j] >= t) {
                    emit(q, b0 + j, a[j], e[j]);
                    t = thr(q);
                }
        }
    }
}

// Sorted output of one heap: best first, ties → lower row; pads with (pad, -1).
void emit_sorted(const TopKHeap& h, std::size_t k, float* out_s, std::int64_t* out_i, float pad) {
    std::vector<std::pair<float, std::int64_t>> v(h.size);
    for (int j = 0; j < h.size; ++j) v[j] = {h.s[j], h.i[j]};
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    for (std::size_t j = 0; j < k; ++j) {
        out_s[j] = j < v.size() ? v[j].first : pad;
        out_i[j] = j < v.size() ? v[j].second : -1;
    }
}

// Per (part, probe) selections over one storage block.
struct Sels {
    std::vector<float> ls, cu;
    std::vector<std::int64_t> li, ci;
    std::vector<ApproxSel> s;
    Sels(std::size_t count, std::size_t k, std::size_t cap)
        : ls(count * k), cu(count * cap), li(count * k), ci(count * cap), s(count) {
        for (std::size_t c = 0; c < count; ++c)
            s[c] = ApproxSel{TopKHeap{ls.data() + c * k, li.data() + c * k, (int)k, 0}, cu.data() + c * cap,
                             ci.data() + c * cap, (int)cap, 0, 0};
    }
};

// The candidates of probe q over its parts' selections, re-scored exactly into out (k columns).
// Returns false on a non-finite exact score.
// The rows of probe q that its parts' selections cannot rule out, increasing.
std::vector<std::int64_t> kept_rows(const ApproxSel* const* sel, std::size_t parts, std::size_t k) {
    std::vector<float> ls(k);
    std::vector<std::int64_t> li(k), rows;
    TopKHeap L{ls.data(), li.data(), (int)k, 0};
    for (std::size_t p = 0; p < parts; ++p)
        for (int j = 0; j < sel[p]->lower.size; ++j) ck::heap_push(L, sel[p]->lower.s[j], sel[p]->lower.i[j]);
    const float thr = ck::heap_thresh(L);
    for (std::size_t p = 0; p < parts; ++p)
        for (int j = 0; j < sel[p]->n; ++j)
            if (sel[p]->cu[j] >= thr) rows.push_back(sel[p]->ci[j]);
    std::sort(rows.begin(), rows.end());  // increasing rows: the heap's tie rule, as in rerank
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    return rows;
}

bool finish_exact(const KernelTable& K, const ApproxSel* const* sel, std::size_t parts, const float* x,
                  const float* G, std::size_t d, std::size_t k, float* out_s, std::int64_t* out_i,
                  std::int64_t* cand_out, float pad, std::vector<std::int64_t>* rows_out = nullptr) {
    const std::vector<std::int64_t> rows = kept_rows(sel, parts, k);
    if (rows_out) {  // the caller re-scores them itself (rows read from a file)
        *rows_out = rows;
        return true;
    }
    std::vector<float> hs(k);
    std::vector<std::int64_t> hi(k);
    TopKHeap h{hs.data(), hi.data(), (int)k, 0};
    bool fine = true;
    for (std::int64_t r : rows) {
        const float sc = K.dot(x, G + (std::size_t)r * d, d);
        if (!(sc - sc == 0.0f)) fine = false;
        if (sc > ck::heap_thresh(h)) ck::heap_push(h, sc, r);
    }
    if (cand_out) *cand_out = (std::int64_t)rows.size();
    emit_sorted(h, k, out_s, out_i, pad);
    return fine;
}

}  // namespace

std::size_t compact_stride(CompactKind kind, std::size_t d) {
    return kind == CompactKind::int8 ? round_up(d ? d : 1, 64) : round_up(d ? d : 1, 32);
}

bool compact_quantize_int8(const float* X, std::size_t n, std::size_t d, std::int8_t* codes, float* scale,
                           float* norm, float* resid, std::int32_t* gsum) {
    const std::size_t stride = compact_stride(CompactKind::int8, d);
    return parallel_rows(n, 4096, [&](std::size_t r) {
        return quantize_row(X + r * d, d, stride, codes + r * stride, scale + r, norm + r, resid + r, gsum + r,
                            nullptr);
    });
}

bool compact_convert_bf16(const float* X, std::size_t n, std::size_t d, std::uint16_t* codes, float* norm) {
    const std::size_t stride = compact_stride(CompactKind::bf16, d);
    return parallel_rows(n, 4096, [&](std::size_t r) { return bf16_row(X + r * d, d, stride, codes + r * stride, norm + r); });
}

void compact_scores(const CompactView& g, const float* Q, std::size_t m, float* out, float* bound) {
    const CompactKernels& CK = *compact_kernels_for(active_level());
    const Probes P = prepare(g, Q, m);
    const std::size_t parts = std::max<std::size_t>(1, std::min(get_num_threads(), g.n / 4096));
    parallel_for(parts, [&](std::size_t p) {
        scan(CK, g, P, 0, m, g.n * p / parts, g.n * (p + 1) / parts,
             [](std::size_t) { return -std::numeric_limits<float>::infinity(); },
             [&](std::size_t q, std::size_t r, float a, float e) {
                 out[q * g.n + r] = a;
                 bound[q * g.n + r] = e;
             });
    });
}

namespace {
bool topk_impl(const CompactView& g, const float* Q, std::size_t m, const float* G, std::size_t k, float* out_s,
               std::int64_t* out_i, std::int64_t* cand_out, std::vector<std::vector<std::int64_t>>* rows_out);
}  // namespace

bool compact_topk(const CompactView& g, const float* Q, std::size_t m, const float* G, std::size_t k,
                  float* out_s, std::int64_t* out_i, std::int64_t* cand_out) {
    return topk_impl(g, Q, m, G, k, out_s, out_i, cand_out, nullptr);
}

void compact_candidates(const CompactView& g, const float* Q, std::size_t m, std::size_t k,
                        std::vector<std::vector<std::int64_t>>& rows) {
    rows.assign(m, {});
    std::vector<float> s(m * k);  // unused: no pointer arithmetic on null outputs
    std::vector<std::int64_t> i(m * k);
    topk_impl(g, Q, m, nullptr, k, s.data(), i.data(), nullptr, &rows);
}

namespace {
bool topk_impl(const CompactView& g, const float* Q, std::size_t m, const float* G, std::size_t k, float* out_s,
               std::int64_t* out_i, std::int64_t* cand_out, std::vector<std::vector<std::int64_t>>* rows_out) {
    const KernelTable& K = kernels();
    const CompactKernels& CK = *compact_kernels_for(K.level);
    const Probes P = prepare(g, Q, m);
    const std::size_t n = g.n;
    const std::size_t threads = get_num_threads();
    // Contiguous row parts, several per thread (claimed dynamically on a shared machine).
    const std::size_t parts = std::max<std::size_t>(1, std::min(threads * 4, n / 16384));
    const float ninf = -std::numeric_limits<float>::infinity();
    if (!G && !rows_out) {  // the k best approximate scores
        std::vector<float> hs(parts * m * k);
        std::vector<std::int64_t> hi(parts * m * k);
        std::vector<TopKHeap> heaps(parts * m);
        for (std::size_t c = 0; c < parts * m; ++c) heaps[c] = TopKHeap{hs.data() + c * k, hi.data() + c * k, (int)k, 0};
        parallel_for(parts, [&](std::size_t p) {
            TopKHeap* h = heaps.data() + p * m;
            scan(CK, g, P, 0, m, n * p / parts, n * (p + 1) / parts,
                 [&](std::size_t q) { return ck::heap_thresh(h[q]); },
                 [&](std::size_t q, std::size_t r, float a, float) {
                if (a > ck::heap_thresh(h[q])) ck::heap_push(h[q], a, (std::int64_t)r);
            });
        });
        std::vector<float> ms(k);
        std::vector<std::int64_t> mi(k);
        for (std::size_t q = 0; q < m; ++q) {
            TopKHeap merged{ms.data(), mi.data(), (int)k, 0};
            for (std::size_t p = 0; p < parts; ++p) {
                const TopKHeap& h = heaps[p * m + q];
                for (int j = 0; j < h.size; ++j) ck::heap_push(merged, h.s[j], h.i[j]);
            }
            emit_sorted(merged, k, out_s + q * k, out_i + q * k, ninf);
            if (cand_out) cand_out[q] = 0;
        }
        return true;
    }
    // Probes in chunks whose candidate buffers stay within ~64 MB; a probe whose buffer overflowed
    // is scanned again alone with a buffer four times larger (never a float32 scan of the gallery).
    std::size_t cap = std::min<std::size_t>(n, 4 * k + 1024);
    const double per_probe = (double)parts * (double)(cap + k) * 12.0;
    const std::size_t chunk = std::max<std::size_t>(1, std::min<std::size_t>(m, (std::size_t)(64e6 / per_probe)));
    std::vector<int> fine(m, 1);
    for (std::size_t q0 = 0; q0 < m; q0 += chunk) {
        const std::size_t mi = std::min(chunk, m - q0);
        Sels S(parts * mi, k, cap);
        parallel_for(parts, [&](std::size_t p) {
            ApproxSel* s = S.s.data() + p * mi;
            scan(CK, g, P, q0, mi, n * p / parts, n * (p + 1) / parts,
                 [&](std::size_t q) { return ck::heap_thresh(s[q - q0].lower); },
                 [&](std::size_t q, std::size_t r, float a, float e) { ck::approx_push(s[q - q0], a, e, (std::int64_t)r); });
        });
        const std::size_t mt = std::min(threads, mi);
        parallel_for(mt, [&](std::size_t t) {
            std::vector<const ApproxSel*> sel(parts);
            for (std::size_t i = mi * t / mt; i < mi * (t + 1) / mt; ++i) {
                const std::size_t q = q0 + i;
                bool overflow = false;
                for (std::size_t p = 0; p < parts; ++p) {
                    sel[p] = &S.s[p * mi + i];
                    overflow |= sel[p]->overflow != 0;
                }
                if (overflow) {
                    // Again alone, one part, a larger buffer until nothing overflows (cap = n cannot).
                    for (std::size_t c2 = std::min(n, cap * 4);; c2 = std::min(n, c2 * 4)) {
                        Sels one(1, k, c2);
                        scan(CK, g, P, q, 1, 0, n, [&](std::size_t) { return ck::heap_thresh(one.s[0].lower); },
                             [&](std::size_t, std::size_t r, float a, float e) { ck::approx_push(one.s[0], a, e, (std::int64_t)r); });
                        if (!one.s[0].overflow || c2 == n) {
                            const ApproxSel* p0 = &one.s[0];
                            fine[q] = finish_exact(K, &p0, 1, Q + q * g.d, G, g.d, k, out_s + q * k, out_i + q * k,
                                                   cand_out ? cand_out + q : nullptr, ninf,
                                                   rows_out ? &(*rows_out)[q] : nullptr);
                            break;
                        }
                    }
                } else {
                    fine[q] = finish_exact(K, sel.data(), parts, Q + q * g.d, G, g.d, k, out_s + q * k, out_i + q * k,
                                           cand_out ? cand_out + q : nullptr, ninf,
                                           rows_out ? &(*rows_out)[q] : nullptr);
                }
            }
        });
    }
    return std::all_of(fine.begin(), fine.end(), [](int v) { return v != 0; });
}
}  // namespace

bool compact_rerank(const CompactView& g, const float* Q, std::size_t m, const float* G,
                    const std::int64_t* cand, std::size_t c, std::size_t k, float* out_s, std::int64_t* out_i,
                    std::int64_t* cand_out) {
    const KernelTable& K = kernels();
    const CompactKernels& CK = *compact_kernels_for(K.level);
    const Probes P = prepare(g, Q, m);
    const std::size_t mt = std::max<std::size_t>(1, std::min(get_num_threads(), m));
    std::vector<int> fine(m, 1);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    parallel_for(mt, [&](std::size_t t) {
        std::vector<std::int64_t> rows;
        for (std::size_t q = m * t / mt; q < m * (t + 1) / mt; ++q) {
            rows.clear();
            for (std::size_t j = 0; j < c; ++j)
                if (cand[q * c + j] >= 0) rows.push_back(cand[q * c + j]);
            std::sort(rows.begin(), rows.end());
            rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
            Sels one(1, k, std::max<std::size_t>(rows.size(), 1));
            // Consecutive candidate rows are scanned as one range (codes shortlists are scattered).
            for (std::size_t a = 0; a < rows.size();) {
                std::size_t b = a + 1;
                while (b < rows.size() && rows[b] == rows[b - 1] + 1) ++b;
                scan(CK, g, P, q, 1, (std::size_t)rows[a], (std::size_t)rows[b - 1] + 1,
                     [&](std::size_t) { return ck::heap_thresh(one.s[0].lower); },
                     [&](std::size_t, std::size_t r, float x, float e) { ck::approx_push(one.s[0], x, e, (std::int64_t)r); });
                a = b;
            }
            const ApproxSel* p0 = &one.s[0];
            fine[q] = finish_exact(K, &p0, 1, Q + q * g.d, G, g.d, k, out_s + q * k, out_i + q * k,
                                   cand_out ? cand_out + q : nullptr, nan);
        }
    });
    return std::all_of(fine.begin(), fine.end(), [](int v) { return v != 0; });
}

}  // namespace pfm
