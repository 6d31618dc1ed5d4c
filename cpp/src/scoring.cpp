// High-level scoring: splits work into tasks for the pool, runs the active kernels, merges the
// per-task top-k heaps. No instruction-set flags here: everything wide goes through kernels().
#include "pyfacematch/scoring.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "pyfacematch/simd.hpp"
#include "simd/table.hpp"
#include "pyfacematch/threads.hpp"
#include "pyfacematch/types.hpp"

namespace pfm {
namespace common_k {
#include "simd/heap_impl.inc"
#include "simd/codesel_impl.inc"
#include "simd/approx_impl.inc"
}  // namespace common_k

namespace {

constexpr std::size_t kSmallBatch = 6;              // below this, the streaming form wins
constexpr std::size_t kBf16Batch = 48;              // from this batch on, the bf16 first pass wins
constexpr double kMinWorkPerTask = 1 << 20;         // multiply-adds; below it a call stays on one thread
const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct AlignedFree {
    void operator()(float* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<float, AlignedFree>;

AlignedBuf aligned_floats(std::size_t n) {
    std::size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
    return AlignedBuf(static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64)));
}

// A work split: `parts` contiguous ranges of rows (split_rows) or of probes.
struct Split {
    bool split_rows;
    std::size_t parts;
};

Split plan(std::size_t m, std::size_t n, std::size_t d, std::size_t k = 1) {
    const std::size_t threads = get_num_threads();
    const double work = (double)m * (double)n * (double)d;
    std::size_t parts = std::min<std::size_t>(threads, std::max<std::size_t>(1, (std::size_t)(work / kMinWorkPerTask)));
    if (parts <= 1) return {true, 1};
    // Rows when the gallery is big enough to give each part whole packed blocks, else probes.
    if (n >= parts * 512 || m < parts) {
        // Several chunks per thread, claimed dynamically, so a thread slowed by another process on
        // a shared machine does not hold the whole call back; bounded so the heaps stay small.
        std::size_t chunks = parts * 4;
        chunks = std::min(chunks, std::max<std::size_t>(parts, n / 4096));
        while (chunks > parts && (double)chunks * (double)m * (double)k > 4e6) --chunks;
        return {true, std::min(chunks, n)};
    }
    return {false, std::min(parts * 4, m)};
}

inline std::size_t part_begin(std::size_t total, std::size_t parts, std::size_t p) { return total * p / parts; }

// Sorted output of one heap: best first, ties → lower index; pads with (pad_s, -1).
void emit_sorted(TopKHeap& h, std::size_t k, float* out_s, std::int64_t* out_i, float pad_s) {
    std::vector<std::pair<float, std::int64_t>> v(h.size);
    for (int j = 0; j < h.size; ++j) v[j] = {h.s[j], h.i[j]};
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    for (std::size_t j = 0; j < k; ++j) {
        if (j < v.size()) {
            out_s[j] = v[j].first;
            out_i[j] = v[j].second;
        } else {
            out_s[j] = pad_s;
            out_i[j] = -1;
        }
    }
}

// Per-(part, probe) heap storage.
struct HeapSet {
    std::vector<float> s;
    std::vector<std::int64_t> i;
    std::vector<TopKHeap> h;
    HeapSet(std::size_t count, std::size_t k) : s(count * k), i(count * k), h(count) {
        for (std::size_t c = 0; c < count; ++c) h[c] = TopKHeap{s.data() + c * k, i.data() + c * k, (int)k, 0};
    }
};

// Merges parts' heaps of each probe into out (m×k).
void merge_parts(HeapSet& hs, std::size_t parts, std::size_t m, std::size_t k, float* out_s,
                 std::int64_t* out_i, float pad_s) {
    std::vector<float> ms(k);
    std::vector<std::int64_t> mi(k);
    for (std::size_t q = 0; q < m; ++q) {
        TopKHeap merged{ms.data(), mi.data(), (int)k, 0};
        for (std::size_t p = 0; p < parts; ++p) {
            TopKHeap& h = hs.h[p * m + q];
            for (int j = 0; j < h.size; ++j) common_k::heap_push(merged, h.s[j], h.i[j]);
        }
        emit_sorted(merged, k, out_s + q * k, out_i + q * k, pad_s);
    }
}

// Block layout helpers for masked scoring.
struct BlockInfo {
    std::vector<std::size_t> off;   // B+1
    std::size_t d;
    explicit BlockInfo(const Blocks& b) : off(b.count + 1), d(0) {
        for (std::size_t j = 0; j <= b.count; ++j) off[j] = (std::size_t)b.offsets[j];
        d = off[b.count];
    }
    std::size_t count() const { return off.size() - 1; }
    std::size_t shared_dims(std::uint64_t mask) const {
        std::size_t s = 0;
        while (mask) {
            int b = __builtin_ctzll(mask);
            mask &= mask - 1;
            if ((std::size_t)b < count()) s += off[b + 1] - off[b];
        }
        return s;
    }
};

// Masked cosine through one contiguous pass per pair: for a shared block set S, the probe with the
// blocks outside S zeroed (qS), their 0/1 indicator (wS) and |qS|² are built once and reused for
// every gallery row with the same S (occlusion patterns repeat), so a pair costs one dot_masked
// over d instead of a kernel call per block.
class SharedSetCache {
public:
    SharedSetCache(const BlockInfo& bi, std::size_t d, std::size_t need)
        : bi_(bi), d_(d), need_(need), buf_(kSlots * 2 * d) {}

