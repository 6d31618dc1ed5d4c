// Every compiled SIMD level (serial included) against an independent reference written here: plain
// double-precision loops, a bit-by-bit Hamming distance and a full std::sort (best first, ties →
// lower index), sharing no code with the library (not its drivers, threads, heaps, merges or
// *_impl.inc files). Random sizes, k and thread counts from a fixed seed; awkward dimensions
// (1, 7, 97, 128, 512, 515 and random ones); batches of 48 probes and more take the bf16 first pass
// on CPUs with AVX512_BF16 (on AMX tiles and on AVX-512 BF16 where the CPU has AMX). Half of the trials draw rows from a small pool of small-integer vectors,
// so scores are exact in float32 and equal scores are frequent: which of the tied rows enter the
// top k is then checked exactly. Covers scores, topk, cosine, masked_scores, masked_topk, rerank
// (plain and masked), hamming_topk and hamming_topk2. Run by ctest (cmake -DPFM_BUILD_TESTS=ON)
// and on other architectures under an emulator. Prints "N passed, M failed"; exits non-zero on any
// failure (the first few are described on stderr).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "pyfacematch/scoring.hpp"
#include "pyfacematch/simd.hpp"
#include "pyfacematch/threads.hpp"

namespace {

int failures = 0, checks = 0;

void check(bool ok, const std::string& what) {
    ++checks;
    if (!ok) {
        if (failures < 20) std::fprintf(stderr, "FAIL %s\n", what.c_str());
        ++failures;
    }
}

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// ------------------------------------------------------------------ data
struct Data {
    std::vector<float> q, g;
    bool exact;  // small integers: every dot product is exact in float32
};

std::vector<float> normal_rows(std::mt19937_64& rng, std::size_t n, std::size_t d) {
    std::normal_distribution<double> nd;
    std::vector<float> x(n * d);
    for (std::size_t r = 0; r < n; ++r) {
        std::vector<double> v(d);
        double s = 0;
        for (double& e : v) s += (e = nd(rng)) * e;
        for (std::size_t j = 0; j < d; ++j) x[r * d + j] = (float)(v[j] / std::sqrt(s));
    }
    return x;
}

// n rows, each a copy of one of `pool` random vectors with entries in {-2, …, 2} (never all zero).
std::vector<float> pooled_rows(std::mt19937_64& rng, std::size_t n, std::size_t d, std::size_t pool) {
    std::uniform_int_distribution<int> e(-2, 2);
    std::vector<float> base(pool * d);
    for (std::size_t p = 0; p < pool; ++p) {
        for (std::size_t j = 0; j < d; ++j) base[p * d + j] = (float)e(rng);
        base[p * d + (std::size_t)(rng() % d)] = 1.0f;
    }
    std::vector<float> x(n * d);
    for (std::size_t r = 0; r < n; ++r) {
        const std::size_t p = rng() % pool;
        std::copy(base.begin() + p * d, base.begin() + (p + 1) * d, x.begin() + r * d);
    }
    return x;
}

// ------------------------------------------------------------------ references (double, full sort)
double ref_dot(const float* a, const float* b, std::size_t d) {
    double s = 0;
    for (std::size_t j = 0; j < d; ++j) s += (double)a[j] * (double)b[j];
    return s;
}

struct Ranked {
    std::vector<double> s;
    std::vector<std::int64_t> i;
};

// The best k of (score, row) pairs, NaN scores dropped; padded with (NaN, -1).
Ranked ref_best(std::vector<std::pair<double, std::int64_t>> v, std::size_t k) {
    v.erase(std::remove_if(v.begin(), v.end(), [](const auto& p) { return std::isnan(p.first); }), v.end());
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
        if (a.first != b.first) return a.first > b.first;
        return a.second < b.second;
    });
    Ranked r;
    for (std::size_t j = 0; j < k; ++j) {
        r.s.push_back(j < v.size() ? v[j].first : kNaN);
        r.i.push_back(j < v.size() ? v[j].second : -1);
    }
    return r;
}

std::size_t ref_min_dims(std::size_t d, double f) {
    double need = std::ceil(f * (double)d - 1e-9);
    return need < 1 ? 1 : (std::size_t)need;
}

