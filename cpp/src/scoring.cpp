// High-level scoring: splits work into tasks for the pool, runs the active kernels, merges the
// per-task top-k heaps. No instruction-set flags here: everything wide goes through kernels().
#include "pyfacematch/scoring.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "pyfacematch/simd.hpp"
#include "pyfacematch/threads.hpp"
#include "pyfacematch/types.hpp"

namespace pfm {
namespace common_k {
#include "simd/heap_impl.inc"
}  // namespace common_k

namespace {

constexpr std::size_t kSmallBatch = 6;              // below this, the streaming form wins
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

// Per-probe block norms² (B floats per probe).
std::vector<float> block_norms(const KernelTable& K, const float* Q, std::size_t m, std::size_t d,
                               const BlockInfo& bi) {
    const std::size_t B = bi.count();
    std::vector<float> out(m * B);
    for (std::size_t q = 0; q < m; ++q)
        for (std::size_t b = 0; b < B; ++b) {
            float ab, bb;
            const float* x = Q + q * d + bi.off[b];
            K.dot2(x, x, bi.off[b + 1] - bi.off[b], &ab, &bb);
            out[q * B + b] = bb;
        }
    return out;
}

// Masked cosine of probe q (with its block norms qn) and row g.
inline float masked_pair(const KernelTable& K, const float* q, const float* qn, std::uint64_t mq,
                         const float* g, std::uint64_t mg, const BlockInfo& bi, std::size_t min_dims) {
    std::uint64_t sh = mq & mg;
    if (bi.count() < 64) sh &= (1ULL << bi.count()) - 1ULL;
    if (sh == 0 || bi.shared_dims(sh) < min_dims) return kNaN;
    double ab = 0, aa = 0, gg = 0;
    while (sh) {
        int b = __builtin_ctzll(sh);
        sh &= sh - 1;
        float x, y;
        std::size_t o = bi.off[b];
        K.dot2(q + o, g + o, bi.off[b + 1] - o, &x, &y);
        ab += x;
        gg += y;
        aa += qn[b];
    }
    double den = std::sqrt(aa * gg);
    if (!(den > 0)) return kNaN;
    return (float)(ab / den);
}

std::size_t min_shared_dims(std::size_t d, float min_fraction) {
    double need = std::ceil((double)min_fraction * (double)d - 1e-9);
    if (need < 1) need = 1;
    return (std::size_t)need;
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

float cosine(const float* a, const float* b, std::size_t d) {
    float ab, aa, bb;
    kernels().dot3(a, b, d, &ab, &aa, &bb);
    float den = std::sqrt(aa) * std::sqrt(bb);
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

bool topk(const float* Q, std::size_t m, const float* G, std::size_t n, std::size_t d, std::size_t k,
          float* out_s, std::int64_t* out_i) {
    const KernelTable& K = kernels();
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

float masked_cosine(const float* a, const float* b, std::size_t d, std::uint64_t ma, std::uint64_t mb,
                    const Blocks& blocks, float min_fraction) {
    const KernelTable& K = kernels();
    BlockInfo bi(blocks);
    std::vector<float> an = block_norms(K, a, 1, d, bi);
    return masked_pair(K, a, an.data(), ma, b, mb, bi, min_shared_dims(d, min_fraction));
}

void masked_scores(const float* Q, const std::uint64_t* mq, std::size_t m, const float* G,
                   const std::uint64_t* mg, std::size_t n, std::size_t d, const Blocks& blocks,
                   float min_fraction, float* out) {
    const KernelTable& K = kernels();
    BlockInfo bi(blocks);
    const std::size_t B = bi.count(), need = min_shared_dims(d, min_fraction);
    std::vector<float> qn = block_norms(K, Q, m, d, bi);
    const Split sp = plan(m, n, d);
    parallel_for(sp.parts, [&](std::size_t p) {
        std::size_t r0 = 0, r1 = n, q0 = 0, q1 = m;
        if (sp.split_rows) r0 = part_begin(n, sp.parts, p), r1 = part_begin(n, sp.parts, p + 1);
        else q0 = part_begin(m, sp.parts, p), q1 = part_begin(m, sp.parts, p + 1);
        for (std::size_t r = r0; r < r1; ++r)
            for (std::size_t q = q0; q < q1; ++q)
                out[q * n + r] = masked_pair(K, Q + q * d, qn.data() + q * B, mq[q], G + r * d, mg[r], bi, need);
    });
}

void masked_topk(const float* Q, const std::uint64_t* mq, std::size_t m, const float* G,
                 const std::uint64_t* mg, std::size_t n, std::size_t d, const Blocks& blocks,
                 float min_fraction, std::size_t k, float* out_s, std::int64_t* out_i) {
    const KernelTable& K = kernels();
    BlockInfo bi(blocks);
    const std::size_t B = bi.count(), need = min_shared_dims(d, min_fraction);
    std::vector<float> qn = block_norms(K, Q, m, d, bi);
    const Split sp = plan(m, n, d, k);
    const std::size_t parts = sp.split_rows ? sp.parts : 1;
    HeapSet hs(parts * m, k);
    if (sp.split_rows) {
        parallel_for(parts, [&](std::size_t p) {
            std::size_t r0 = part_begin(n, parts, p), r1 = part_begin(n, parts, p + 1);
            for (std::size_t r = r0; r < r1; ++r)
                for (std::size_t q = 0; q < m; ++q) {
                    float s = masked_pair(K, Q + q * d, qn.data() + q * B, mq[q], G + r * d, mg[r], bi, need);
                    TopKHeap& h = hs.h[p * m + q];
                    if (s > common_k::heap_thresh(h)) common_k::heap_push(h, s, (std::int64_t)r);
                }
        });
    } else {
        parallel_for(sp.parts, [&](std::size_t p) {
            std::size_t q0 = part_begin(m, sp.parts, p), q1 = part_begin(m, sp.parts, p + 1);
            for (std::size_t q = q0; q < q1; ++q)
                for (std::size_t r = 0; r < n; ++r) {
                    float s = masked_pair(K, Q + q * d, qn.data() + q * B, mq[q], G + r * d, mg[r], bi, need);
                    TopKHeap& h = hs.h[q];
                    if (s > common_k::heap_thresh(h)) common_k::heap_push(h, s, (std::int64_t)r);
                }
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
    const std::size_t B = masked ? bi->count() : 0, need = masked ? min_shared_dims(d, min_fraction) : 0;
    std::vector<float> qn = masked ? block_norms(K, Q, m, d, *bi) : std::vector<float>();
    const double work = (double)m * (double)c * (double)d;
    std::size_t parts = std::min<std::size_t>(get_num_threads(), std::max<std::size_t>(1, (std::size_t)(work / kMinWorkPerTask)));
    parts = std::max<std::size_t>(1, std::min(parts, m));
    parallel_for(parts, [&](std::size_t p) {
        std::size_t q0 = part_begin(m, parts, p), q1 = part_begin(m, parts, p + 1);
        std::vector<std::int64_t> ids(c);
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
            for (std::size_t j = 0; j < nc; ++j) {
                const float* g = G + ids[j] * d;
                float s = masked ? masked_pair(K, x, qn.data() + q * B, mq[q], g, mg[ids[j]], *bi, need)
                                 : K.dot(x, g, d);
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
    const Split sp = plan(m, n, nbytes * 8, k);
    const std::size_t parts = sp.split_rows ? sp.parts : 1;
    HeapSet hs(parts * m, k);
    std::vector<float> tmp(m * k);
    if (sp.split_rows) {
        parallel_for(parts, [&](std::size_t p) {
            std::size_t r0 = part_begin(n, parts, p), r1 = part_begin(n, parts, p + 1);
            K.hamming_topk(Q, m, G, r0, r1, nbytes, hs.h.data() + p * m);
        });
    } else {
        parallel_for(sp.parts, [&](std::size_t p) {
            std::size_t q0 = part_begin(m, sp.parts, p), q1 = part_begin(m, sp.parts, p + 1);
            K.hamming_topk(Q + q0 * nbytes, q1 - q0, G, 0, n, nbytes, hs.h.data() + q0);
        });
    }
    merge_parts(hs, parts, m, k, tmp.data(), out_i, kNaN);
    for (std::size_t j = 0; j < m * k; ++j) out_d[j] = out_i[j] >= 0 ? (std::int32_t)(-tmp[j]) : -1;
}

}  // namespace pfm