    void reset(const float* q, std::uint64_t mq) {
        q_ = q;
        mq_ = mq;
        used_ = 0;
        next_ = 0;
    }

    // Score of the current probe against row g with mask mg (NaN when not comparable).
    float score(const KernelTable& K, const float* g, std::uint64_t mg) {
        std::uint64_t sh = mq_ & mg & valid_bits();
        if (sh == 0) return kNaN;
        int e = find(sh);
        if (!ok_[e]) return kNaN;
        float ab, gg;
        K.dot_masked(buf_.data() + e * 2 * d_, buf_.data() + e * 2 * d_ + d_, g, d_, &ab, &gg);
        double den = std::sqrt((double)qn_[e] * (double)gg);
        if (!(den > 0)) return kNaN;
        return (float)(ab / den);
    }

private:
    static constexpr int kSlots = 8;

    std::uint64_t valid_bits() const { return bi_.count() >= 64 ? ~0ULL : (1ULL << bi_.count()) - 1ULL; }

    int find(std::uint64_t sh) {
        for (int e = 0; e < used_; ++e)
            if (key_[e] == sh) return e;
        int e = used_ < kSlots ? used_++ : (next_++ % kSlots);
        key_[e] = sh;
        ok_[e] = bi_.shared_dims(sh) >= need_;
        float* qs = buf_.data() + e * 2 * d_;
        float* ws = qs + d_;
        std::memset(qs, 0, 2 * d_ * sizeof(float));
        double qn = 0;
        for (std::uint64_t m = sh; m;) {
            int b = __builtin_ctzll(m);
            m &= m - 1;
            for (std::size_t j = bi_.off[b]; j < bi_.off[b + 1]; ++j) {
                qs[j] = q_[j];
                ws[j] = 1.0f;
                qn += (double)q_[j] * q_[j];
            }
        }
        qn_[e] = (float)qn;
        return e;
    }

