"""The numpy similarity fit (weighted Umeyama), written once for every Python-side alignment.

Private to the package: :func:`pyfacematch.keys.geometry.align_reference` (the float64 oracle of
the C++ landmark alignment) and :func:`pyfacematch.embed.align.similarity_transform` (the
five-point crop alignment of photos) both call :func:`similarity_fit`. It depends on numpy only,
so it sits in the lowest layer of the import contract, below ``keys`` and ``embed``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["similarity_fit"]


def similarity_fit(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity transforms mapping ``src`` onto ``dst``, batched.

    Minimises ``sum_p w_p |s R src_p + t - dst_p|^2`` over scale ``s``, rotation ``R``
    (``det R = +1``, no reflection) and translation ``t`` for each of ``n`` point sets
    (Umeyama 1991, via one SVD of the weighted cross-covariance).

    Parameters
    ----------
    src : ndarray, (n, P, D)
        Source points (any real dtype; computed in float64). Points with zero weight may hold
        anything finite.
    dst : ndarray, (n, P, D) or (P, D)
        Target points; a single (P, D) set is shared by all ``n`` sources.
    weights : ndarray, (n, P), or None
        Non-negative point weights (e.g. visibility); None = all ones. Each row needs a
        positive sum and a source spread above zero; no check is made here (callers validate).

    Returns
    -------
    scale : ndarray, float64 (n,)
    rotation : ndarray, float64 (n, D, D)
    translation : ndarray, float64 (n, D)
        ``dst ≈ scale * src @ rotation.T + translation``.
    """
    x = np.asarray(src, np.float64)
    n, p, d = x.shape
    y = np.asarray(dst, np.float64)
    w = np.ones((n, p)) if weights is None else np.asarray(weights, np.float64)
    xs = np.where(w[..., None] > 0, x, 0.0)
    sw = w.sum(1)[:, None]
    mx = (w[..., None] * xs).sum(1) / sw
    if y.ndim == 2:
        my = (w @ y) / sw
        yc = y[None] - my[:, None]
    else:
        my = (w[..., None] * y).sum(1) / sw
        yc = y - my[:, None]
    xc = xs - mx[:, None]
    m = np.einsum("np,npa,npb->nba", w, xc, yc)  # sum w y' x'^T  (target × source)
    u, sv, vt = np.linalg.svd(m)
    sign = np.ones((n, d))
    sign[:, -1] = np.sign(np.linalg.det(u @ vt))
    r = np.einsum("nab,nb,nbc->nac", u, sign, vt)
    sxx = (w * (xc**2).sum(-1)).sum(1)
    s = (sv * sign).sum(1) / sxx
    t = my - s[:, None] * np.einsum("nab,nb->na", r, mx)
    return s, r, t
