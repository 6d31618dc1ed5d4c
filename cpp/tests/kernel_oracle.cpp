// Every compiled SIMD level against the serial oracle, without Python: dot products, M×N scores
// (streaming and blocked forms), fused top-k (small batches, and a 64-probe batch, which takes the
// bf16 first pass where the CPU has it), one- and two-plane Hamming top-k at awkward sizes. Run by ctest
// (cmake -DPFM_BUILD_TESTS=ON), and on other architectures under an emulator (e.g. qemu-aarch64
// for the NEON kernels). Exits non-zero on the first disagreement.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "pyfacematch/scoring.hpp"
#include "pyfacematch/simd.hpp"

namespace {

int failures = 0, checks = 0;

void check(bool ok, const char* what, const char* level, std::size_t d) {
    ++checks;
    if (!ok) {
        std::fprintf(stderr, "FAIL %s level=%s d=%zu\n", what, level, d);
        ++failures;
    }
}

std::vector<float> unit_rows(std::mt19937& rng, std::size_t n, std::size_t d) {
    std::normal_distribution<float> g;
    std::vector<float> x(n * d);
    for (std::size_t r = 0; r < n; ++r) {
        double s = 0;
        for (std::size_t j = 0; j < d; ++j) s += (double)(x[r * d + j] = g(rng)) * x[r * d + j];
        for (std::size_t j = 0; j < d; ++j) x[r * d + j] = (float)(x[r * d + j] / std::sqrt(s));
    }
    return x;
}

}  // namespace

int main() {
    std::mt19937 rng(7);
    const std::size_t dims[] = {1, 7, 97, 128, 512, 515};
    for (std::size_t d : dims) {
        const std::size_t m = 13, n = 700, k = 10;
        std::vector<float> q = unit_rows(rng, m, d), g = unit_rows(rng, n, d);
        pfm::set_simd_level(pfm::SimdLevel::serial);
        std::vector<float> ref(m * n), ref_s(m * k);
        std::vector<std::int64_t> ref_i(m * k);
        pfm::scores(q.data(), m, g.data(), n, d, ref.data());
        pfm::topk(q.data(), m, g.data(), n, d, k, ref_s.data(), ref_i.data());
        std::vector<std::uint8_t> codes(n * ((d + 7) / 8));
        pfm::pack_signs(g.data(), n, d, nullptr, codes.data());
        std::vector<std::int32_t> ref_hd(m * k);
        std::vector<std::int64_t> ref_hi(m * k);
        pfm::hamming_topk(codes.data(), m, codes.data(), n, (d + 7) / 8, k, ref_hd.data(), ref_hi.data());
        // a 64-probe batch (bf16 first pass on CPUs with AVX512_BF16, float32 elsewhere)
        const std::size_t mb = 64;
        std::vector<float> qb = unit_rows(rng, mb, d), refb_s(mb * k);
        std::vector<std::int64_t> refb_i(mb * k);
        pfm::topk(qb.data(), mb, g.data(), n, d, k, refb_s.data(), refb_i.data());
        // two code planes: the first 32 bytes and the rest (codes of 64 bytes and more)
        const std::size_t nb = (d + 7) / 8, nbb = nb >= 64 ? nb - 32 : 0;
        std::vector<std::uint8_t> pa(n * 32), pb(n * (nbb ? nbb : 1));
        std::vector<std::int32_t> ref2_d(m * k);
        std::vector<std::int64_t> ref2_i(m * k);
        if (nbb) {
            for (std::size_t r = 0; r < n; ++r)
                for (std::size_t j = 0; j < nb; ++j)
                    (j < 32 ? pa[r * 32 + j] : pb[r * nbb + j - 32]) = codes[r * nb + j];
            pfm::hamming_topk2(pa.data(), pb.data(), m, pa.data(), pb.data(), n, 32, nbb, 40, k, ref2_d.data(),
                               ref2_i.data());
        }
        for (pfm::SimdLevel level : pfm::available_levels()) {
            const char* name = pfm::level_name(level);
            pfm::set_simd_level(level);
            std::vector<float> s(m * n), ts(m * k);
            std::vector<std::int64_t> ti(m * k);
            pfm::scores(q.data(), m, g.data(), n, d, s.data());
            double err = 0;
            for (std::size_t j = 0; j < m * n; ++j) err = std::fmax(err, std::fabs((double)s[j] - ref[j]));
            check(err <= 1e-5, "scores (blocked)", name, d);
            pfm::scores(q.data(), 3, g.data(), n, d, s.data());  // streaming form
            err = 0;
            for (std::size_t j = 0; j < 3 * n; ++j) err = std::fmax(err, std::fabs((double)s[j] - ref[j]));
            check(err <= 1e-5, "scores (streaming)", name, d);
            pfm::topk(q.data(), m, g.data(), n, d, k, ts.data(), ti.data());
            bool same = true;
            for (std::size_t j = 0; j < m * k; ++j)
                same &= ti[j] == ref_i[j] || std::fabs(ts[j] - ref_s[j]) <= 1e-6;  // near-ties may swap
            check(same, "topk", name, d);
            check(std::fabs(pfm::cosine(q.data(), g.data(), d) - ref[0]) <= 1e-5, "cosine", name, d);
            std::vector<std::int32_t> hd(m * k);
            std::vector<std::int64_t> hi(m * k);
            pfm::hamming_topk(codes.data(), m, codes.data(), n, (d + 7) / 8, k, hd.data(), hi.data());
            check(hd == ref_hd && hi == ref_hi, "hamming_topk", name, d);
            std::vector<float> tbs(mb * k);
            std::vector<std::int64_t> tbi(mb * k);
            pfm::topk(qb.data(), mb, g.data(), n, d, k, tbs.data(), tbi.data());
            same = true;
            for (std::size_t j = 0; j < mb * k; ++j)
                same &= tbi[j] == refb_i[j] || std::fabs(tbs[j] - refb_s[j]) <= 1e-6;
            check(same, "topk (64-probe batch)", name, d);
            if (nbb) {
                pfm::hamming_topk2(pa.data(), pb.data(), m, pa.data(), pb.data(), n, 32, nbb, 40, k, hd.data(),
                                   hi.data());
                check(hd == ref2_d && hi == ref2_i, "hamming_topk2", name, d);
            }
        }
    }
    std::printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