    const BlockInfo& bi_;
    std::size_t d_, need_;
    std::vector<float> buf_;
    const float* q_ = nullptr;
    std::uint64_t mq_ = 0;
    std::uint64_t key_[kSlots] = {};
    bool ok_[kSlots] = {};
    float qn_[kSlots] = {};
    int used_ = 0, next_ = 0;
};

// Rows per block of the masked scans: a probe's pass over a block stays in L2.
inline std::size_t masked_block_rows(std::size_t d) { return std::max<std::size_t>(64, (256u * 1024u) / (4 * d)); }

std::size_t min_shared_dims(std::size_t d, float min_fraction) {
    double need = std::ceil((double)min_fraction * (double)d - 1e-9);
    if (need < 1) need = 1;
    return (std::size_t)need;
}

}  // namespace

namespace {

// Work split of a Hamming scan: a batch goes by probes (every thread scans the whole, small code
// array for its probes, so each probe has one selection and nothing to merge); fewer probes go by
// rows, in `row_parts` parts (0: plan()'s count).
Split plan_codes(std::size_t m, std::size_t n, std::size_t bits, std::size_t k, std::size_t row_parts) {
    const Split sp = plan(m, n, bits, k);
    const std::size_t threads = get_num_threads();
    if (sp.parts <= 1) return sp;
    if (m >= 4 * threads) return Split{false, std::min<std::size_t>(m, threads * 4)};
    return row_parts ? Split{true, std::min(row_parts, n)} : sp;
}

}  // namespace

std::int64_t first_nonfinite_row(const float* X, std::size_t n, std::size_t d) {
    const Split sp = plan(1, n, d / 8 + 1);
    std::vector<std::int64_t> first(sp.parts, -1);
    parallel_for(sp.parts, [&](std::size_t p) {
        std::size_t r0 = part_begin(n, sp.parts, p), r1 = part_begin(n, sp.parts, p + 1);
        for (std::size_t r = r0; r < r1; ++r) {
            const float* x = X + r * d;
            // Exponent bits all set means NaN or ±Inf; an integer OR-reduction vectorises.
            std::uint32_t bad = 0;
            for (std::size_t j = 0; j < d; ++j) {
                std::uint32_t b;
                std::memcpy(&b, x + j, 4);
                bad |= ((b & 0x7f800000u) == 0x7f800000u);
            }
            if (bad) {
                first[p] = (std::int64_t)r;
                return;
            }
        }
    });
    for (std::int64_t f : first)
        if (f >= 0) return f;
    return -1;
}

double stream_read(const float* x, std::size_t n, int variant, std::size_t d) {
    const KernelTable& K = kernels();
    // Split as the one-probe scan splits its rows (plan(): four chunks per thread, claimed as threads
    // come free), so the read it is compared with runs under the same scheduling: with one part per
    // thread, a thread another process holds off the CPU made this reference slower than the scan
    // itself on a shared machine (560 against 403 ms for 2 GB at a load average of 12).
    // Variants (issue 14: one stream per thread is no ceiling for a scan that reads four rows at
    // once; the benchmark takes the fastest): 0 one stream per part; 1 four equal streams per part
    // read together (sum4); 2 rows of d, four rows at a time, as dot_1x4 reads them.
    if (variant == 2 && (d == 0 || n % d != 0)) variant = 1;
    const std::size_t unit = variant == 2 ? d : 1;  // parts hold whole rows for variant 2
    const std::size_t units = n / unit;
    const std::size_t parts =
        std::max<std::size_t>(1, std::min<std::size_t>(4 * get_num_threads(), n / 65536));
    std::vector<double> sums(parts, 0.0);
    auto sum4 = [&](const float* a, const float* b, const float* c, const float* e, std::size_t len) {
        if (K.sum4) return (double)K.sum4(a, b, c, e, len);
        double t = 0;  // the serial level: a plain loop over the four streams
        for (std::size_t i = 0; i < len; ++i) t += (double)a[i] + b[i] + c[i] + e[i];
        return t;
    };
    parallel_for(parts, [&](std::size_t p) {
        const std::size_t a = part_begin(units, parts, p) * unit, b = part_begin(units, parts, p + 1) * unit;
        constexpr std::size_t kChunk = 1 << 16;
        if (variant == 0) {
            for (std::size_t c = a; c < b; c += kChunk) {
                const std::size_t len = std::min(kChunk, b - c);
                sums[p] += K.dot(x + c, x + c, len);
            }
        } else if (variant == 1) {
            const std::size_t L = (b - a) / 4;
            const float *s0 = x + a, *s1 = s0 + L, *s2 = s1 + L, *s3 = s2 + L;
            for (std::size_t c = 0; c < L; c += kChunk) {
                const std::size_t len = std::min(kChunk, L - c);
                sums[p] += sum4(s0 + c, s1 + c, s2 + c, s3 + c, len);
            }
            for (std::size_t c = a + 4 * L; c < b; ++c) sums[p] += x[c];
        } else {
            std::size_t r = a;
            for (; r + 4 * d <= b; r += 4 * d) sums[p] += sum4(x + r, x + r + d, x + r + 2 * d, x + r + 3 * d, d);
            for (; r < b; ++r) sums[p] += x[r];
        }
    });
    double total = 0;
    for (double v : sums) total += v;
    return total;
}

namespace {

// Largest |x_j| of a d-vector; NaN when an element is not finite.
float max_abs(const float* x, std::size_t d) {
    float m = 0.0f;
    for (std::size_t j = 0; j < d; ++j) {
        const float v = std::fabs(x[j]);
        if (!(v <= std::numeric_limits<float>::max())) return kNaN;
        if (v > m) m = v;
    }
    return m;
}

// Copy of x scaled by a power of two (exact) so that its largest element lies in [0.5, 1).
std::vector<float> rescaled(const float* x, std::size_t d, float amax) {
    int e = 0;
    std::frexp(amax, &e);
    std::vector<float> out(x, x + d);
    for (float& v : out) v = std::ldexp(v, -e);
    return out;
}

}  // namespace

float cosine(const float* a, const float* b, std::size_t d) {
    float ab, aa, bb;
    const KernelTable& K = kernels();
    K.dot3(a, b, d, &ab, &aa, &bb);
    // Sums of squares within float's comfortable range: the fast path is exact enough.
    constexpr float kLow = 1e-30f, kHigh = 1e30f;
    if (aa >= kLow && aa <= kHigh && bb >= kLow && bb <= kHigh && std::isfinite(ab))
        return ab / (std::sqrt(aa) * std::sqrt(bb));
    // Finite inputs whose squares overflow (|x| >= ~1e19) or underflow (|x| <= ~1e-19): the cosine
    // does not depend on scale, so score copies scaled by powers of two (no rounding) instead.
    const float ma = max_abs(a, d), mb = max_abs(b, d);
    if (!(ma > 0.0f) || !(mb > 0.0f)) return kNaN;  // a zero vector, or a non-finite element
    const std::vector<float> sa = rescaled(a, d, ma), sb = rescaled(b, d, mb);
    K.dot3(sa.data(), sb.data(), d, &ab, &aa, &bb);
    const float den = std::sqrt(aa) * std::sqrt(bb);
    if (!(den > 0) || !std::isfinite(den)) return kNaN;
    return ab / den;
}

bool scores(const float* Q, std::size_t m, const float* G, std::size_t n, std::size_t d, float* out) {
    const KernelTable& K = kernels();
    const Split sp = plan(m, n, d);
    const bool gemm = m >= kSmallBatch;
    const std::size_t pf = gemm ? K.pack_floats(d) : 0;
    parallel_for(sp.parts, [&](std::size_t p) {
        AlignedBuf pack = gemm ? aligned_floats(pf) : AlignedBuf();
        if (sp.split_rows) {
            std::size_t r0 = part_begin(n, sp.parts, p), r1 = part_begin(n, sp.parts, p + 1);
            if (gemm) K.scores_gemm(Q, m, G, r0, r1, d, out + r0, n, pack.get());
            else K.scores_stream(Q, m, G, r0, r1, d, out + r0, n);
        } else {
            std::size_t q0 = part_begin(m, sp.parts, p), q1 = part_begin(m, sp.parts, p + 1);
            if (q1 - q0 >= kSmallBatch) K.scores_gemm(Q + q0 * d, q1 - q0, G, 0, n, d, out + q0 * n, n, pack.get());
            else K.scores_stream(Q + q0 * d, q1 - q0, G, 0, n, d, out + q0 * n, n);
        }
    });
    // Non-finite check on the output: cheap next to the m·n·d multiply-adds that made it.
    const std::size_t total = m * n;
    bool ok = true;
    for (std::size_t j = 0; j < total; ++j)
        if (!(out[j] - out[j] == 0.0f)) {
            ok = false;
            break;
        }
    return ok;
}

namespace {

std::atomic<int> g_bf16{-1};  // -1: not decided yet (PYFACEMATCH_BF16), 0 off, 1 on
std::atomic<int> g_amx{-1};   // -1: not decided yet (PYFACEMATCH_AMX), 0 off, 1 on

bool env_off(const char* name) {
    const char* env = std::getenv(name);
    return env && (std::strcmp(env, "0") == 0 || std::strcmp(env, "off") == 0);
}

bool amx_wanted() {
    int v = g_amx.load(std::memory_order_relaxed);
    if (v < 0) {
        v = env_off("PYFACEMATCH_AMX") ? 0 : 1;
        g_amx.store(v, std::memory_order_relaxed);
    }
    return v == 1;
}

bool bf16_wanted() {
    int v = g_bf16.load(std::memory_order_relaxed);
    if (v < 0) {
        const char* env = std::getenv("PYFACEMATCH_BF16");
        v = (env && (std::strcmp(env, "0") == 0 || std::strcmp(env, "off") == 0)) ? 0 : 1;
        g_bf16.store(v, std::memory_order_relaxed);
    }
    return v == 1;
}

// Exact top-k of a large batch through a bf16 first pass (see topk_bf16 in kernels_avx512.cpp, or
// topk_bf16_amx in kernels_amx.cpp on AMX tiles where amx_active()):
// every part keeps, per probe, the k best lower bounds and the rows whose upper bound reaches the
// k-th of them; the candidates of all parts that reach the merged k-th lower bound are scored
// again in float32 and the k best kept. A probe whose candidates overflowed is answered by the
// float32 scan instead. The answer is the float32 top-k, only computed with fewer flops.
// Candidate buffer per (part, probe): the k best plus room for rows within the error bound.
inline std::size_t bf16_cap(std::size_t k) { return 2 * k + 128; }

bool topk_bf16_path(const KernelTable& K, const float* Q, std::size_t m, const float* G, std::size_t n,
                    std::size_t d, std::size_t k, float* out_s, std::int64_t* out_i) {
    const std::size_t dp = (d + 1) / 2;
    std::vector<std::uint32_t> QB(m * dp);
    std::vector<float> qn(m);
    K.bf16_convert(Q, m, d, QB.data(), qn.data());
    Split sp = plan(m, n, d, k);
    const std::size_t parts = sp.split_rows ? sp.parts : 1;
    const std::size_t count = parts * m, cap = bf16_cap(k);
    HeapSet lower(count, k);
    std::vector<float> cu(count * cap);
    std::vector<std::int64_t> ci(count * cap);
    std::vector<ApproxSel> sels(count);
    for (std::size_t c = 0; c < count; ++c)
        sels[c] = ApproxSel{lower.h[c], cu.data() + c * cap, ci.data() + c * cap, (int)cap, 0, 0};
    std::vector<int> bad(sp.parts, 0);
#ifdef PFM_HAVE_AMX
    if (amx_active()) {  // the same first pass on AMX tiles (kernels_amx.cpp), its own scratch
        parallel_for(sp.parts, [&](std::size_t p) {
            if (sp.split_rows) {
                std::size_t r0 = part_begin(n, parts, p), r1 = part_begin(n, parts, p + 1);
                topk_bf16_amx(QB.data(), qn.data(), m, G, r0, r1, d, sels.data() + p * m, &bad[p]);
            } else {
                std::size_t q0 = part_begin(m, sp.parts, p), q1 = part_begin(m, sp.parts, p + 1);
                topk_bf16_amx(QB.data() + q0 * dp, qn.data() + q0, q1 - q0, G, 0, n, d, sels.data() + q0, &bad[p]);
            }
        });
    } else
#endif
    {
        const std::size_t pf = K.pack_floats(d);
        parallel_for(sp.parts, [&](std::size_t p) {
            AlignedBuf pack = aligned_floats(pf);
            if (sp.split_rows) {
                std::size_t r0 = part_begin(n, parts, p), r1 = part_begin(n, parts, p + 1);
                K.topk_bf16(QB.data(), qn.data(), m, G, r0, r1, d, sels.data() + p * m, &bad[p], pack.get());
            } else {
                std::size_t q0 = part_begin(m, sp.parts, p), q1 = part_begin(m, sp.parts, p + 1);
                K.topk_bf16(QB.data() + q0 * dp, qn.data() + q0, q1 - q0, G, 0, n, d, sels.data() + q0, &bad[p],
                            pack.get());
            }
        });
    }
    for (int b : bad)
        if (b) return false;
    const std::size_t threads = std::min<std::size_t>(get_num_threads(), m);
    std::vector<int> fine(threads, 1);
    parallel_for(threads, [&](std::size_t t) {
        std::vector<float> ls(k), hs(k);
        std::vector<std::int64_t> li(k), hi(k), rows;
        for (std::size_t q = part_begin(m, threads, t); q < part_begin(m, threads, t + 1); ++q) {
            const float* x = Q + q * d;
            TopKHeap h{hs.data(), hi.data(), (int)k, 0};
            bool overflow = false;
            for (std::size_t p = 0; p < parts; ++p) overflow |= sels[p * m + q].overflow != 0;
            if (overflow) {
                int b = 0;
                K.topk_stream(x, 1, G, 0, n, d, &h, &b);
                if (b) fine[t] = 0;
            } else {
                TopKHeap L{ls.data(), li.data(), (int)k, 0};
                for (std::size_t p = 0; p < parts; ++p) {
                    const TopKHeap& lp = sels[p * m + q].lower;
                    for (int j = 0; j < lp.size; ++j) common_k::heap_push(L, lp.s[j], lp.i[j]);
                }
                const float thr = common_k::heap_thresh(L);
                rows.clear();
                for (std::size_t p = 0; p < parts; ++p) {
                    const ApproxSel& s = sels[p * m + q];
                    for (int j = 0; j < s.n; ++j)
                        if (s.cu[j] >= thr) rows.push_back(s.ci[j]);
                }
                std::sort(rows.begin(), rows.end());  // increasing rows: the heap's tie rule
                for (std::int64_t r : rows) {
                    float sc = K.dot(x, G + (std::size_t)r * d, d);
                    if (!(sc - sc == 0.0f)) fine[t] = 0;
                    if (sc > common_k::heap_thresh(h)) common_k::heap_push(h, sc, r);
                }
            }
            emit_sorted(h, k, out_s + q * k, out_i + q * k, -std::numeric_limits<float>::infinity());
        }
    });
    for (int f : fine)
        if (!f) return false;
    return true;
}

}  // namespace

bool amx_compiled() {
#ifdef PFM_HAVE_AMX
    return true;
#else
    return false;
#endif
}

void set_amx(bool on) { g_amx.store(on ? 1 : 0, std::memory_order_relaxed); }

bool amx_active() {
    return amx_compiled() && amx_wanted() && kernels().level == SimdLevel::avx512 && bf16_prefilter_active() &&
           cpu_has_amx_bf16();
}

bool amx_int8_compiled() {
#ifdef PFM_HAVE_AMX_INT8
    return true;
#else
    return false;
#endif
}

bool amx_int8_active() {
    return amx_int8_compiled() && amx_wanted() && kernels().level == SimdLevel::avx512 && cpu_has_amx_int8();
}

void set_bf16_prefilter(bool on) { g_bf16.store(on ? 1 : 0, std::memory_order_relaxed); }

bool bf16_prefilter_active() {
    const KernelTable& K = kernels();
    return bf16_wanted() && K.topk_bf16 != nullptr && cpu_has_avx512_bf16();
}

namespace {

// Every reported score re-computed by the one canonical kernel (K.dot, the form the bf16 path's
// exact re-score and rerank use) and the k re-sorted by (score desc, row asc). The scan forms
// (streaming 1×4, packed GEMM tiles, bf16/AMX first pass) accumulate in different orders, and
// which one runs depends on the batch size and on how rows and probes are split over threads, so
// without this the same probe/row pair could be reported 1 ulp apart in a gallery and in its
// shards (found by the Dask work, issue 17). Costs m·k dot products, nothing next to the scan.
void canonical_scores(const KernelTable& K, const float* Q, std::size_t m, const float* G, std::size_t d,
                      std::size_t k, float* out_s, std::int64_t* out_i) {
    const std::size_t threads = std::max<std::size_t>(1, std::min<std::size_t>(get_num_threads(), m * k / 64));
    parallel_for(threads, [&](std::size_t t) {
        std::vector<std::pair<float, std::int64_t>> v;
        for (std::size_t q = part_begin(m, threads, t); q < part_begin(m, threads, t + 1); ++q) {
            float* s = out_s + q * k;
            std::int64_t* ix = out_i + q * k;
            v.clear();
            for (std::size_t j = 0; j < k && ix[j] >= 0; ++j)
                v.push_back({K.dot(Q + q * d, G + (std::size_t)ix[j] * d, d), ix[j]});
            std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
                return a.first > b.first || (a.first == b.first && a.second < b.second);
            });
            for (std::size_t j = 0; j < v.size(); ++j) s[j] = v[j].first, ix[j] = v[j].second;
        }
    });
}

