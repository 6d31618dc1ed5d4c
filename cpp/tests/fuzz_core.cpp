// libFuzzer harness for the C++ entry points of the core (scoring.hpp, geometry.hpp's align_batch).
// The input's first bytes choose the entry point, the SIMD level and the sizes (kept small); the
// rest are the raw bytes of the floats (so NaN, Inf, subnormals and huge values all occur), masks,
// block cuts and candidates. Preconditions the bindings check (k <= n, blocks strictly increasing
// from 0 to d, candidates in [-1, n)) are established here the same way, so that every crash,
// sanitizer report or broken invariant is the core's. Built by .ci/sanitize.sh with clang
// (-fsanitize=fuzzer,address,undefined); seed corpus in cpp/tests/fuzz_corpus/core/.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "pyfacematch/geometry.hpp"
#include "pyfacematch/scoring.hpp"
#include "pyfacematch/simd.hpp"
#include "pyfacematch/threads.hpp"

namespace {

// Reads the input front to back; past its end every read gives zeros.
struct Reader {
    const std::uint8_t* p;
    std::size_t left;
    std::uint8_t byte() {
        if (!left) return 0;
        --left;
        return *p++;
    }
    float f32() {
        std::uint32_t v = 0;
        for (int j = 0; j < 4; ++j) v |= (std::uint32_t)byte() << (8 * j);
        float f;
        std::memcpy(&f, &v, 4);
        return f;
    }
    std::uint64_t u64() {
        std::uint64_t v = 0;
        for (int j = 0; j < 8; ++j) v |= (std::uint64_t)byte() << (8 * j);
        return v;
    }
    std::vector<float> floats(std::size_t n) {
        std::vector<float> x(n);
        for (auto& v : x) v = f32();
        return x;
    }
};

[[noreturn]] void broken(const char* what) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
}