// Masked cosine over the blocks valid in both (NaN when they cover too little or a norm is 0).
double ref_masked(const float* a, const float* b, std::uint64_t ma, std::uint64_t mb,
                  const std::vector<std::int64_t>& off, double minf) {
    const std::size_t B = off.size() - 1, d = (std::size_t)off[B];
    std::size_t dims = 0;
    double ab = 0, aa = 0, bb = 0;
    for (std::size_t blk = 0; blk < B; ++blk) {
        if (!((ma >> blk) & 1) || !((mb >> blk) & 1)) continue;
        for (std::int64_t j = off[blk]; j < off[blk + 1]; ++j) {
            ab += (double)a[j] * b[j];
            aa += (double)a[j] * a[j];
            bb += (double)b[j] * b[j];
        }
        dims += (std::size_t)(off[blk + 1] - off[blk]);
    }
    if (dims == 0 || dims < ref_min_dims(d, minf) || !(aa > 0) || !(bb > 0)) return kNaN;
    return ab / std::sqrt(aa * bb);
}

int ref_hamming(const std::uint8_t* a, const std::uint8_t* b, std::size_t nb) {
    int dist = 0;
    for (std::size_t j = 0; j < nb; ++j)
        for (int bit = 0; bit < 8; ++bit) dist += ((a[j] >> bit) & 1) != ((b[j] >> bit) & 1);
    return dist;
}

std::vector<std::uint8_t> ref_pack(const float* x, std::size_t n, std::size_t d) {
    const std::size_t nb = (d + 7) / 8;
    std::vector<std::uint8_t> out(n * nb, 0);
    for (std::size_t r = 0; r < n; ++r)
        for (std::size_t j = 0; j < d; ++j)
            if (x[r * d + j] > 0.0f) out[r * nb + j / 8] |= (std::uint8_t)(1u << (j % 8));
    return out;
}

// ------------------------------------------------------------------ comparison of a ranked output
// Row j of the library must name the reference's row, or a row whose reference score is within tol
// of it (a near-tie that float32 may order either way); with exact scores (tol == 0) ties must be
// broken towards the lower index (see below; ORACLE_DEBUG=1 prints the first disagreement). Scores must be
// within tol of the reference (equal when exact), indices distinct, padding where the reference pads.
template <class S>
bool same_ranking(const S* ls, const std::int64_t* li, const Ranked& ref, std::size_t k,
                  const std::vector<double>& ref_score_of_row, double tol) {
    std::vector<std::int64_t> seen;
    for (std::size_t j = 0; j < k; ++j) {
        const std::int64_t want = ref.i[j], got = li[j];
        if (want < 0 || got < 0) {
            if (want != got || !std::isnan((double)ls[j])) return false;
            continue;
        }
        if (got >= (std::int64_t)ref_score_of_row.size()) return false;
        if (std::find(seen.begin(), seen.end(), got) != seen.end()) return false;
        seen.push_back(got);
        const double rg = ref_score_of_row[got], rw = ref_score_of_row[want];
        // With tol == 0 (integer data, exact scores) a tie must go to the lower row. With tol > 0
        // two rows tied in double (e.g. ±1 over a shared one-dimension block of a masked cosine)
        // are scored in float or mixed precision, where they can differ by a rounding (1 and
        // 1.0000001) or differ inside the kernel and round alike: either order is right there.
        // Tie-breaking on exact duplicates is checked by the exact data here and by the Python
        // tests (duplicated rows, tests/test_scoring.py).
        const bool bad = got != want && (tol == 0.0 || std::fabs(rg - rw) > tol);
        if (bad) {
            if (std::getenv("ORACLE_DEBUG"))
                std::fprintf(stderr, "j=%zu want=%lld (%.17g) got=%lld (%.17g) kernel=%.9g\n", j, (long long)want, rw,
                             (long long)got, rg, (double)ls[j]);
            return false;
        }
        if (!(std::fabs((double)ls[j] - ref.s[j]) <= tol)) return false;
    }
    return true;
}