bool topk_select(const float* Q, std::size_t m, const float* G, std::size_t n, std::size_t d, std::size_t k,
                 float* out_s, std::int64_t* out_i);

}  // namespace

bool topk(const float* Q, std::size_t m, const float* G, std::size_t n, std::size_t d, std::size_t k,
          float* out_s, std::int64_t* out_i) {
    if (!topk_select(Q, m, G, n, d, k, out_s, out_i)) return false;
    canonical_scores(kernels(), Q, m, G, d, k, out_s, out_i);
    return true;
}

namespace {

bool topk_select(const float* Q, std::size_t m, const float* G, std::size_t n, std::size_t d, std::size_t k,
                 float* out_s, std::int64_t* out_i) {
    const KernelTable& K = kernels();
    if (m >= kBf16Batch && bf16_prefilter_active()) {
        // Probes in equal chunks of at most ~64 MB of candidate buffers (up to 8 parts × cap each).
        const double per_probe = 8.0 * (double)bf16_cap(k) * (sizeof(float) + sizeof(std::int64_t));
        const std::size_t most = std::max(kBf16Batch, (std::size_t)std::min(4096.0, 64e6 / per_probe));
        const std::size_t chunks = (m + most - 1) / most;
        for (std::size_t c = 0; c < chunks; ++c) {
            const std::size_t q0 = part_begin(m, chunks, c), q1 = part_begin(m, chunks, c + 1);
            if (!topk_bf16_path(K, Q + q0 * d, q1 - q0, G, n, d, k, out_s + q0 * k, out_i + q0 * k)) return false;
        }
        return true;
    }
    const Split sp = plan(m, n, d, k);
    std::vector<int> bad(sp.parts, 0);
    const float pad = -std::numeric_limits<float>::infinity();
    if (sp.split_rows) {
        HeapSet hs(sp.parts * m, k);
        const bool gemm = m >= kSmallBatch;
        const std::size_t pf = gemm ? K.pack_floats(d) : 0;
        parallel_for(sp.parts, [&](std::size_t p) {
            std::size_t r0 = part_begin(n, sp.parts, p), r1 = part_begin(n, sp.parts, p + 1);
            if (gemm) {
                AlignedBuf pack = aligned_floats(pf);
                K.topk_gemm(Q, m, G, r0, r1, d, hs.h.data() + p * m, &bad[p], pack.get());
            } else {
                K.topk_stream(Q, m, G, r0, r1, d, hs.h.data() + p * m, &bad[p]);
            }
        });
        merge_parts(hs, sp.parts, m, k, out_s, out_i, pad);
    } else {
        HeapSet hs(m, k);
        parallel_for(sp.parts, [&](std::size_t p) {
            std::size_t q0 = part_begin(m, sp.parts, p), q1 = part_begin(m, sp.parts, p + 1);
            if (q1 - q0 >= kSmallBatch) {
                AlignedBuf pack = aligned_floats(K.pack_floats(d));
                K.topk_gemm(Q + q0 * d, q1 - q0, G, 0, n, d, hs.h.data() + q0, &bad[p], pack.get());
            } else {
                K.topk_stream(Q + q0 * d, q1 - q0, G, 0, n, d, hs.h.data() + q0, &bad[p]);
            }
            for (std::size_t q = q0; q < q1; ++q) emit_sorted(hs.h[q], k, out_s + q * k, out_i + q * k, pad);
        });
    }
    for (int b : bad)
        if (b) return false;
    return true;
}

}  // namespace

