"""The numpy reference of the landmark-key pipeline, written once (private to the package).

``KeyModel.encode`` runs alignment, region features and the per-block projection in the C++
core. The same pipeline in vectorised numpy lives here, and only here: it is the oracle of the
tests (``tests/test_keys.py``, ``tests/test_geometry.py``, float64 throughout) and the numpy
baseline of the keys benchmark (:mod:`pyfacematch.bench.keys`, projection in float32 as the
engine does). The similarity fit itself is :func:`pyfacematch._similarity.similarity_fit`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pyfacematch._similarity import similarity_fit

if TYPE_CHECKING:
    from pyfacematch.keys.geometry import FeatureLayout

__all__ = ["align_reference", "features_reference", "reference_keys"]


def align_reference(
    x: np.ndarray, vis: np.ndarray | None, mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised numpy similarity alignment onto a mean shape (Umeyama via SVD), float64.

    Parameters
    ----------
    x : ndarray, (n, P, D)
        Landmarks.
    vis : ndarray of bool, (n, P), or None
        Visible points (only these are fitted); None: all.
    mean : ndarray, (P, D)
        Target shape.

    Returns
    -------
    aligned : ndarray, float64 (n, P, D)
        Every point (hidden ones too) mapped by the fitted transform.
    residual : ndarray, float64 (n,)
        Root mean square distance of the visible aligned points to ``mean``.

    Notes
    -----
    No failure handling: callers pass valid faces.
    """
    x = np.asarray(x, np.float64)
    mean = np.asarray(mean, np.float64)
    n, p, _ = x.shape
    w = np.ones((n, p)) if vis is None else np.asarray(vis, np.float64)
    s, r, t = similarity_fit(x, mean, w)
    al = s[:, None, None] * np.einsum("nab,npb->npa", r, x) + t[:, None]
    res = np.sqrt((w * ((al - mean) ** 2).sum(-1)).sum(1) / w.sum(1))
    return al, res


def features_reference(
    aligned: np.ndarray, vis: np.ndarray | None, layout: FeatureLayout, fill: np.ndarray
) -> np.ndarray:
    """Vectorised numpy region features of aligned faces, float64.

    Parameters
    ----------
    aligned : ndarray, (n, P, D)
        Aligned landmarks.
    vis : ndarray of bool, (n, P), or None
        Visible points; a feature that uses a hidden point takes its ``fill`` value.
    layout : FeatureLayout
        Which points and coordinates (or distances) each feature uses.
    fill : ndarray, (F,)
        Values for features of hidden points (the model's mean).

    Returns
    -------
    ndarray, float64 (n, F)
    """
    al = np.asarray(aligned, np.float64)
    coord = al[:, layout.p, np.maximum(layout.kind, 0)]
    dist = np.linalg.norm(al[:, layout.p] - al[:, layout.q], axis=-1)
    f = np.where(layout.kind >= 0, coord, dist)
    if vis is not None:
        v = np.asarray(vis, bool)
        ok = v[:, layout.p] & v[:, layout.q]
        f = np.where(ok, f, np.asarray(fill, np.float64))
    return f


def reference_keys(
    model: Any,
    x: np.ndarray,
    vis: np.ndarray | None,
    *,
    projection_dtype: Any = np.float64,
) -> np.ndarray:
    """``KeyModel.encode``'s keys computed in numpy: align, features, per-block projection.

    A block's key part is zero when fewer of its region's points are visible than the
    layout's ``block_min_visible``; keys are then scaled to unit norm over the valid blocks.

    Parameters
    ----------
    model : KeyModel
        A fitted or default key model.
    x : ndarray, (n, P, D)
        Landmarks of faces that encode without error (status 0).
    vis : ndarray of bool, (n, P), or None
        Visibility; None: every point visible.
    projection_dtype : numpy dtype
        Dtype of the feature projection and of the keys: float64 for a test oracle, float32
        for a benchmark baseline that does the work the engine does (alignment and features
        stay float64).

    Returns
    -------
    ndarray, (n, model.dim) of ``projection_dtype``
        Unit-norm keys.
    """
    dt = np.dtype(projection_dtype)
    s = model.scheme
    lay = model.layout
    al, _ = align_reference(x, vis, s.mean_shape[:, : model.dims])
    f = (features_reference(al, vis, lay, model.mu) - model.mu).astype(dt, copy=False)
    keys = np.zeros((len(x), model.dim), dt)
    for b in range(lay.n_blocks):
        kb = f[:, lay.offsets[b] : lay.offsets[b + 1]] @ np.asarray(model.w_blocks[b], dt)
        if vis is not None:
            ok = vis[:, s.region_points(b)].sum(1) >= lay.block_min_visible[b]
            kb *= ok[:, None]
        keys[:, model.blocks[b] : model.blocks[b + 1]] = kb
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    return keys
