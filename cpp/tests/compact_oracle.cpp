// Compact (int8 / bf16) templates on every compiled SIMD level against an independent reference:
// double-precision dot products of the float32 inputs. Checks that (1) every approximate score is
// within its reported bound of the reference, (2) int8 approximate scores are bit-identical on every
// level (integer dots are exact), (3) compact_topk with the float32 source returns exactly what
// pfm::rerank over every row returns (rows, order, scores), at awkward sizes, thread counts and on
// rows drawn from a small pool (many exact ties). Prints "N passed, M failed"; non-zero on failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "pyfacematch/compact.hpp"
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

std::vector<float> rows(std::mt19937_64& rng, std::size_t n, std::size_t d, std::size_t pool) {
    std::normal_distribution<double> nd;
    std::vector<float> base(pool * d), x(n * d);
    for (auto& v : base) v = (float)nd(rng);
    for (std::size_t r = 0; r < n; ++r) {
        const std::size_t p = rng() % pool;
        for (std::size_t j = 0; j < d; ++j) x[r * d + j] = base[p * d + j] + (pool > 16 ? 0.0f : (float)(1e-3 * nd(rng)));
    }
    return x;
}

}  // namespace

int main(int argc, char** argv) {
    const unsigned seed = argc > 1 ? (unsigned)std::strtoul(argv[1], nullptr, 10) : 20261203u;
    const int trials = argc > 2 ? std::atoi(argv[2]) : 24;
    std::mt19937_64 rng(seed);
    const std::size_t awkward[] = {1, 7, 97, 128, 512, 515};
    for (int t = 0; t < trials; ++t) {
        const std::size_t d = awkward[t % 6];
        const std::size_t n = 1 + rng() % 3000, m = 1 + rng() % 9, k = 1 + rng() % std::min<std::size_t>(n, 30);
        const std::size_t pool = t % 2 ? 1 << 20 : 2 + rng() % 6;
        pfm::set_num_threads(1 + rng() % 3);
        const std::vector<float> G = rows(rng, n, d, std::min<std::size_t>(pool, n + 17)), Q = rows(rng, m, d, 17 + m);
        std::vector<std::int32_t> first_int8;
        for (int kind = 0; kind < 2; ++kind) {
            const auto K = kind == 0 ? pfm::CompactKind::int8 : pfm::CompactKind::bf16;
            const std::size_t st = pfm::compact_stride(K, d);
            std::vector<std::int8_t> c8(kind == 0 ? n * st : 0);
            std::vector<std::uint16_t> cb(kind == 1 ? n * st : 0);
            std::vector<float> scale(n), norm(n), resid(n);
            std::vector<std::int32_t> gsum(n);
            bool ok = kind == 0 ? pfm::compact_quantize_int8(G.data(), n, d, c8.data(), scale.data(), norm.data(),
                                                             resid.data(), gsum.data())
                                : pfm::compact_convert_bf16(G.data(), n, d, cb.data(), norm.data());
            check(ok, "conversion");
            pfm::CompactView v{K, n, d, st, kind == 0 ? (const void*)c8.data() : (const void*)cb.data(),
                               scale.data(), norm.data(), resid.data(), gsum.data()};
            std::vector<float> first_scores;
            for (pfm::SimdLevel lvl : pfm::available_levels()) {
                pfm::set_simd_level(lvl);
                const std::string tag = std::string(kind ? "bf16 " : "int8 ") + pfm::level_name(lvl) + " d=" +
                                        std::to_string(d) + " n=" + std::to_string(n) + " k=" + std::to_string(k);
                std::vector<float> a(m * n), e(m * n);
                pfm::compact_scores(v, Q.data(), m, a.data(), e.data());
                bool within = true;
                for (std::size_t i = 0; i < m; ++i)
                    for (std::size_t r = 0; r < n; ++r) {
                        double ref = 0;
                        for (std::size_t j = 0; j < d; ++j) ref += (double)Q[i * d + j] * (double)G[r * d + j];
                        within &= std::fabs((double)a[i * n + r] - ref) <= (double)e[i * n + r];
                    }
                check(within, tag + ": approximate score outside its bound");
                if (kind == 0) {
                    if (first_scores.empty()) first_scores = a;
                    else check(std::memcmp(first_scores.data(), a.data(), a.size() * 4) == 0, tag + ": int8 differs between levels");
                }
                std::vector<float> s(m * k), rs(m * k);
                std::vector<std::int64_t> ix(m * k), ri(m * k), cand(m * n);
                check(pfm::compact_topk(v, Q.data(), m, G.data(), k, s.data(), ix.data(), nullptr), tag + ": topk ok");
                for (std::size_t i = 0; i < m; ++i)
                    for (std::size_t r = 0; r < n; ++r) cand[i * n + r] = (std::int64_t)r;
                pfm::rerank(Q.data(), nullptr, m, G.data(), nullptr, n, d, cand.data(), n, nullptr, 0.0f, k, rs.data(), ri.data());
                check(ix == ri && std::memcmp(s.data(), rs.data(), s.size() * 4) == 0, tag + ": topk != rerank over all rows");
            }
        }
    }
    std::printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