float masked_cosine(const float* a, const float* b, std::size_t d, std::uint64_t ma, std::uint64_t mb,
                    const Blocks& blocks, float min_fraction) {
    BlockInfo bi(blocks);
    SharedSetCache cache(bi, d, min_shared_dims(d, min_fraction));
    cache.reset(a, ma);
    return cache.score(kernels(), b, mb);
}

void masked_scores(const float* Q, const std::uint64_t* mq, std::size_t m, const float* G,
                   const std::uint64_t* mg, std::size_t n, std::size_t d, const Blocks& blocks,
                   float min_fraction, float* out) {
    const KernelTable& K = kernels();
    BlockInfo bi(blocks);
    const std::size_t need = min_shared_dims(d, min_fraction), nb = masked_block_rows(d);
    const Split sp = plan(m, n, d);
    parallel_for(sp.parts, [&](std::size_t p) {
        std::size_t r0 = 0, r1 = n, q0 = 0, q1 = m;
        if (sp.split_rows) r0 = part_begin(n, sp.parts, p), r1 = part_begin(n, sp.parts, p + 1);
        else q0 = part_begin(m, sp.parts, p), q1 = part_begin(m, sp.parts, p + 1);
        SharedSetCache cache(bi, d, need);
        for (std::size_t rb = r0; rb < r1; rb += nb) {
            std::size_t re = std::min(r1, rb + nb);
            for (std::size_t q = q0; q < q1; ++q) {
                cache.reset(Q + q * d, mq[q]);
                for (std::size_t r = rb; r < re; ++r) out[q * n + r] = cache.score(K, G + r * d, mg[r]);
            }
        }
    });
}

