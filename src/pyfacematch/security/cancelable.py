"""Cancelable (revocable) templates: a keyed, block-diagonal random orthonormal transform.

ISO/IEC 24745 asks biometric references to be renewable and unlinkable. A
gallery created with ``cancelable=True`` stores and searches ``x @ Q`` instead
of ``x``, where ``Q`` is a random orthogonal matrix drawn from the Haar
distribution (QR of a Gaussian matrix with the signs of ``R``'s diagonal
folded in; Mezzadri 2007) seeded from a 256-bit per-gallery secret. ``Q`` is
block-diagonal over the gallery's region blocks, so a block's part of a
template stays in that block and masked cosine is preserved as well as plain
cosine. Random sign flips and permutations are orthogonal matrices, so a
Haar-random ``Q`` already contains them.

Guarantees and limits:

- **Scores are preserved** between templates under the same key (to float32
  rounding, ~1e-6): ``(xQ)·(yQ) = x·y``. Thresholds carry over.
- **Unlinkable across keys**: for two secrets, ``(xQ₁)·(yQ₂) = x (Q₁Q₂ᵀ) yᵀ`` with
  ``Q₁Q₂ᵀ`` Haar-random, so scores of the same face under two keys are
  distributed like scores of two different faces under two keys (about
  N(0, 1/d)), far below any match threshold.
- **Renewable**: revocation draws a new secret and re-transforms the stored
  templates (``x Q_old → x Q_new``) without the original photos.
- **Not irreversible for whoever holds the secret**: ``Q`` is invertible, so the
  secret plus stored templates give back the original templates. The secret
  is therefore kept wrapped (under the data key of an encrypted gallery, else
  under a key derived from the gallery's master key), never in clear.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["CancelableTransform", "haar_orthogonal"]


def haar_orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed random orthogonal matrix (n, n), float64.

    The Householder QR of an n×n Gaussian matrix with the signs of ``R``'s
    diagonal folded into ``Q`` (Mezzadri 2007, "How to generate random
    matrices from the classical compact groups"; Stewart 1980). By rotation
    invariance each step can draw a fresh Gaussian vector instead of reducing
    a stored matrix, so no LAPACK call is needed: the result depends only on
    the seed (not on the BLAS build) up to rounding, and it costs O(n³) simple
    numpy steps that do not fight other threads for the cores.
    """
    q = np.eye(n)
    signs = np.empty(n)
    for k in range(n - 1):
        v = rng.standard_normal(n - k)
        s = 1.0 if v[0] >= 0 else -1.0
        signs[k] = -s  # the sign of R[k, k] for the reflection v -> -s |v| e1
        u = v.copy()
        u[0] += s * np.linalg.norm(v)
        u /= np.linalg.norm(u)
        blk = q[:, k:]
        blk -= 2.0 * np.outer(blk @ u, u)  # Q <- Q H_k
    signs[n - 1] = 1.0 if rng.standard_normal() >= 0 else -1.0
    return q * signs


class CancelableTransform:
    """The keyed transform of one gallery.

    Parameters
    ----------
    secret : bytes
        At least 32 random bytes.
    dim : int
    blocks : int array (B+1,) or None
        Region-block offsets; the transform is block-diagonal over them.
    """

    def __init__(self, secret: bytes, dim: int, blocks: np.ndarray | None) -> None:
        if len(secret) < 32:
            raise ValueError("the cancelable-template secret must hold at least 32 bytes")
        seed = int.from_bytes(
            hashlib.sha256(b"pyfacematch-cancelable-v1\0" + secret).digest(), "big"
        )
        rng = np.random.Generator(np.random.PCG64(seed))
        offs = [0, int(dim)] if blocks is None else [int(b) for b in blocks]
        q = np.zeros((dim, dim))
        for a, b in zip(offs[:-1], offs[1:]):
            q[a:b, a:b] = haar_orthogonal(b - a, rng)
        self.matrix64 = q
        self.matrix = np.ascontiguousarray(q, np.float32)
        self.fingerprint = hashlib.sha256(b"fp\0" + secret).hexdigest()[:16]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """float32 (n, d) unit rows → transformed float32 (n, d), renormalised."""
        y = np.ascontiguousarray(x, np.float32) @ self.matrix
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        return np.ascontiguousarray(y, np.float32)

    def change_to(self, new: CancelableTransform) -> np.ndarray:
        """float64 (d, d) ``R`` with ``(x Q_self) R = x Q_new`` (used to revoke in place)."""
        return self.matrix64.T @ new.matrix64
