#pragma once
/** @file compact.hpp
 *  @brief Compact template storage (int8 with a per-row symmetric scale, or bf16) and its top-k:
 *         a compact scan whose every approximate score carries a proven error bound, so that the
 *         rows it keeps always contain the float32 top-k, which an exact re-score then returns.
 *
 *  Layout: row r of an int8 matrix is `stride` int8 codes (stride = d rounded up to 64, zero padded)
 *  with scale[r] (x ≈ scale·code), norm[r] ≥ |x_r|, resid[r] ≥ |x_r − scale·code_r| and
 *  gsum[r] = Σ code_r (the VNNI kernel's bias correction). A bf16 matrix is `stride` uint16 per row
 *  (d rounded up to 32) with norm[r] ≥ |x_r|. Norms are rounded up, so bounds built on them hold.
 */
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pfm {

enum class CompactKind : int { int8 = 0, bf16 = 1 };

/** @brief Row stride (elements) of a compact matrix of dimension d. */
std::size_t compact_stride(CompactKind kind, std::size_t d);

/** @brief A read-only view of a compact matrix (the caller owns every array). */
struct CompactView {
    CompactKind kind;
    std::size_t n, d, stride;
    const void* codes;          ///< int8 (n × stride) or uint16 bf16 bits (n × stride)
    const float* scale;         ///< int8 only
    const float* norm;          ///< both kinds
    const float* resid;         ///< int8 only
    const std::int32_t* gsum;   ///< int8 only
};

/** @brief Quantises X (n × d, finite) to int8; returns false if a row's norm overflows float. */
bool compact_quantize_int8(const float* X, std::size_t n, std::size_t d, std::int8_t* codes, float* scale,
                           float* norm, float* resid, std::int32_t* gsum);

/** @brief Converts X (n × d, finite) to bf16 (round to nearest even); false if a value overflows. */
bool compact_convert_bf16(const float* X, std::size_t n, std::size_t d, std::uint16_t* codes, float* norm);

/** @brief Approximate scores of probes Q (m × d) against every row (m × n) and their proven error
 *  bounds (|approx − exact float32 kernel score| ≤ bound, see compact.cpp). */
void compact_scores(const CompactView& g, const float* Q, std::size_t m, float* out, float* bound);

/** @brief Top-k of each probe. With G (n × d float32, e.g. memory-mapped): the compact scan keeps
 *  every row whose upper bound reaches the k-th best lower bound, and those rows are re-scored from
 *  G with the exact kernel (the same scores as pfm::rerank), best first, ties → lower row. Without
 *  G: the k best approximate scores. cand_out (m, may be null) receives the rows re-scored per
 *  probe. Returns false if a non-finite score was seen. */
bool compact_topk(const CompactView& g, const float* Q, std::size_t m, const float* G, std::size_t k,
                  float* out_s, std::int64_t* out_i, std::int64_t* cand_out);

/** @brief The rows compact_topk would re-score for each probe (increasing), for a caller that reads
 *  them from a file itself and re-scores them with pfm::rerank (the same answer). */
void compact_candidates(const CompactView& g, const float* Q, std::size_t m, std::size_t k,
                        std::vector<std::vector<std::int64_t>>& rows);

/** @brief As compact_topk, restricted to candidate rows cand (m × c, -1 = padding, duplicates
 *  ignored, each in [0, n)): the binary backend's re-rank store. Rows with fewer than k candidates
 *  are padded with (NaN, -1). */
bool compact_rerank(const CompactView& g, const float* Q, std::size_t m, const float* G,
                    const std::int64_t* cand, std::size_t c, std::size_t k, float* out_s, std::int64_t* out_i,
                    std::int64_t* cand_out);

}  // namespace pfm