void masked_topk(const float* Q, const std::uint64_t* mq, std::size_t m, const float* G,
                 const std::uint64_t* mg, std::size_t n, std::size_t d, const Blocks& blocks,
                 float min_fraction, std::size_t k, float* out_s, std::int64_t* out_i) {
    const KernelTable& K = kernels();
    BlockInfo bi(blocks);
    const std::size_t need = min_shared_dims(d, min_fraction), nb = masked_block_rows(d);
    const Split sp = plan(m, n, d, k);
    const std::size_t parts = sp.split_rows ? sp.parts : 1;
    HeapSet hs(parts * m, k);
    // Rows of [r0, r1) in blocks, every probe of [q0, q1) over a block before the next: rows arrive
    // in increasing order per probe, as the heaps' tie rule expects.
    auto scan = [&](std::size_t r0, std::size_t r1, std::size_t q0, std::size_t q1, TopKHeap* heaps) {
        SharedSetCache cache(bi, d, need);
        for (std::size_t rb = r0; rb < r1; rb += nb) {
            std::size_t re = std::min(r1, rb + nb);
            for (std::size_t q = q0; q < q1; ++q) {
                cache.reset(Q + q * d, mq[q]);
                TopKHeap& h = heaps[q];
                float t = common_k::heap_thresh(h);
                for (std::size_t r = rb; r < re; ++r) {
                    float s = cache.score(K, G + r * d, mg[r]);
                    if (s > t) {
                        common_k::heap_push(h, s, (std::int64_t)r);
                        t = common_k::heap_thresh(h);
                    }
                }
            }
        }
    };
    if (sp.split_rows) {
        parallel_for(parts, [&](std::size_t p) {
            scan(part_begin(n, parts, p), part_begin(n, parts, p + 1), 0, m, hs.h.data() + p * m);
        });
    } else {
        parallel_for(sp.parts, [&](std::size_t p) {
            scan(0, n, part_begin(m, sp.parts, p), part_begin(m, sp.parts, p + 1), hs.h.data());
        });
    }
    merge_parts(hs, parts, m, k, out_s, out_i, kNaN);
}

