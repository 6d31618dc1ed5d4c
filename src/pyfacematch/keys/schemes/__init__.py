"""Landmark schemes: named point layouts, stored as data.

A scheme says how many points a face has, which region each point belongs to,
which points are left/right mirror partners, which inter-point distances are
measured per region, and the canonical mean shape faces are aligned to.

Shipped schemes (JSON files beside this module, see ``_build.py`` for how
each fact was obtained):

``ibug68``
    The 68-point iBUG 300-W layout of dlib; 2-D; 10 regions.
``mediapipe478``
    MediaPipe Face Mesh, 468 mesh points + 10 iris points; 3-D; 19 regions.
``dense200``
    200 points of the MediaPipe mesh covering every region (all named
    contour points, both iris centres, and symmetric farthest-point samples
    of forehead, cheeks and chin); 3-D; 17 regions. ``subset_indices`` maps
    its points to MediaPipe indices (:meth:`Scheme.from_superset`).

File format (JSON object, ``"format": "pyfacematch.scheme"``, ``"version": 1``):

======================  ==================================================================
key                     value
======================  ==================================================================
``name``                lower-case identifier ``[a-z0-9_]+``
``n_points``            P, number of points (≥ 3)
``dims``                2 or 3: coordinates per point of ``mean_shape``
``regions``             list of R ≤ 64 unique region names (one key block each)
``point_region``        list of P ints: the region index of every point
``pairs``               list of [i, j] left/right mirror partners; each point in at most
                        one pair; partners lie in the same region or in regions whose
                        names differ only by ``left``/``right``
``mean_shape``          P × dims numbers: centred, unit RMS radius, image axes (x right,
                        y down); left/right are the subject's
``distance_pairs``      optional {region: [[i, j], …]}: the distances measured in each
                        region (both points in the region); default rule: each point to
                        its 2 nearest and its farthest neighbour in the region
``mean_depth``          optional, 2-D schemes: P depths used to synthesise head pose
``subset_of``,          optional: this layout is a subset of another scheme
``subset_indices``
======================  ==================================================================
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from pyfacematch.errors import SchemeError

__all__ = [
    "Scheme",
    "get_scheme",
    "list_schemes",
    "load_scheme",
    "register_scheme",
    "default_distance_pairs",
    "mirror_name",
]

_HERE = Path(__file__).resolve().parent
_BUILTIN = ("ibug68", "mediapipe478", "dense200")
_FORMAT = "pyfacematch.scheme"
_VERSIONS = (1,)
_NAME_RE = re.compile(r"^[a-z0-9_]+$")

SchemeSource = Union[str, Path, dict]


@dataclass(frozen=True, eq=False)
class Scheme:
    """A validated landmark scheme (immutable; arrays are read-only).

    Attributes
    ----------
    name : str
    n_points : int
        P.
    dims : int
        2 or 3, coordinates per point of ``mean_shape``.
    regions : tuple of str
        R region names; region r is key block r.
    point_region : numpy.ndarray
        int64 (P,), region index of each point.
    pairs : numpy.ndarray
        int64 (K, 2), left/right mirror partners.
    mean_shape : numpy.ndarray
        float64 (P, dims), centred, unit RMS radius, image axes (y down).
    distance_pairs : tuple of numpy.ndarray
        R arrays int64 (k_r, 2): the distances measured in each region.
    mean_depth : numpy.ndarray or None
        float64 (P,), depth for synthetic head pose of 2-D schemes.
    description : str
    subset_of : str or None
    subset_indices : numpy.ndarray or None
        int64 (P,), indices of these points in ``subset_of``.
    """

    name: str
    n_points: int
    dims: int
    regions: tuple[str, ...]
    point_region: np.ndarray
    pairs: np.ndarray
    mean_shape: np.ndarray
    distance_pairs: tuple[np.ndarray, ...]
    mean_depth: np.ndarray | None = None
    description: str = ""
    subset_of: str | None = None
    subset_indices: np.ndarray | None = None
    _raw: dict = field(default_factory=dict, repr=False)

    @property
    def n_regions(self) -> int:
        """Number of regions R (= key blocks)."""
        return len(self.regions)

    def region_points(self, region: str | int) -> np.ndarray:
        """Indices (int64) of the points of ``region`` (name or index)."""
        r = self.regions.index(region) if isinstance(region, str) else int(region)
        return np.flatnonzero(self.point_region == r)

    def mirror_permutation(self) -> np.ndarray:
        """int64 (P,): index of each point's mirror partner (itself when unpaired)."""
        perm = np.arange(self.n_points)
        perm[self.pairs[:, 0]] = self.pairs[:, 1]
        perm[self.pairs[:, 1]] = self.pairs[:, 0]
        return perm

    def mean_shape_3d(self) -> np.ndarray:
        """float64 (P, 3): the mean shape with depth (``mean_depth`` or zeros for 2-D)."""
        if self.dims == 3:
            return self.mean_shape.copy()
        z = self.mean_depth if self.mean_depth is not None else np.zeros(self.n_points)
        return np.column_stack([self.mean_shape, z])

    def from_superset(self, landmarks: np.ndarray) -> np.ndarray:
        """Select this layout's points from landmarks of ``subset_of``.

        Parameters
        ----------
        landmarks : array (n, P_super, D) or (P_super, D)

        Returns
        -------
        numpy.ndarray, same dtype, (n, P, D) or (P, D).
        """
        if self.subset_indices is None:
            raise SchemeError(f"scheme {self.name!r} is not a subset of another scheme")
        x = np.asarray(landmarks)
        if x.ndim < 2 or x.shape[-2] <= int(self.subset_indices.max()):
            raise SchemeError(
                f"expected landmarks of scheme {self.subset_of!r} with points on axis -2, "
                f"got shape {x.shape}"
            )
        return x[..., self.subset_indices, :]

    def to_dict(self) -> dict:
        """The scheme as a JSON-ready dict (the file format)."""
        return dict(self._raw)

    def __repr__(self) -> str:
        return f"Scheme({self.name!r}, n_points={self.n_points}, dims={self.dims}, regions={self.n_regions})"