// A ranked output: indices in range and distinct, padding only at the end, scores non-increasing.
void check_ranked(const float* s, const std::int64_t* i, std::size_t k, std::size_t n, bool pad_ok) {
    bool padding = false;
    for (std::size_t j = 0; j < k; ++j) {
        if (i[j] < 0) {
            if (!pad_ok) broken("padding where k <= n");
            padding = true;
            continue;
        }
        if (padding) broken("a row after padding");
        if ((std::size_t)i[j] >= n) broken("index out of range");
        for (std::size_t t = 0; t < j; ++t)
            if (i[t] == i[j]) broken("duplicate index");
        if (j > 0 && i[j - 1] >= 0 && s[j - 1] == s[j - 1] && s[j] == s[j] && s[j - 1] < s[j])
            broken("scores not best first");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const bool init = [] {
        pfm::set_num_threads(2);
        return true;
    }();
    (void)init;
    Reader r{data, size};
    const int op = r.byte() % 8;
    const auto levels = pfm::available_levels();
    pfm::set_simd_level(levels[r.byte() % levels.size()]);
    const std::size_t m = 1 + r.byte() % 64, n = 1 + r.byte() % 96, d = 1 + r.byte() % 130;
    const std::size_t k = 1 + r.byte() % n;
    std::vector<float> Q = r.floats(m * d), G = r.floats(n * d);
    switch (op) {
        case 0: {
            std::vector<float> out(m * n);
            pfm::scores(Q.data(), m, G.data(), n, d, out.data());
            break;
        }
        case 1: {
            std::vector<float> s(m * k);
            std::vector<std::int64_t> i(m * k);
            // a non-finite score makes topk answer false (the caller raises): no ranking to check
            if (pfm::topk(Q.data(), m, G.data(), n, d, k, s.data(), i.data()))
                for (std::size_t q = 0; q < m; ++q) check_ranked(&s[q * k], &i[q * k], k, n, false);
            break;
        }
        case 2: {
            const float c = pfm::cosine(Q.data(), G.data(), d);
            if (c == c && !(std::fabs(c) <= 1.0f + 1e-4f)) broken("cosine outside [-1, 1]");
            (void)pfm::first_nonfinite_row(G.data(), n, d);
            break;
        }
        case 3:
        case 4:
        case 5: {
            // blocks: B cuts from the input, made strictly increasing within (0, d)
            const std::size_t B = 1 + r.byte() % std::min<std::size_t>(d, 64);
            std::vector<std::int64_t> off{0};
            for (std::size_t b = 1; b < B; ++b) {
                const std::int64_t lo = off.back() + 1, hi = (std::int64_t)(d - (B - b));
                off.push_back(std::min(hi, lo + (std::int64_t)(r.byte() % 8)));
            }
            off.push_back((std::int64_t)d);
            const pfm::Blocks bl{off.data(), B};
            std::vector<std::uint64_t> mq(m), mg(n);
            for (auto& x : mq) x = r.u64();
            for (auto& x : mg) x = r.u64();
            const float minf = (float)(r.byte() % 11) / 10.0f;
            if (op == 3) {
                std::vector<float> out(m * n);
                pfm::masked_scores(Q.data(), mq.data(), m, G.data(), mg.data(), n, d, bl, minf, out.data());
                (void)pfm::masked_cosine(Q.data(), G.data(), d, mq[0], mg[0], bl, minf);
            } else if (op == 4) {
                std::vector<float> s(m * k);
                std::vector<std::int64_t> i(m * k);
                pfm::masked_topk(Q.data(), mq.data(), m, G.data(), mg.data(), n, d, bl, minf, k, s.data(), i.data());
                for (std::size_t q = 0; q < m; ++q) check_ranked(&s[q * k], &i[q * k], k, n, true);
            } else {
                const std::size_t c = 1 + r.byte() % 40, kk = 1 + r.byte() % c;
                std::vector<std::int64_t> cand(m * c);
                for (auto& x : cand) x = (std::int64_t)(r.byte() % (n + 1)) - 1;
                const bool masked = r.byte() & 1;
                std::vector<float> s(m * kk);
                std::vector<std::int64_t> i(m * kk);
                pfm::rerank(Q.data(), masked ? mq.data() : nullptr, m, G.data(), masked ? mg.data() : nullptr, n, d,
                            cand.data(), c, masked ? &bl : nullptr, minf, kk, s.data(), i.data());
                for (std::size_t q = 0; q < m; ++q) check_ranked(&s[q * kk], &i[q * kk], kk, n, true);
            }
            break;
        }
        case 6: {
            const std::size_t nb = (d + 7) / 8;
            std::vector<std::uint8_t> qc(m * nb), gc(n * nb);
            const bool centred = r.byte() & 1;
            std::vector<float> centre = r.floats(d);
            pfm::pack_signs(Q.data(), m, d, centred ? centre.data() : nullptr, qc.data());
            pfm::pack_signs(G.data(), n, d, centred ? centre.data() : nullptr, gc.data());
            std::vector<std::int32_t> hd(m * k);
            std::vector<std::int64_t> hi(m * k);
            pfm::hamming_topk(qc.data(), m, gc.data(), n, nb, k, hd.data(), hi.data());
            for (std::size_t j = 0; j < m * k; ++j)
                if (hi[j] < 0 || (std::size_t)hi[j] >= n || hd[j] < 0 || hd[j] > (std::int32_t)(8 * nb))
                    broken("hamming_topk output out of range");
            if (nb >= 2) {
                const std::size_t nba = 1 + r.byte() % (nb - 1), nbb = nb - nba;
                std::vector<std::uint8_t> qa(m * nba), qb(m * nbb), ga(n * nba), gb(n * nbb);
                for (std::size_t x = 0; x < m; ++x)
                    for (std::size_t j = 0; j < nb; ++j) (j < nba ? qa[x * nba + j] : qb[x * nbb + j - nba]) = qc[x * nb + j];
                for (std::size_t x = 0; x < n; ++x)
                    for (std::size_t j = 0; j < nb; ++j) (j < nba ? ga[x * nba + j] : gb[x * nbb + j - nba]) = gc[x * nb + j];
                const std::size_t admit = std::min<std::size_t>(n, k + r.byte() % (n + 1));
                pfm::hamming_topk2(qa.data(), qb.data(), m, ga.data(), gb.data(), n, nba, nbb, admit, k, hd.data(),
                                   hi.data());
                for (std::size_t j = 0; j < m * k; ++j)
                    if (hi[j] >= (std::int64_t)n || hd[j] > (std::int32_t)(8 * nb)) broken("hamming_topk2 out of range");
            }
            break;
        }
        default: {
            // similarity alignment of faces made of the same bytes: P points in D = 2 or 3
            const std::size_t D = 2 + (r.byte() & 1), P = 2 + r.byte() % 40, faces = 1 + r.byte() % 8;
            std::vector<float> X = r.floats(faces * P * D), mean = r.floats(P * D), w = r.floats(P);
            std::vector<std::uint8_t> vis(faces * P);
            for (auto& v : vis) v = r.byte() & 1;
            for (auto& v : w) v = std::fabs(v);
            std::vector<float> aligned(faces * P * D), tr(faces * (1 + D * D + D)), res(faces);
            std::vector<std::int32_t> st(faces);
            pfm::align_batch(X.data(), vis.data(), faces, P, D, mean.data(), w.data(), 2 + r.byte() % P,
                             aligned.data(), tr.data(), res.data(), st.data());
            break;
        }
    }
    return 0;
}