void rerank(const float* Q, const std::uint64_t* mq, std::size_t m, const float* G,
            const std::uint64_t* mg, std::size_t n, std::size_t d, const std::int64_t* cand,
            std::size_t c, const Blocks* blocks, float min_fraction, std::size_t k, float* out_s,
            std::int64_t* out_i) {
    (void)n;
    const KernelTable& K = kernels();
    const bool masked = mq && mg && blocks;
    std::unique_ptr<BlockInfo> bi(masked ? new BlockInfo(*blocks) : nullptr);
    const std::size_t need = masked ? min_shared_dims(d, min_fraction) : 0;
    const double work = (double)m * (double)c * (double)d;
    std::size_t parts = std::min<std::size_t>(get_num_threads(), std::max<std::size_t>(1, (std::size_t)(work / kMinWorkPerTask)));
    parts = std::max<std::size_t>(1, std::min(parts, m));
    parallel_for(parts, [&](std::size_t p) {
        std::size_t q0 = part_begin(m, parts, p), q1 = part_begin(m, parts, p + 1);
        std::vector<std::int64_t> ids(c);
        std::unique_ptr<SharedSetCache> cache(masked ? new SharedSetCache(*bi, d, need) : nullptr);
        std::vector<float> hs(k);
        std::vector<std::int64_t> hi(k);
        for (std::size_t q = q0; q < q1; ++q) {
            // Sorted, de-duplicated candidates: the heap then sees indices in increasing order.
            std::size_t nc = 0;
            for (std::size_t j = 0; j < c; ++j)
                if (cand[q * c + j] >= 0) ids[nc++] = cand[q * c + j];
            std::sort(ids.begin(), ids.begin() + nc);
            nc = std::unique(ids.begin(), ids.begin() + nc) - ids.begin();
            TopKHeap h{hs.data(), hi.data(), (int)k, 0};
            const float* x = Q + q * d;
            if (masked) cache->reset(x, mq[q]);
            for (std::size_t j = 0; j < nc; ++j) {
                const float* g = G + ids[j] * d;
                float s = masked ? cache->score(K, g, mg[ids[j]]) : K.dot(x, g, d);
                if (s > common_k::heap_thresh(h)) common_k::heap_push(h, s, ids[j]);
            }
            emit_sorted(h, k, out_s + q * k, out_i + q * k, kNaN);
        }
    });
}

void pack_signs(const float* X, std::size_t n, std::size_t d, const float* center, std::uint8_t* out) {
    const std::size_t nb = (d + 7) / 8;
    const Split sp = plan(1, n, d * 64);
    parallel_for(sp.parts, [&](std::size_t p) {
        std::size_t r0 = part_begin(n, sp.parts, p), r1 = part_begin(n, sp.parts, p + 1);
        for (std::size_t r = r0; r < r1; ++r) {
            const float* x = X + r * d;
            std::uint8_t* o = out + r * nb;
            std::memset(o, 0, nb);
            for (std::size_t j = 0; j < d; ++j) {
                float v = center ? x[j] - center[j] : x[j];
                if (v > 0.0f) o[j >> 3] |= (std::uint8_t)(1u << (j & 7));
            }
        }
    });
}

