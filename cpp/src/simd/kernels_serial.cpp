// Serial kernels: the precise oracle. Plain loops with double accumulation; no instruction-set
// flags. Every other level is tested against these.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "table.hpp"

namespace pfm {
namespace serial_k {

#include "heap_impl.inc"
#include "codesel_impl.inc"
#include "hamming_impl.inc"

static float dot(const float* a, const float* b, std::size_t d) {
    double s = 0.0;
    for (std::size_t p = 0; p < d; ++p) s += (double)a[p] * (double)b[p];
    return (float)s;
}

static void dot3(const float* a, const float* b, std::size_t d, float* ab, float* aa, float* bb) {
    double x = 0, y = 0, z = 0;
    for (std::size_t p = 0; p < d; ++p) {
        x += (double)a[p] * b[p];
        y += (double)a[p] * a[p];
        z += (double)b[p] * b[p];
    }
    *ab = (float)x;
    *aa = (float)y;
    *bb = (float)z;
}

static void dot_masked(const float* a, const float* w, const float* b, std::size_t d, float* ab, float* wbb) {
    double x = 0, z = 0;
    for (std::size_t p = 0; p < d; ++p) {
        x += (double)a[p] * b[p];
        z += (double)w[p] * b[p] * b[p];
    }
    *ab = (float)x;
    *wbb = (float)z;
}

static void topk_stream(const float* Q, std::size_t m, const float* G, std::size_t r0, std::size_t r1,
                        std::size_t d, TopKHeap* heaps, int* bad) {
    for (std::size_t r = r0; r < r1; ++r)
        for (std::size_t i = 0; i < m; ++i) {
            float s = dot(Q + i * d, G + r * d, d);
            if (!std::isfinite(s)) *bad = 1;
            if (s > heap_thresh(heaps[i])) heap_push(heaps[i], s, (int64_t)r);
        }
}

static void topk_gemm(const float* Q, std::size_t m, const float* G, std::size_t r0, std::size_t r1,
                      std::size_t d, TopKHeap* heaps, int* bad, float*) {
    topk_stream(Q, m, G, r0, r1, d, heaps, bad);
}

static void scores_stream(const float* Q, std::size_t m, const float* G, std::size_t r0,
                          std::size_t r1, std::size_t d, float* out, std::size_t ldo) {
    for (std::size_t i = 0; i < m; ++i)
        for (std::size_t r = r0; r < r1; ++r) out[i * ldo + (r - r0)] = dot(Q + i * d, G + r * d, d);
}

static void scores_gemm(const float* Q, std::size_t m, const float* G, std::size_t r0, std::size_t r1,
                        std::size_t d, float* out, std::size_t ldo, float*) {
    scores_stream(Q, m, G, r0, r1, d, out, ldo);
}

static std::size_t pack_floats(std::size_t) { return 1; }

}  // namespace serial_k

/** @brief The serial kernel table (always compiled, always available). */
const KernelTable kernel_table_serial = {
    .level = SimdLevel::serial,
    .name = "serial",
    .dot = serial_k::dot,
    .dot3 = serial_k::dot3,
    .topk_stream = serial_k::topk_stream,
    .topk_gemm = serial_k::topk_gemm,
    .scores_stream = serial_k::scores_stream,
    .scores_gemm = serial_k::scores_gemm,
    .pack_floats = serial_k::pack_floats,
    .hamming_topk = serial_k::hamming_topk_words,
    .dot_masked = serial_k::dot_masked,
    .hamming_topk2 = serial_k::hamming_topk2_words,
};

}  // namespace pfm
