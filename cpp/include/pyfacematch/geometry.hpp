#pragma once
/** @file geometry.hpp
 *  @brief Batched face geometry: weighted similarity alignment (Umeyama / Horn, 2-D and 3-D) of
 *         each face to a scheme's mean shape on its visible points, per-region features, and the
 *         fused landmark-key encoder. Every function is batched, threaded on the core's pool, never
 *         throws for a bad face (a per-face status code says why it failed), and writes into
 *         outputs the caller allocated.
 */
#include <cstddef>
#include <cstdint>

namespace pfm {

/** @brief Per-face status of the geometry and key functions (0 = usable). */
enum FaceStatus : std::int32_t {
    face_ok = 0,
    face_wrong_count = 1,     ///< set by callers that accept ragged input; never by the core
    face_non_finite = 2,      ///< a visible point holds NaN or ±Inf
    face_all_hidden = 3,      ///< no point is visible
    face_too_few_visible = 4, ///< fewer visible points than min_visible
    face_collapsed = 5,       ///< visible points coincide or lie on one line; no similarity exists
    face_no_valid_block = 6,  ///< aligned, but no region has enough visible points for a key
};

/** @brief Weighted similarity alignment of n faces to a mean shape.
 *
 *  For face i, finds s > 0, rotation R (proper) and t minimising
 *  sum_p w_p v_ip |s R x_ip + t - mean_p|^2 over the visible points (closed form: 2-D Umeyama;
 *  3-D Horn's quaternion method with a Jacobi eigen-solver, in double precision).
 *  @param X        float32 (n, P, D) landmarks, D = 2 or 3. Hidden points may hold anything.
 *  @param vis      uint8 (n, P) visibility (nonzero = visible) or nullptr (all visible).
 *  @param mean     float32 (P, D) target shape.
 *  @param weights  float32 (P,) point weights >= 0, or nullptr (all 1).
 *  @param min_visible  minimum number of visible points (>= 2 is enforced).
 *  @param aligned  float32 (n, P, D) out: s R x + t for every point (NaN for failed faces), or nullptr.
 *  @param transform float32 (n, 1 + D*D + D) out: [s, R row-major, t] (NaN when failed), or nullptr.
 *  @param residual float32 (n,) out: weighted RMS distance to the mean over visible points
 *                  (mean-shape units), NaN when failed; or nullptr.
 *  @param status   int32 (n,) out: FaceStatus.
 */
void align_batch(const float* X, const std::uint8_t* vis, std::size_t n, std::size_t P, std::size_t D,
                 const float* mean, const float* weights, std::size_t min_visible, float* aligned,
                 float* transform, float* residual, std::int32_t* status);

/** @brief Layout of the per-region features (all arrays borrowed, valid during the call).
 *
 *  Feature f is a coordinate of point p[f] (kind[f] = axis 0..D-1) or the distance between points
 *  p[f] and q[f] (kind[f] = -1) in the aligned frame (so in mean-shape units: the scale comes from
 *  the alignment on the visible points). Features are grouped by block: block b owns features
 *  feat_offsets[b] .. feat_offsets[b+1]-1. A feature whose points are not all visible takes
 *  fill[f] (the training mean, so it standardises to 0). Block b is valid when at least
 *  block_min_visible[b] points with point_block == b are visible.
 */
struct FeatureSpec {
    std::size_t n_features = 0;
    const std::int32_t* kind = nullptr;
    const std::int32_t* p = nullptr;
    const std::int32_t* q = nullptr;
    const float* fill = nullptr;
    std::size_t n_blocks = 0;                ///< B <= 64
    const std::int64_t* feat_offsets = nullptr;  ///< (B+1,)
    const std::int32_t* point_block = nullptr;   ///< (P,) block of each point, -1 = none
    const std::int32_t* block_min_visible = nullptr;  ///< (B,)
};

/** @brief Features of n faces: alignment as in align_batch, then the FeatureSpec features.
 *  @param features float32 (n, F) out (fill values for failed faces).
 *  @param masks    uint64 (n,) out: bit b set when block b is valid (0 for failed faces).
 *  @param status   int32 (n,) out.
 */
void features_batch(const float* X, const std::uint8_t* vis, std::size_t n, std::size_t P, std::size_t D,
                    const float* mean, const float* weights, std::size_t min_visible,
                    const FeatureSpec& spec, float* features, std::uint64_t* masks,
                    std::int32_t* status);

/** @brief Linear key projection per block: key block b = (f_b - mu_b) W_b, with W_b stored
 *  transposed, row-major (d_b, F_b), at W + w_offsets[b] (each key value is one SIMD dot product);
 *  output columns key_offsets[b] .. key_offsets[b+1]-1. */
struct KeyProjection {
    const float* mu = nullptr;               ///< (F,)
    const float* W = nullptr;                ///< concatenated blocks
    const std::int64_t* w_offsets = nullptr;     ///< (B,) start of each block's matrix in W
    const std::int64_t* key_offsets = nullptr;   ///< (B+1,)
};

/** @brief Fused encoder: alignment, features, per-block projection; invalid blocks are zero and
 *  the key is scaled to unit norm over its valid blocks.
 *  @param keys   float32 (n, d) out, d = key_offsets[B] (zeros for failed faces).
 *  @param masks  uint64 (n,) out.
 *  @param status int32 (n,) out.
 *  @param residual float32 (n,) out or nullptr.
 */
void encode_batch(const float* X, const std::uint8_t* vis, std::size_t n, std::size_t P, std::size_t D,
                  const float* mean, const float* weights, std::size_t min_visible,
                  const FeatureSpec& spec, const KeyProjection& proj, float* keys,
                  std::uint64_t* masks, std::int32_t* status, float* residual);

}  // namespace pfm