void hamming_topk(const std::uint8_t* Q, std::size_t m, const std::uint8_t* G, std::size_t n,
                  std::size_t nbytes, std::size_t k, std::int32_t* out_d, std::int64_t* out_i) {
    const KernelTable& K = kernels();
    const Split sp = plan_codes(m, n, nbytes * 8, k, 0);
    const std::size_t parts = sp.split_rows ? sp.parts : 1;
    const std::size_t count = parts * m, cap = 2 * k, hn = nbytes * 8 + 1;
    std::vector<std::int32_t> bd(count * cap), hist(count * hn, 0);
    std::vector<std::int64_t> bi(count * cap);
    std::vector<CodeSel> sels(count);
    for (std::size_t c = 0; c < count; ++c)
        sels[c] = CodeSel{bd.data() + c * cap, bi.data() + c * cap, hist.data() + c * hn, (int)k, (int)cap, 0, 0,
                          0x7fffffff, 0};
    if (sp.split_rows) {
        parallel_for(parts, [&](std::size_t p) {
            std::size_t r0 = part_begin(n, parts, p), r1 = part_begin(n, parts, p + 1);
            K.hamming_topk(Q, m, G, r0, r1, nbytes, sels.data() + p * m);
        });
    } else {
        parallel_for(sp.parts, [&](std::size_t p) {
            std::size_t q0 = part_begin(m, sp.parts, p), q1 = part_begin(m, sp.parts, p + 1);
            K.hamming_topk(Q + q0 * nbytes, q1 - q0, G, 0, n, nbytes, sels.data() + q0);
        });
    }
    // Each part's buffer holds a superset of its best k: the best k of their union, by (distance, row).
    const std::size_t mparts = std::min<std::size_t>(get_num_threads(), m);
    parallel_for(mparts, [&](std::size_t t) {
        std::vector<std::pair<std::int32_t, std::int64_t>> all;
        for (std::size_t q = part_begin(m, mparts, t); q < part_begin(m, mparts, t + 1); ++q) {
            all.clear();
            for (std::size_t p = 0; p < parts; ++p) {
                CodeSel& s = sels[p * m + q];
                common_k::codesel_compact(s);
                for (int j = 0; j < s.n; ++j) all.emplace_back(s.d[j], s.i[j]);
            }
            const std::size_t keep = std::min(k, all.size());
            if (keep < all.size()) std::nth_element(all.begin(), all.begin() + keep, all.end());
            std::sort(all.begin(), all.begin() + keep);
            for (std::size_t j = 0; j < k; ++j) {
                out_d[q * k + j] = j < keep ? all[j].first : -1;
                out_i[q * k + j] = j < keep ? all[j].second : -1;
            }
        }
    });
}

void hamming_topk2(const std::uint8_t* QA, const std::uint8_t* QB, std::size_t m, const std::uint8_t* GA,
                   const std::uint8_t* GB, std::size_t n, std::size_t nba, std::size_t nbb, std::size_t admit_k,
                   std::size_t k, std::int32_t* out_d, std::int64_t* out_i) {
    const KernelTable& K = kernels();
    // Split by rows, one part per thread only: every part admits its own first admit_k rows.
    const Split sp = plan_codes(m, n, (nba + nbb) * 8, k, get_num_threads());
    const std::size_t parts = sp.split_rows ? sp.parts : 1;
    const std::size_t count = parts * m, hn = nba * 8 + 1;
    std::vector<std::int32_t> hist(count * hn, 0);
    std::vector<CodeSel> admit(count);
    for (std::size_t c = 0; c < count; ++c)
        admit[c] = CodeSel{nullptr, nullptr, hist.data() + c * hn, (int)admit_k, 0, 0, 0, 0x7fffffff, 0};
    HeapSet hs(count, k);
    if (sp.split_rows) {
        parallel_for(parts, [&](std::size_t p) {
            std::size_t r0 = part_begin(n, parts, p), r1 = part_begin(n, parts, p + 1);
            K.hamming_topk2(QA, QB, m, GA, GB, r0, r1, nba, nbb, admit.data() + p * m, hs.h.data() + p * m);
        });
    } else {
        parallel_for(sp.parts, [&](std::size_t p) {
            std::size_t q0 = part_begin(m, sp.parts, p), q1 = part_begin(m, sp.parts, p + 1);
            K.hamming_topk2(QA + q0 * nba, QB + q0 * nbb, q1 - q0, GA, GB, 0, n, nba, nbb, admit.data() + q0,
                            hs.h.data() + q0);
        });
    }
    std::vector<float> tmp(m * k);
    merge_parts(hs, parts, m, k, tmp.data(), out_i, kNaN);
    for (std::size_t j = 0; j < m * k; ++j) out_d[j] = out_i[j] >= 0 ? (std::int32_t)(-tmp[j]) : -1;
}

}  // namespace pfm
