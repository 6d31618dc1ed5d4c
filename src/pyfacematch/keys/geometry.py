"""Face geometry: alignment to a scheme's mean shape and per-region features.

The batch work runs in the C++ core (threaded, GIL released); this module
checks and converts inputs once and documents the feature layout.

Alignment
    Each face is mapped onto the scheme's mean shape by the weighted
    similarity (scale s > 0, proper rotation R, translation t) that minimises
    ``sum_p w_p |s R x_p + t - mean_p|^2`` over the *visible* points (2-D:
    Umeyama's closed form; 3-D: Horn's quaternion method). The aligned frame
    is in mean-shape units, so the scale that normalises every feature comes
    from the visible points only and survives any occluder.

Features (:class:`FeatureLayout`), region by region (block b = region b)
    * the aligned coordinates of the region's points (``D`` per point);
    * the aligned distances of the region's ``distance_pairs`` (the scheme's
      documented set: each point to its 2 nearest and its farthest neighbour
      in the region, unless the scheme file lists others).

    A feature that needs a hidden point takes a fill value (the model's
    training mean, so it standardises to 0). Block b is *valid* when at
    least ``ceil(min_block_fraction × points of b)`` of its points are visible.

Status codes (per face, :data:`STATUS`): 0 ok, 1 wrong point count,
2 NaN/Inf in a visible point, 3 all points hidden, 4 too few visible points,
5 collapsed (points coincide or are collinear), 6 no valid block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pyfacematch import _core
from pyfacematch.errors import DimensionError, DTypeError, EmptyInputError, LandmarkError
from pyfacematch.keys._reference import align_reference, features_reference
from pyfacematch.keys.schemes import Scheme, get_scheme

__all__ = [
    "STATUS",
    "FeatureLayout",
    "align",
    "features",
    "check_landmarks",
    "min_visible_points",
    "align_reference",
    "features_reference",
]

#: reasons by status code
STATUS: dict[int, str] = {
    0: "ok",
    1: "wrong number of points for the scheme",
    2: "NaN or Inf in a visible point",
    3: "every point is hidden",
    4: "too few visible points to align",
    5: "collapsed face (points coincide or lie on one line)",
    6: "no region has enough visible points",
}


def check_landmarks(
    landmarks, visibility, n_points: int, dims: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert once: landmarks to float32 C-contiguous (n, P, D), visibility to uint8 (n, P).

    A single face (P, D) becomes a batch of one.

    Raises
    ------
    DimensionError
        Wrong number of points, coordinates or array rank.
    EmptyInputError
        An empty batch.
    DTypeError
        Non-numeric landmarks.
    """
    x = np.asarray(landmarks)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DTypeError(f"landmarks must be numeric, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise DimensionError(
            f"landmarks must be (faces, points, coordinates) or (points, coordinates), got {x.ndim}-D"
        )
    if x.shape[0] == 0:
        raise EmptyInputError("landmarks hold no face; pass at least one")
    if x.shape[1] != n_points:
        raise LandmarkError(
            f"expected {n_points} points per face for this scheme, got {x.shape[1]}: "
            "are these landmarks from another scheme?"
        )
    if x.shape[2] != dims:
        raise DimensionError(f"expected {dims} coordinates per point, got {x.shape[2]}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    v = None
    if visibility is not None:
        v = np.asarray(visibility)
        if v.ndim == 1 and x.shape[0] == 1:
            v = v[None]
        if v.shape != x.shape[:2]:
            raise DimensionError(
                f"visibility must be (faces, points) = {x.shape[:2]}, got {v.shape}"
            )
        if v.dtype == np.bool_ and v.flags.c_contiguous:
            v = v.view(np.uint8)  # bool is one byte, 0 or 1: no copy
        else:
            v = np.ascontiguousarray(v != 0, dtype=np.uint8)
    return x, v


def min_visible_points(n_points: int, min_visible: int | None) -> int:
    """Fewest visible points a face needs to be aligned: ``min_visible``, or 20 % of the points.

    Parameters
    ----------
    n_points : int
        Points of the scheme.
    min_visible : int or None
        Requested minimum (at least 2 is used); None: ``max(3, ceil(0.2 * n_points))``.
    """
    return max(3, math.ceil(0.2 * n_points)) if min_visible is None else max(2, int(min_visible))


def align(
    landmarks,
    scheme: str | Scheme,
    visibility=None,
    *,
    weights=None,
    min_visible: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Align faces to the scheme's mean shape using only their visible points.

    Parameters
    ----------
    landmarks : array (n, P, D) or (P, D)
        D = 2 uses the first two coordinates of the mean shape.
    scheme : str or Scheme
    visibility : bool array (n, P), optional
        Hidden points may hold anything (NaN included).
    weights : float array (P,), optional
        Per-point weights (default 1).
    min_visible : int, optional
        Minimum visible points (default ``max(3, ceil(0.2 P))``).

    Returns
    -------
    aligned : float32 (n, P, D), mean-shape units (NaN rows for failed faces)
    transform : float32 (n, 1 + D² + D): [s, R row-major, t] mapping x to s R x + t
    residual : float32 (n,), weighted RMS distance to the mean on visible points
    status : int32 (n,), see :data:`STATUS`
    """
    s = get_scheme(scheme)
    x0 = np.asarray(landmarks)
    dims = x0.shape[-1] if x0.ndim in (2, 3) else s.dims
    if dims not in (2, 3) or dims > max(s.dims, 2):
        raise DimensionError(f"scheme {s.name!r} takes 2 or {s.dims} coordinates, got {dims}")
    x, v = check_landmarks(landmarks, visibility, s.n_points, dims)
    mean = np.ascontiguousarray(s.mean_shape[:, :dims], dtype=np.float32)
    w = None if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
    return _core.geometry_align(x, v, mean, w, min_visible_points(s.n_points, min_visible))


@dataclass(frozen=True)
class FeatureLayout:
    """Per-region feature layout of a scheme at ``dims`` coordinates.

    Attributes
    ----------
    kind, p, q : int32 (F,)
        Feature f is coordinate ``kind[f]`` of point ``p[f]`` (kind >= 0) or the
        distance between ``p[f]`` and ``q[f]`` (kind = -1).
    offsets : int64 (B+1,)
        Features of block b are ``offsets[b]:offsets[b+1]``.
    point_block : int32 (P,)
    block_min_visible : int32 (B,)
    reference : float32 (F,)
        The features of the mean shape itself.
    """

    scheme: str
    dims: int
    kind: np.ndarray
    p: np.ndarray
    q: np.ndarray
    offsets: np.ndarray
    point_block: np.ndarray
    block_min_visible: np.ndarray
    reference: np.ndarray

    @property
    def n_features(self) -> int:
        return len(self.kind)

    @property
    def n_blocks(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def build(
        cls, scheme: str | Scheme, dims: int, min_block_fraction: float = 0.75
    ) -> FeatureLayout:
        s = get_scheme(scheme)
        kind, p, q, off = [], [], [], [0]
        for r in range(s.n_regions):
            for pt in s.region_points(r):
                for a in range(dims):
                    kind.append(a)
                    p.append(int(pt))
                    q.append(int(pt))
            for i, j in s.distance_pairs[r]:
                kind.append(-1)
                p.append(int(i))
                q.append(int(j))
            off.append(len(kind))
        counts = np.bincount(s.point_region, minlength=s.n_regions)
        bmv = np.maximum(1, np.ceil(min_block_fraction * counts - 1e-9)).astype(np.int32)
        kind_a = np.array(kind, np.int32)
        p_a, q_a = np.array(p, np.int32), np.array(q, np.int32)
        mean = s.mean_shape[:, :dims]
        ref = np.where(
            kind_a >= 0,
            mean[p_a, np.maximum(kind_a, 0)],
            np.linalg.norm(mean[p_a] - mean[q_a], axis=1),
        ).astype(np.float32)
        return cls(
            s.name,
            dims,
            kind_a,
            p_a,
            q_a,
            np.array(off, np.int64),
            s.point_region.astype(np.int32),
            bmv,
            ref,
        )


def features(
    landmarks,
    scheme: str | Scheme,
    visibility=None,
    *,
    layout: FeatureLayout | None = None,
    fill: np.ndarray | None = None,
    weights=None,
    min_visible: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-region features of faces (see the module docstring for the layout).

    Returns
    -------
    features : float32 (n, F)
    masks : uint64 (n,), bit b set when block b is valid
    status : int32 (n,)
    """
    s = get_scheme(scheme)
    x0 = np.asarray(landmarks)
    dims = layout.dims if layout is not None else (x0.shape[-1] if x0.ndim in (2, 3) else s.dims)
    if dims not in (2, 3) or dims > max(s.dims, 2):
        raise DimensionError(f"scheme {s.name!r} takes 2 or {s.dims} coordinates, got {dims}")
    layout = layout or FeatureLayout.build(s, dims)
    x, v = check_landmarks(landmarks, visibility, s.n_points, dims)
    mean = np.ascontiguousarray(s.mean_shape[:, :dims], dtype=np.float32)
    fill = layout.reference if fill is None else np.ascontiguousarray(fill, np.float32)
    w = None if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
    return _core.geometry_features(
        x,
        v,
        mean,
        w,
        min_visible_points(s.n_points, min_visible),
        layout.kind,
        layout.p,
        layout.q,
        fill,
        layout.offsets,
        layout.point_block,
        layout.block_min_visible,
    )