def default_distance_pairs(
    mean: np.ndarray, idx: np.ndarray | Sequence[int], k: int = 2
) -> list[list[int]]:
    """The default distance set of a region.

    Each point to its ``k`` nearest and to its farthest neighbour within the
    region, measured on the mean shape, deduplicated and sorted (i < j).

    Parameters
    ----------
    mean : float array (P, D)
    idx : int array (m,), the region's points

    Returns
    -------
    list of [i, j] point-index pairs.
    """
    pts_idx = sorted(int(i) for i in idx)
    if len(pts_idx) < 2:
        return []
    pts = np.asarray(mean, np.float64)[pts_idx]
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    out = set()
    for a in range(len(pts_idx)):
        order = np.argsort(dist[a], kind="stable")
        for b in [*order[1 : 1 + k], order[-1]]:
            if int(b) != a:
                i, j = pts_idx[a], pts_idx[int(b)]
                out.add((min(i, j), max(i, j)))
    return [list(p) for p in sorted(out)]


def mirror_name(name: str) -> str:
    """The name of the mirror-image region or point: ``left`` and ``right`` swapped (``"left_eye"`` → ``"right_eye"``)."""
    return re.sub(r"left|right", lambda m: "right" if m.group(0) == "left" else "left", name)


def _int_list(value: Any, what: str, name: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        raise SchemeError(f"scheme {name!r}: {what} must be a list of integers")
    return [int(v) for v in value]


def _validate(d: dict) -> Scheme:
    if not isinstance(d, dict):
        raise SchemeError(f"a scheme must be a JSON object (dict), got {type(d).__name__}")
    name = d.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SchemeError(f"scheme 'name' must be a lower-case identifier [a-z0-9_]+, got {name!r}")
    if d.get("format", _FORMAT) != _FORMAT:
        raise SchemeError(f"scheme {name!r}: 'format' must be {_FORMAT!r}, got {d.get('format')!r}")
    if d.get("version", 1) not in _VERSIONS:
        raise SchemeError(
            f"scheme {name!r}: unknown format version {d.get('version')!r} "
            f"(this pyfacematch reads {list(_VERSIONS)}); upgrade pyfacematch"
        )
    for key in ("n_points", "dims", "regions", "point_region", "pairs", "mean_shape"):
        if key not in d:
            raise SchemeError(f"scheme {name!r}: missing required key {key!r}")
    n = d["n_points"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 3:
        raise SchemeError(f"scheme {name!r}: 'n_points' must be an integer >= 3, got {n!r}")
    dims = d["dims"]
    if dims not in (2, 3) or isinstance(dims, bool):
        raise SchemeError(f"scheme {name!r}: 'dims' must be 2 or 3, got {dims!r}")
    regions = d["regions"]
    if (
        not isinstance(regions, (list, tuple))
        or not regions
        or not all(isinstance(r, str) and r for r in regions)
    ):
        raise SchemeError(f"scheme {name!r}: 'regions' must be a non-empty list of names")
    if len(set(regions)) != len(regions):
        raise SchemeError(f"scheme {name!r}: region names must be unique")
    if len(regions) > 64:
        raise SchemeError(
            f"scheme {name!r}: at most 64 regions (one mask bit each), got {len(regions)}"
        )
    pr = _int_list(d["point_region"], "'point_region'", name)
    if len(pr) != n:
        raise SchemeError(
            f"scheme {name!r}: 'point_region' has {len(pr)} entries, expected n_points={n}"
        )
    bad = [i for i, r in enumerate(pr) if not 0 <= r < len(regions)]
    if bad:
        raise SchemeError(
            f"scheme {name!r}: point {bad[0]} has region index {pr[bad[0]]}, "
            f"expected 0..{len(regions) - 1}"
        )
    counts = np.bincount(pr, minlength=len(regions))
    empty = [regions[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise SchemeError(f"scheme {name!r}: region(s) {empty} have no points; remove them")
    try:
        mean = np.asarray(d["mean_shape"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SchemeError(
            f"scheme {name!r}: 'mean_shape' must be a P x dims list of numbers"
        ) from exc
    if mean.shape != (n, dims):
        raise SchemeError(
            f"scheme {name!r}: 'mean_shape' has shape {mean.shape}, expected ({n}, {dims})"
        )
    if not np.isfinite(mean).all():
        raise SchemeError(f"scheme {name!r}: 'mean_shape' holds NaN or Inf")
    centred = mean - mean.mean(0)
    sv = np.linalg.svd(centred, compute_uv=False)
    if sv[0] <= 1e-9 * max(1.0, float(np.abs(mean).max())) or sv[1] <= 1e-6 * sv[0]:
        raise SchemeError(
            f"scheme {name!r}: 'mean_shape' is collapsed (all points on one point or one line)"
        )
    pairs_raw = d["pairs"]
    if not isinstance(pairs_raw, (list, tuple)):
        raise SchemeError(f"scheme {name!r}: 'pairs' must be a list of [i, j]")
    seen: dict[int, int] = {}
    pairs = []
    for k, p in enumerate(pairs_raw):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise SchemeError(f"scheme {name!r}: pair {k} must be [i, j], got {p!r}")
        i, j = _int_list(p, f"pair {k}", name)
        if not (0 <= i < n and 0 <= j < n):
            raise SchemeError(f"scheme {name!r}: pair {k} = [{i}, {j}] is out of range 0..{n - 1}")
        if i == j:
            raise SchemeError(f"scheme {name!r}: pair {k} pairs point {i} with itself")
        for q in (i, j):
            if q in seen:
                raise SchemeError(
                    f"scheme {name!r}: point {q} appears in pairs {seen[q]} and {k}; "
                    "mirror pairs must be symmetric (each point has at most one partner)"
                )
            seen[q] = k
        ri, rj = regions[pr[i]], regions[pr[j]]
        if ri != rj and mirror_name(ri) != rj:
            raise SchemeError(
                f"scheme {name!r}: pair {k} = [{i}, {j}] joins regions {ri!r} and {rj!r}; "
                "partners must share a region or lie in mirror regions (left/right)"
            )
        pairs.append((i, j))
    pairs_arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    point_region = np.array(pr, dtype=np.int64)

    dp_raw = d.get("distance_pairs")
    dps = []
    if dp_raw is None:
        dp_raw = {
            r: default_distance_pairs(mean, np.flatnonzero(point_region == i))
            for i, r in enumerate(regions)
        }
    if not isinstance(dp_raw, dict) or set(dp_raw) - set(regions):
        raise SchemeError(
            f"scheme {name!r}: 'distance_pairs' must map region names to lists of [i, j]"
        )
    for ri, r in enumerate(regions):
        lst = dp_raw.get(r, [])
        arr = []
        for p in lst:
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise SchemeError(f"scheme {name!r}: distance pair in {r!r} must be [i, j]")
            i, j = _int_list(p, f"distance pair in {r!r}", name)
            if not (0 <= i < n and 0 <= j < n) or i == j:
                raise SchemeError(f"scheme {name!r}: distance pair [{i}, {j}] in {r!r} is invalid")
            if pr[i] != ri or pr[j] != ri:
                raise SchemeError(
                    f"scheme {name!r}: distance pair [{i}, {j}] listed in {r!r} "
                    "has a point outside that region"
                )
            arr.append((i, j))
        dps.append(np.array(arr, dtype=np.int64).reshape(-1, 2))

    depth = d.get("mean_depth")
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != (n,) or not np.isfinite(depth).all():
            raise SchemeError(f"scheme {name!r}: 'mean_depth' must be {n} finite numbers")
    sub_idx = d.get("subset_indices")
    if sub_idx is not None:
        sub_idx = np.array(_int_list(sub_idx, "'subset_indices'", name), dtype=np.int64)
        if sub_idx.shape != (n,) or (sub_idx < 0).any() or len(np.unique(sub_idx)) != n:
            raise SchemeError(
                f"scheme {name!r}: 'subset_indices' must be {n} distinct non-negative indices"
            )
    raw = dict(d)
    raw["distance_pairs"] = {r: dps[i].tolist() for i, r in enumerate(regions)}
    arrays = [point_region, pairs_arr, mean, *dps]
    if depth is not None:
        arrays.append(depth)
    if sub_idx is not None:
        arrays.append(sub_idx)
    for a in arrays:
        a.setflags(write=False)
    return Scheme(
        name=name,
        n_points=n,
        dims=dims,
        regions=tuple(regions),
        point_region=point_region,
        pairs=pairs_arr,
        mean_shape=mean,
        distance_pairs=tuple(dps),
        mean_depth=depth,
        description=str(d.get("description", "")),
        subset_of=d.get("subset_of"),
        subset_indices=sub_idx,
        _raw=raw,
    )


_lock = threading.Lock()
_registry: dict[str, Scheme] = {}


def load_scheme(source: SchemeSource) -> Scheme:
    """Read and validate a scheme from a JSON file path or a dict, without registering it.

    Raises
    ------
    SchemeError
        The scheme is inconsistent; the message says which fact and why.
    """
    if isinstance(source, dict):
        return _validate(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemeError(f"cannot read scheme file {str(path)!r}: {exc.strerror}") from exc
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemeError(f"scheme file {str(path)!r} is not valid JSON: {exc.msg}") from exc
    return _validate(d)


def register_scheme(source: SchemeSource | Scheme, *, overwrite: bool = False) -> Scheme:
    """Validate a scheme and make it available to :func:`get_scheme` by its name.

    Parameters
    ----------
    source : path, dict or Scheme
    overwrite : bool
        Replace a registered scheme of the same name (never a built-in one).

    Raises
    ------
    SchemeError
        The scheme is inconsistent, or its name is taken and ``overwrite`` is False.
    """
    scheme = source if isinstance(source, Scheme) else load_scheme(source)
    with _lock:
        if scheme.name in _BUILTIN:
            raise SchemeError(f"scheme name {scheme.name!r} is built in; choose another name")
        if scheme.name in _registry and not overwrite:
            raise SchemeError(
                f"a scheme named {scheme.name!r} is already registered; "
                "pass overwrite=True to replace it"
            )
        _registry[scheme.name] = scheme
    return scheme


def get_scheme(scheme: str | Scheme) -> Scheme:
    """The scheme of that name (built-in or registered); a Scheme is returned as is."""
    if isinstance(scheme, Scheme):
        return scheme
    if not isinstance(scheme, str):
        raise SchemeError(f"expected a scheme name or Scheme, got {type(scheme).__name__}")
    with _lock:
        if scheme in _registry:
            return _registry[scheme]
        if scheme in _BUILTIN:
            s = load_scheme(_HERE / f"{scheme}.json")
            _registry[scheme] = s
            return s
    raise SchemeError(f"unknown scheme {scheme!r}; known: {list_schemes()}")


def list_schemes() -> list[str]:
    """Names of the built-in and registered schemes."""
    return sorted(set(_BUILTIN) | set(_registry))
