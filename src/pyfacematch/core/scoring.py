"""Cosine scoring of float32 templates: 1:1, M×N, fused top-k, masked cosine, re-ranking, 1-bit codes.

Templates are rows of a float32 array, unit norm (:func:`normalize` makes them so); the score of two
templates is their dot product, i.e. their cosine. Every call whose cost grows with the gallery runs
in the C++ core with the GIL released, on the core's thread pool (:func:`set_num_threads`).

Conversion policy: probes of any real dtype or layout are converted once per call (they are small);
a gallery must already be float32 and C-contiguous, because converting it on every call would copy
the whole gallery each time — convert it once with :func:`as_templates` and reuse the result.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pyfacematch import _core
from pyfacematch.errors import (
    DimensionError,
    DTypeError,
    EmptyInputError,
    InputError,
    NonFiniteError,
    ZeroVectorError,
)

__all__ = [
    "DEFAULT_MIN_FRACTION",
    "as_templates",
    "normalize",
    "cosine",
    "scores",
    "topk",
    "masked_cosine",
    "masked_scores",
    "masked_topk",
    "rerank",
    "pack_signs",
    "hamming_topk2",
    "hamming_topk",
    "set_num_threads",
    "get_num_threads",
    "max_num_threads",
]

cosine = _core.cosine
# The C function's docstring lives in cpp/bindings/bind_scoring.cpp (builtins' __doc__ is read-only).


#: Masked cosine compares two templates only when the blocks valid in both cover at least this
#: fraction of the dimensions. A surgical mask leaves about half of a 200-point key valid
#: (nose, mouth and lower jaw hidden), so the default must sit below 0.5 for masked faces to be
#: compared at all; 0.3 keeps eyes + brows + contour comparable and refuses slivers.
DEFAULT_MIN_FRACTION = 0.3


def _real_dtype_or_raise(x: np.ndarray, name: str) -> None:
    if x.dtype.kind not in "fiub":
        raise DTypeError(
            f"{name} must hold real numbers (float32 preferred), got dtype {x.dtype}: "
            f"convert it with np.asarray({name}, dtype=np.float32)"
        )


def as_templates(x: Any, name: str = "templates") -> np.ndarray:
    """Convert to a float32, C-contiguous 2-D array (no copy when it already is one).

    Parameters
    ----------
    x : array_like, shape (n, d) or (d,)
        Templates; a 1-D vector becomes one row.
    name : str
        Name used in error messages.

    Returns
    -------
    numpy.ndarray, float32, shape (n, d)
    """
    arr = np.asarray(x)
    _real_dtype_or_raise(arr, name)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (rows × dimension), got {arr.ndim}-D")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _probes(x: Any, name: str = "probes") -> tuple[np.ndarray, bool]:
    arr = np.asarray(x)
    single = arr.ndim == 1
    out = as_templates(arr, name)
    if out.shape[0] == 0:
        raise EmptyInputError(f"the {name} batch is empty: pass at least one row")
    _raise_if_nonfinite(out, name)
    return out, single


def _gallery(x: Any, name: str = "gallery") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
        _real_dtype_or_raise(x, name)
        if x.ndim == 2:
            x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (rows × dimension), got {x.ndim}-D")
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        layout = "C-contiguous" if x.flags.c_contiguous else "not C-contiguous"
        raise DTypeError(
            f"{name} must be float32 and C-contiguous, got {x.dtype} ({layout}): convert it once with "
            f"pyfacematch.as_templates({name}) and reuse the result (converting on every call would "
            "copy the whole gallery each time)"
        )
    if x.shape[0] == 0:
        raise EmptyInputError(f"the {name} is empty: enroll at least one template")
    return x


def _raise_if_nonfinite(x: np.ndarray, name: str) -> None:
    row = int(_core.first_nonfinite_row(x))
    if row >= 0:
        raise NonFiniteError(
            f"{name} row {row} holds NaN or Inf: drop or repair that row before scoring"
        )


def _check_dims(
    q: np.ndarray, g: np.ndarray, qname: str = "probes", gname: str = "gallery"
) -> None:
    if q.shape[1] != g.shape[1]:
        raise DimensionError(
            f"{qname} have dimension {q.shape[1]} but the {gname} has dimension {g.shape[1]}: "
            "were they made by the same model?"
        )


def _check_k(k: int, most: int) -> int:
    """k as a Python int in [1, most]: a k above the rows there are to rank is lowered to them.

    ``most`` is what the call can return at all (gallery rows, or candidates per probe), so a huge
    ``k`` (even one beyond int64, which the core cannot take) neither fails untyped nor allocates
    output for rows that do not exist.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InputError(f"k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    return int(min(int(k), max(int(most), 1)))


def normalize(x: Any) -> np.ndarray:
    """Scale each row to unit L2 norm.

    Parameters
    ----------
    x : array_like, shape (n, d) or (d,)

    Returns
    -------
    numpy.ndarray, float32, same shape as ``x`` (a new array).

    Raises
    ------
    ZeroVectorError
        A row has norm zero (names the row).
    NonFiniteError
        A row holds NaN or Inf (names the row).
    """
    arr = np.asarray(x)
    single = arr.ndim == 1
    t = as_templates(arr, "x")
    _raise_if_nonfinite(t, "x")
    norms = np.sqrt(np.einsum("ij,ij->i", t, t, dtype=np.float64))
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ZeroVectorError(
            f"x row {int(zero[0])} has norm 0 and cannot be normalised "
            f"({zero.size} such row(s)): drop empty templates before normalising"
        )
    out = (t / norms[:, None]).astype(np.float32, copy=False)
    return out[0] if single else out


def _cosine_slow(a: Any, b: Any) -> float:
    """Fallback of :func:`cosine` for inputs off the fast path: converts, or raises the typed error."""
    va, vb = np.asarray(a), np.asarray(b)
    for v, name in ((va, "a"), (vb, "b")):
        _real_dtype_or_raise(v, name)
        if v.ndim != 1:
            raise InputError(
                f"cosine takes two 1-D vectors; {name} is {v.ndim}-D: use scores() or topk() for batches"
            )
    if va.shape[0] != vb.shape[0]:
        raise DimensionError(f"vectors have dimensions {va.shape[0]} (a) and {vb.shape[0]} (b)")
    if va.shape[0] == 0:
        raise EmptyInputError("cosine of empty vectors: pass vectors of dimension >= 1")
    fa = np.ascontiguousarray(va, dtype=np.float32)
    fb = np.ascontiguousarray(vb, dtype=np.float32)
    for v, name in ((fa, "a"), (fb, "b")):
        if not np.isfinite(v).all():
            raise NonFiniteError(f"vector {name} holds NaN or Inf: repair it before scoring")
        if not v.any():
            raise ZeroVectorError(f"vector {name} is all zeros: its cosine is undefined")
    return float(_core.cosine_checked(fa, fb))


_core._set_cosine_fallback(_cosine_slow)


def scores(probes: Any, gallery: np.ndarray) -> np.ndarray:
    """All scores of probes against a gallery.

    Parameters
    ----------
    probes : array_like, shape (m, d) or (d,)
    gallery : numpy.ndarray, float32 C-contiguous, shape (n, d)

    Returns
    -------
    numpy.ndarray, float32, shape (m, n), or (n,) for a 1-D probe.
    """
    q, single = _probes(probes)
    g = _gallery(gallery)
    _check_dims(q, g)
    out, ok = _core.scores(q, g)
    if not ok:
        _raise_if_nonfinite(g, "gallery")
    return out[0] if single else out


def topk(probes: Any, gallery: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best gallery rows of each probe, without materialising the m×n score matrix.

    ``gallery`` may also be a :class:`pyfacematch.CompactMatrix` (int8 / bf16): see its ``topk``.

    Parameters
    ----------
    probes : array_like, shape (m, d) or (d,)
    gallery : numpy.ndarray, float32 C-contiguous, shape (n, d)
    k : int
        Rows to return per probe (>= 1); more than n returns n columns.

    Returns
    -------
    scores : numpy.ndarray, float32, shape (m, min(k, n)) — best first
    indices : numpy.ndarray, int64, shape (m, min(k, n)) — ties broken by the lower index
    (1-D arrays of length min(k, n) for a 1-D probe.)
    """
    from pyfacematch.core.compact import CompactMatrix  # noqa: PLC0415 (compact imports this module)

    if isinstance(gallery, CompactMatrix):
        out: tuple[np.ndarray, np.ndarray] = gallery.topk(probes, k)
        return out
    q, single = _probes(probes)
    g = _gallery(gallery)
    _check_dims(q, g)
    s, i, ok = _core.topk(q, g, _check_k(k, g.shape[0]))
    if not ok:
        _raise_if_nonfinite(g, "gallery")
    return (s[0], i[0]) if single else (s, i)


def _blocks(blocks: Any, d: int) -> np.ndarray:
    raw = np.asarray(blocks)
    if raw.dtype.kind not in "iu":
        raise DTypeError(
            f"blocks must be integer offsets (int64), got dtype {raw.dtype}: "
            "pass the key model's blocks, e.g. np.array([0, 64, 128])"
        )
    b = np.ascontiguousarray(raw, dtype=np.int64)
    if (
        b.ndim != 1
        or b.shape[0] < 2
        or b[0] != 0
        or b[-1] != d
        or np.any(np.diff(b) <= 0)
        or b.shape[0] > 65
    ):
        raise InputError(
            f"blocks must be strictly increasing offsets [0, …, {d}] describing 1 to 64 blocks, "
            f"got {b.tolist() if b.size <= 70 else b.shape}"
        )
    return b


def _masks(m: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(m)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype.kind not in "iub":
        raise DTypeError(f"{name} must be integer bitmasks (uint64), got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and (arr < 0).any():
        raise InputError(f"{name} must be non-negative bitmasks")
    arr = np.ascontiguousarray(arr, dtype=np.uint64)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DimensionError(f"{name} must hold one mask per row ({n}), got shape {arr.shape}")
    return arr


def _fraction(min_fraction: float) -> float:
    f = float(min_fraction)
    if not 0.0 <= f <= 1.0:
        raise InputError(f"min_fraction must be within [0, 1], got {min_fraction}")
    return f


def masked_cosine(
    a: Any,
    b: Any,
    mask_a: int,
    mask_b: int,
    blocks: Any,
    min_fraction: float = DEFAULT_MIN_FRACTION,
) -> float:
    """Cosine of two templates over the region blocks valid in both, renormalised.

    Parameters
    ----------
    a, b : array_like, shape (d,)
    mask_a, mask_b : int
        Bitmasks of valid blocks (bit j = block j).
    blocks : array_like of int, shape (B + 1,)
        Block offsets ``[0, …, d]``, B <= 64.
    min_fraction : float
        Minimum fraction of the d dimensions the shared blocks must cover.

    Returns
    -------
    float
        The score, or NaN when the pair is not comparable (too little shared).
    """
    q, _ = _probes(a, "a")
    g, _ = _probes(b, "b")
    _check_dims(q, g, "a", "b")
    bl = _blocks(blocks, q.shape[1])
    ma, mb = _masks(mask_a, 1, "mask_a"), _masks(mask_b, 1, "mask_b")
    return float(
        _core.masked_cosine(q[0], g[0], int(ma[0]), int(mb[0]), bl, _fraction(min_fraction))
    )


def masked_scores(
    probes: Any,
    gallery: np.ndarray,
    probe_masks: Any,
    gallery_masks: Any,
    blocks: Any,
    min_fraction: float = DEFAULT_MIN_FRACTION,
    *,
    check_finite: bool = True,
) -> np.ndarray:
    """All masked scores, shape (m, n); NaN marks pairs that are not comparable."""
    q, single = _probes(probes)
    g = _gallery(gallery)
    _check_dims(q, g)
    if check_finite:
        _raise_if_nonfinite(g, "gallery")
    out = _core.masked_scores(
        q,
        _masks(probe_masks, q.shape[0], "probe_masks"),
        g,
        _masks(gallery_masks, g.shape[0], "gallery_masks"),
        _blocks(blocks, q.shape[1]),
        _fraction(min_fraction),
    )
    return out[0] if single else out


def masked_topk(
    probes: Any,
    gallery: np.ndarray,
    k: int,
    probe_masks: Any,
    gallery_masks: Any,
    blocks: Any,
    min_fraction: float = DEFAULT_MIN_FRACTION,
    *,
    check_finite: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by masked cosine; pairs sharing too little are never returned.

    Returns ``(scores, indices)`` of shape (m, min(k, n)); a probe with fewer comparable gallery rows
    has its remaining columns padded with score NaN and index -1. ``check_finite=False`` skips the
    gallery scan for NaN/Inf (for galleries validated at enrollment).
    """
    q, single = _probes(probes)
    g = _gallery(gallery)
    _check_dims(q, g)
    if check_finite:
        _raise_if_nonfinite(g, "gallery")
    s, i = _core.masked_topk(
        q,
        _masks(probe_masks, q.shape[0], "probe_masks"),
        g,
        _masks(gallery_masks, g.shape[0], "gallery_masks"),
        _blocks(blocks, q.shape[1]),
        _fraction(min_fraction),
        _check_k(k, g.shape[0]),
    )
    return (s[0], i[0]) if single else (s, i)


def rerank(
    probes: Any,
    gallery: np.ndarray,
    candidates: Any,
    k: int,
    probe_masks: Any = None,
    gallery_masks: Any = None,
    blocks: Any = None,
    min_fraction: float = DEFAULT_MIN_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among a shortlist of candidate rows per probe.

    Parameters
    ----------
    candidates : array_like of int, shape (m, c)
        Gallery row indices per probe; -1 is padding, duplicates are ignored.
    k : int
        Rows wanted per probe; the output has ``min(k, c)`` columns (no probe can have more
        than ``c`` candidates), rows with fewer valid candidates are padded with (NaN, -1).
    probe_masks, gallery_masks, blocks : optional
        When given, masked cosine is used (see :func:`masked_topk`).

    Returns
    -------
    scores : float32 (m, min(k, c)), indices : int64 (m, min(k, c))
    """
    q, single = _probes(probes)
    g = _gallery(gallery)
    _check_dims(q, g)
    c = np.asarray(candidates)
    if c.dtype.kind not in "iu":
        raise DTypeError(f"candidates must be integer row indices, got dtype {c.dtype}")
    c = np.ascontiguousarray(c.reshape(1, -1) if c.ndim == 1 else c, dtype=np.int64)
    masked = probe_masks is not None or gallery_masks is not None or blocks is not None
    if masked and (probe_masks is None or gallery_masks is None or blocks is None):
        raise InputError("masked re-ranking needs probe_masks, gallery_masks and blocks together")
    args: tuple[Any, Any, Any] = (None, None, None)
    if masked:
        args = (
            _masks(probe_masks, q.shape[0], "probe_masks"),
            _masks(gallery_masks, g.shape[0], "gallery_masks"),
            _blocks(blocks, q.shape[1]),
        )
    s, i = _core.rerank(q, g, c, _check_k(k, c.shape[1]), *args, _fraction(min_fraction))
    return (s[0], i[0]) if single else (s, i)


def pack_signs(x: Any, center: Any = None) -> np.ndarray:
    """1-bit codes: bit j (LSB first within byte j // 8) is set when ``x[j] - center[j] > 0``.

    Returns
    -------
    numpy.ndarray, uint8, shape (n, ceil(d / 8))
    """
    t = as_templates(x)
    _raise_if_nonfinite(t, "templates")
    c = None
    if center is not None:
        raw = np.asarray(center)
        _real_dtype_or_raise(raw, "center")
        c = np.ascontiguousarray(raw, dtype=np.float32).reshape(-1)
        if not np.isfinite(c).all():
            raise NonFiniteError("center holds NaN or Inf: recompute it from finite templates")
    return _core.pack_signs(t, c)


def _probe_codes(probe_codes: Any) -> tuple[np.ndarray, bool]:
    """Probe codes as a uint8 (m, nbytes) array, and whether one 1-D code was given.

    Only uint8 codes are taken: a float, int64 or NaN "code" cast to uint8 would be silently
    wrapped or truncated into a different code.
    """
    q = np.asarray(probe_codes)
    if q.dtype != np.uint8:
        raise DTypeError(
            f"probe codes must be uint8 (from pack_signs()), got dtype {q.dtype}: "
            "pack templates with pack_signs() instead of passing other numbers"
        )
    single = q.ndim == 1
    return np.ascontiguousarray(q.reshape(1, -1) if single else q, dtype=np.uint8), single


def _gallery_codes(g: Any, what: str) -> np.ndarray:
    """A gallery code array, refused (not copied) unless 2-D uint8 and C-contiguous."""
    g = np.asarray(g)
    if g.dtype != np.uint8 or not g.flags.c_contiguous or g.ndim != 2:
        raise DTypeError(f"{what} must be a 2-D uint8 C-contiguous array from pack_signs()")
    return g


def hamming_topk(probe_codes: Any, gallery_codes: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k gallery codes nearest in Hamming distance, smallest first, ties to the lower index.

    Returns
    -------
    distances : int32 (m, min(k, n)), indices : int64 (m, min(k, n))
    """
    q, single = _probe_codes(probe_codes)
    g = _gallery_codes(gallery_codes, "gallery_codes")
    d, i = _core.hamming_topk(q, g, _check_k(k, g.shape[0]))
    return (d[0], i[0]) if single else (d, i)


def hamming_topk2(
    probe_codes: Any, gallery_first: Any, gallery_rest: Any, k: int, scan: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two-stage Hamming top-k over codes kept in two planes (``BinaryBackend``'s layout).

    ``gallery_first`` holds each code's first bytes, ``gallery_rest`` the
    others; ``probe_codes`` are whole codes. The scan reads the first plane of
    every row; a row whose distance there is within the running ``scan``-th
    best (per thread's share of the gallery, so at least the ``scan`` best on
    the first plane) has its full distance computed. Returns the ``k`` best
    full distances, smallest first, ties to the lower row, padded with -1.

    Returns
    -------
    distances : int32 (m, min(k, n)), indices : int64 (m, min(k, n))
    """
    q, single = _probe_codes(probe_codes)
    ga = _gallery_codes(gallery_first, "gallery_first (first columns of pack_signs() codes)")
    gb = _gallery_codes(gallery_rest, "gallery_rest (the other columns)")
    if q.ndim != 2 or q.shape[1] != ga.shape[1] + gb.shape[1]:
        raise DimensionError(
            f"probe codes have {q.shape[-1]} bytes but the gallery planes have "
            f"{ga.shape[1]} + {gb.shape[1]}"
        )
    qa = np.ascontiguousarray(q[:, : ga.shape[1]])
    qb = np.ascontiguousarray(q[:, ga.shape[1] :])
    d, i = _core.hamming_topk2(
        qa, qb, ga, gb, _check_k(k, ga.shape[0]), _check_k(scan, ga.shape[0])
    )
    return (d[0], i[0]) if single else (d, i)


def max_num_threads() -> int:
    """The most threads :func:`set_num_threads` accepts: max(256, 4 × hardware threads)."""
    return int(_core.max_num_threads())


def set_num_threads(n: int) -> None:
    """Set the threads one call may use (>= 1; the calling thread counts as one).

    Raises :class:`InputError` above :func:`max_num_threads`. When the operating system refuses
    to start that many threads, the pool keeps the ones it could start (see
    :func:`get_num_threads`) rather than failing.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise InputError(f"number of threads must be an integer >= 1, got {n!r}")
    most = max_num_threads()
    if not 1 <= n <= most:
        raise InputError(
            f"number of threads must be within [1, {most}], got {n}: "
            f"use about the machine's hardware threads ({os.cpu_count() or 1})"
        )
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads one call may use (default: the machine's hardware threads)."""
    return int(_core.get_num_threads())