std::string label(const char* what, const char* level, std::size_t m, std::size_t n, std::size_t d,
                  std::size_t k, bool exact) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s level=%s m=%zu n=%zu d=%zu k=%zu data=%s", what, level, m, n, d, k,
                  exact ? "pooled-integers" : "normal");
    return buf;
}

}  // namespace

int main(int argc, char** argv) {
    const unsigned seed = argc > 1 ? (unsigned)std::strtoul(argv[1], nullptr, 10) : 20261202u;
    const int trials = argc > 2 ? std::atoi(argv[2]) : 48;
    std::mt19937_64 rng(seed);
    const std::size_t awkward[] = {1, 7, 97, 128, 512, 515};
    for (int t = 0; t < trials; ++t) {
        const std::size_t d = (t % 3 == 2) ? 1 + rng() % 600 : awkward[rng() % 6];
        const std::size_t n = 1 + rng() % (d > 300 ? 900 : 2000);
        const std::size_t m = (t % 4 == 3) ? 48 + rng() % 24 : 1 + rng() % 14;
        const std::size_t k = 1 + rng() % std::min<std::size_t>(n, t % 5 == 0 ? n : 40);
        const bool exact = t % 2 == 0;
        const std::size_t threads = 1 + rng() % 3;
        pfm::set_num_threads(threads);
        Data D;
        D.exact = exact;
        if (exact) {
            const std::size_t pool = 2 + rng() % 6;
            D.g = pooled_rows(rng, n, d, pool);
            D.q = pooled_rows(rng, m, d, 3);
        } else {
            D.g = normal_rows(rng, n, d);
            D.q = normal_rows(rng, m, d);
        }
        const float* q = D.q.data();
        const float* g = D.g.data();
        // references
        std::vector<std::vector<double>> rs(m, std::vector<double>(n));
        std::vector<Ranked> rtop(m);
        for (std::size_t i = 0; i < m; ++i) {
            std::vector<std::pair<double, std::int64_t>> v(n);
            for (std::size_t r = 0; r < n; ++r) v[r] = {rs[i][r] = ref_dot(q + i * d, g + r * d, d), (std::int64_t)r};
            rtop[i] = ref_best(v, k);
        }
        const double tol = exact ? 0.0 : 2e-5;
        // masks and blocks: B random blocks, random masks (bit B-1 sometimes off)
        const std::size_t B = 1 + rng() % std::min<std::size_t>(d, 9);
        std::vector<std::int64_t> cuts;  // B - 1 distinct cut points in [1, d)
        for (std::size_t j = 1; j < d; ++j) cuts.push_back((std::int64_t)j);
        std::shuffle(cuts.begin(), cuts.end(), rng);
        cuts.resize(B - 1);
        std::sort(cuts.begin(), cuts.end());
        std::vector<std::int64_t> off{0};
        off.insert(off.end(), cuts.begin(), cuts.end());
        off.push_back((std::int64_t)d);
        const std::uint64_t all = (1ull << B) - 1;
        std::vector<std::uint64_t> mq(m), mg(n);
        for (auto& x : mq) x = (rng() & all) | (rng() % 2);  // often block 0, sometimes none
        for (auto& x : mg) x = rng() % 5 == 0 ? all : (rng() & all);
        const float minf = (float)(rng() % 5) / 10.0f;
        const pfm::Blocks blocks{off.data(), B};
        std::vector<std::vector<double>> rms(m, std::vector<double>(n));
        std::vector<Ranked> rmtop(m);
        for (std::size_t i = 0; i < m; ++i) {
            std::vector<std::pair<double, std::int64_t>> v(n);
            for (std::size_t r = 0; r < n; ++r)
                v[r] = {rms[i][r] = ref_masked(q + i * d, g + r * d, mq[i], mg[r], off, minf), (std::int64_t)r};
            rmtop[i] = ref_best(v, k);
        }
        // candidates for rerank: c random rows (some repeated, some -1)
        const std::size_t c = 1 + rng() % std::min<std::size_t>(n + 3, 60);
        std::vector<std::int64_t> cand(m * c);
        for (auto& x : cand) x = rng() % 7 == 0 ? -1 : (std::int64_t)(rng() % n);
        const std::size_t kr = 1 + rng() % c;
        std::vector<Ranked> rrr(m), rrm(m);
        for (std::size_t i = 0; i < m; ++i) {
            std::vector<std::int64_t> rows;
            for (std::size_t j = 0; j < c; ++j)
                if (cand[i * c + j] >= 0) rows.push_back(cand[i * c + j]);
            std::sort(rows.begin(), rows.end());
            rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
            std::vector<std::pair<double, std::int64_t>> v, vm;
            for (std::int64_t r : rows) {
                v.push_back({rs[i][r], r});  // plain re-rank scores are dot products
                vm.push_back({rms[i][r], r});
            }
            rrr[i] = ref_best(v, kr);
            rrm[i] = ref_best(vm, kr);
        }
        // codes and Hamming references
        const std::size_t nb = (d + 7) / 8;
        const std::vector<std::uint8_t> gc = ref_pack(g, n, d), qc = ref_pack(q, m, d);
        std::vector<Ranked> rh(m);
        std::vector<std::vector<double>> rhd(m, std::vector<double>(n));
        for (std::size_t i = 0; i < m; ++i) {
            std::vector<std::pair<double, std::int64_t>> v(n);
            for (std::size_t r = 0; r < n; ++r)
                v[r] = {rhd[i][r] = -(double)ref_hamming(&qc[i * nb], &gc[r * nb], nb), (std::int64_t)r};
            rh[i] = ref_best(v, k);
        }
        const std::size_t nba = std::max<std::size_t>(1, nb / 3), nbb = nb - nba;

        for (pfm::SimdLevel level : pfm::available_levels()) {
            const char* L = pfm::level_name(level);
            pfm::set_simd_level(level);
            // scores
            std::vector<float> s(m * n);
            pfm::scores(q, m, g, n, d, s.data());
            bool ok = true;
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t r = 0; r < n; ++r) ok &= std::fabs((double)s[i * n + r] - rs[i][r]) <= tol;
            check(ok, label("scores", L, m, n, d, k, exact));
            // topk
            std::vector<float> ts(m * k);
            std::vector<std::int64_t> ti(m * k);
            pfm::topk(q, m, g, n, d, k, ts.data(), ti.data());
            ok = true;
            for (std::size_t i = 0; i < m; ++i)
                ok &= same_ranking(ts.data() + i * k, ti.data() + i * k, rtop[i], k, rs[i], tol);
            const bool amx = m >= 48 && pfm::amx_active();
            check(ok, label(m >= 48 ? (amx ? "topk (large batch, AMX)" : "topk (large batch)") : "topk", L, m, n,
                            d, k, exact));
            if (amx) {  // the same batch once more with the AVX-512 BF16 first pass instead of the tiles
                pfm::set_amx(false);
                pfm::topk(q, m, g, n, d, k, ts.data(), ti.data());
                pfm::set_amx(true);
                ok = true;
                for (std::size_t i = 0; i < m; ++i)
                    ok &= same_ranking(ts.data() + i * k, ti.data() + i * k, rtop[i], k, rs[i], tol);
                check(ok, label("topk (large batch, AVX-512 BF16)", L, m, n, d, k, exact));
            }
            // cosine
            const double cref = rs[0][0] / std::sqrt(ref_dot(q, q, d) * ref_dot(g, g, d));
            check(std::fabs(pfm::cosine(q, g, d) - cref) <= 2e-6, label("cosine", L, m, n, d, k, exact));
            // masked scores and top-k
            std::vector<float> ms(m * n);
            pfm::masked_scores(q, mq.data(), m, g, mg.data(), n, d, blocks, minf, ms.data());
            ok = true;
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t r = 0; r < n; ++r) {
                    const double want = rms[i][r], got = ms[i * n + r];
                    ok &= std::isnan(want) ? std::isnan(got) : std::fabs(got - want) <= 2e-6;
                }
            check(ok, label("masked_scores", L, m, n, d, k, exact));
            std::vector<float> mts(m * k);
            std::vector<std::int64_t> mti(m * k);
            pfm::masked_topk(q, mq.data(), m, g, mg.data(), n, d, blocks, minf, k, mts.data(), mti.data());
            ok = true;
            for (std::size_t i = 0; i < m; ++i)
                ok &= same_ranking(mts.data() + i * k, mti.data() + i * k, rmtop[i], k, rms[i], 2e-6);
            check(ok, label("masked_topk", L, m, n, d, k, exact));
            // rerank, plain and masked
            std::vector<float> rrs(m * kr);
            std::vector<std::int64_t> rri(m * kr);
            pfm::rerank(q, nullptr, m, g, nullptr, n, d, cand.data(), c, nullptr, minf, kr, rrs.data(), rri.data());
            ok = true;
            for (std::size_t i = 0; i < m; ++i)
                ok &= same_ranking(rrs.data() + i * kr, rri.data() + i * kr, rrr[i], kr, rs[i], tol);
            check(ok, label("rerank", L, m, n, d, kr, exact));
            pfm::rerank(q, mq.data(), m, g, mg.data(), n, d, cand.data(), c, &blocks, minf, kr, rrs.data(),
                        rri.data());
            ok = true;
            for (std::size_t i = 0; i < m; ++i)
                ok &= same_ranking(rrs.data() + i * kr, rri.data() + i * kr, rrm[i], kr, rms[i], 2e-6);
            check(ok, label("rerank (masked)", L, m, n, d, kr, exact));
            // codes
            std::vector<std::uint8_t> pc(n * nb);
            pfm::pack_signs(g, n, d, nullptr, pc.data());
            check(pc == gc, label("pack_signs", L, m, n, d, k, exact));
            std::vector<std::int32_t> hd(m * k);
            std::vector<std::int64_t> hi(m * k);
            pfm::hamming_topk(qc.data(), m, gc.data(), n, nb, k, hd.data(), hi.data());
            ok = true;
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < k; ++j)
                    ok &= hi[i * k + j] == rh[i].i[j] && -(double)hd[i * k + j] == rh[i].s[j];
            check(ok, label("hamming_topk", L, m, n, d, k, exact));
            if (nbb > 0) {
                std::vector<std::uint8_t> qa(m * nba), qb(m * nbb), ga(n * nba), gb(n * nbb);
                for (std::size_t r = 0; r < n; ++r)
                    for (std::size_t j = 0; j < nb; ++j)
                        (j < nba ? ga[r * nba + j] : gb[r * nbb + j - nba]) = gc[r * nb + j];
                for (std::size_t i = 0; i < m; ++i)
                    for (std::size_t j = 0; j < nb; ++j)
                        (j < nba ? qa[i * nba + j] : qb[i * nbb + j - nba]) = qc[i * nb + j];
                // admitting every row: the exact top k
                pfm::hamming_topk2(qa.data(), qb.data(), m, ga.data(), gb.data(), n, nba, nbb, n, k, hd.data(),
                                   hi.data());
                ok = true;
                for (std::size_t i = 0; i < m; ++i)
                    for (std::size_t j = 0; j < k; ++j)
                        ok &= hi[i * k + j] == rh[i].i[j] && -(double)hd[i * k + j] == rh[i].s[j];
                check(ok, label("hamming_topk2 (all admitted)", L, m, n, d, k, exact));
                // admitting fewer: every reported distance is the row's true distance, best first
                pfm::hamming_topk2(qa.data(), qb.data(), m, ga.data(), gb.data(), n, nba, nbb, k, k, hd.data(),
                                   hi.data());
                ok = true;
                for (std::size_t i = 0; i < m; ++i)
                    for (std::size_t j = 0; j < k; ++j) {
                        const std::int64_t r = hi[i * k + j];
                        if (r < 0) continue;
                        ok &= r < (std::int64_t)n && -(double)hd[i * k + j] == rhd[i][r];
                        if (j > 0 && hi[i * k + j - 1] >= 0)
                            ok &= hd[i * k + j - 1] < hd[i * k + j] ||
                                  (hd[i * k + j - 1] == hd[i * k + j] && hi[i * k + j - 1] < r);
                    }
                check(ok, label("hamming_topk2 (admit k)", L, m, n, d, k, exact));
            }
        }
    }
    std::printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
