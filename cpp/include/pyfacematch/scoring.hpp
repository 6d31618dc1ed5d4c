#pragma once
/** @file scoring.hpp
 *  @brief Cosine scoring of float32 templates: 1:1, M×N, fused top-k, masked cosine, re-ranking and
 *         1-bit codes. Inputs are row-major, C-contiguous, validated here; outputs are caller-allocated.
 */
#include <cstddef>
#include <cstdint>

namespace pfm {

/** @brief Index of the first row of X (n×d) holding NaN or ±Inf, or -1 when every value is finite. */
std::int64_t first_nonfinite_row(const float* X, std::size_t n, std::size_t d);

/** @brief Σ x² over n floats, split over the pool's threads: one streaming read of x, used by the
 *  benchmarks as the machine's read-bandwidth ceiling for the scoring kernels. */
/** Read-bandwidth probe: reads the n floats of x once on the thread pool and returns Σ x (variant 1, 2)
 *  or Σ x² (variant 0). variant 0: one stream per part (dot); 1: four equal streams per part read
 *  together; 2: rows of d floats (n a multiple of d) four rows at a time, the one-probe scan's order. */
double stream_read(const float* x, std::size_t n, int variant = 0, std::size_t d = 0);

/** @brief Cosine of two d-vectors (true cosine: divides by both norms). NaN if a norm is 0 or an
 *  input is not finite; the caller turns that into an error. */
float cosine(const float* a, const float* b, std::size_t d);

/** @brief out (m×n) = Q (m×d) · Gᵀ (n×d). Returns false if a non-finite score was produced. */
bool scores(const float* Q, std::size_t m, const float* G, std::size_t n, std::size_t d, float* out);

/** @brief Top-k rows of G for each probe (best first, ties → lower index) without the m×n matrix.
 *  out_s/out_i are m×k. Requires 1 <= k <= n. Returns false if a non-finite score was seen. */
bool topk(const float* Q, std::size_t m, const float* G, std::size_t n, std::size_t d, std::size_t k,
          float* out_s, std::int64_t* out_i);

/** @brief Turns the bf16 first pass of large-batch topk on or off (on by default where the CPU has
 *  AVX512_BF16; PYFACEMATCH_BF16=0 turns it off). Results are the same either way. */
void set_bf16_prefilter(bool on);
/** @brief True when topk of a large batch will use the bf16 first pass. */
bool bf16_prefilter_active();

/** @brief Region-block layout of templates: offsets[0] = 0 < … < offsets[B] = d, B <= 64. */
struct Blocks {
    const std::int64_t* offsets;
    std::size_t count;  ///< B
};

/** @brief Masked cosine of two templates over blocks valid in both; NaN when the shared blocks cover
 *  less than min_fraction of d or a norm over them is 0. */
float masked_cosine(const float* a, const float* b, std::size_t d, std::uint64_t ma, std::uint64_t mb,
                    const Blocks& blocks, float min_fraction);

/** @brief m×n masked scores (NaN = not comparable). */
void masked_scores(const float* Q, const std::uint64_t* mq, std::size_t m, const float* G,
                   const std::uint64_t* mg, std::size_t n, std::size_t d, const Blocks& blocks,
                   float min_fraction, float* out);

/** @brief Masked top-k; rows with fewer than k comparable candidates are padded with (NaN, -1). */
void masked_topk(const float* Q, const std::uint64_t* mq, std::size_t m, const float* G,
                 const std::uint64_t* mg, std::size_t n, std::size_t d, const Blocks& blocks,
                 float min_fraction, std::size_t k, float* out_s, std::int64_t* out_i);

/** @brief Exact top-k among candidate rows cand (m×c, -1 = padding, duplicates ignored). When mq/mg
 *  are null, plain cosine; else masked. Rows with fewer than k candidates are padded with (NaN, -1).
 *  Candidates outside [0, n) are refused by the caller. */
void rerank(const float* Q, const std::uint64_t* mq, std::size_t m, const float* G,
            const std::uint64_t* mg, std::size_t n, std::size_t d, const std::int64_t* cand,
            std::size_t c, const Blocks* blocks, float min_fraction, std::size_t k, float* out_s,
            std::int64_t* out_i);

/** @brief 1-bit codes: bit j (LSB first in byte j/8) = x[j] - center[j] > 0; center may be null.
 *  out is n×ceil(d/8) bytes. */
void pack_signs(const float* X, std::size_t n, std::size_t d, const float* center, std::uint8_t* out);

/** @brief Hamming top-k (smallest distance first, ties → lower index); out_d/out_i are m×k, k <= n. */
void hamming_topk(const std::uint8_t* Q, std::size_t m, const std::uint8_t* G, std::size_t n,
                  std::size_t nbytes, std::size_t k, std::int32_t* out_d, std::int64_t* out_i);

/** @brief Two-plane Hamming top-k: codes split in a first plane A (nba bytes per row; the probe's
 *  QA m×nba) and the rest B (nbb; QB m×nbb). A row enters the full-distance comparison only when
 *  its A-distance is below the running admit_k-th smallest A-distance seen by its thread's part
 *  (so at least the admit_k best rows on A are compared); the k best full distances (A + B) are
 *  returned, smallest first, ties → lower index; rows with fewer than k are padded with (-1, -1). */
void hamming_topk2(const std::uint8_t* QA, const std::uint8_t* QB, std::size_t m, const std::uint8_t* GA,
                   const std::uint8_t* GB, std::size_t n, std::size_t nba, std::size_t nbb, std::size_t admit_k,
                   std::size_t k, std::int32_t* out_d, std::int64_t* out_i);

}  // namespace pfm
