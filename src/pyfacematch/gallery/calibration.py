"""Decision thresholds calibrated to a target FMR (1:1) or FPIR (1:N).

A threshold is a property of the model *and* of the population, never a
constant: dlib descriptors put impostors at cosine 0.7–0.9, centred
angular-margin embeddings near 0. So thresholds are computed from impostor
scores of the gallery's own kind of data and stored in the gallery:

- **FMR** (verification): from impostor comparison scores (or impostor pairs
  of templates, scored here).
- **FPIR** (identification): from the top candidate score of each non-mated
  search against the gallery (searches of people who are not enrolled). FPIR
  grows with the gallery size, so the size at calibration is recorded.

The rule (the smallest threshold whose empirical rate is ≤ the target) is the
one of :func:`pyfacematch.metrics.threshold_for_fmr`; this module adds the
minimum sample size (rule of three: at least ``ceil(3 / target)`` scores,
otherwise an observed rate cannot show the target) and the stored record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyfacematch import metrics
from pyfacematch.errors import DimensionError, EmptyInputError, InputError, NonFiniteError

__all__ = ["ThresholdRecord", "calibrate_threshold", "pair_scores"]


@dataclass(frozen=True)
class ThresholdRecord:
    """A calibrated threshold stored in the gallery.

    Attributes
    ----------
    name : str
        ``"fmr"`` (verification) or ``"fpir"`` (identification).
    value : float
        Accept when score >= value.
    target : float
        The target rate it was calibrated for.
    n_scores : int
        How many impostor scores it was calibrated on.
    gallery_size : int or None
        Identities enrolled when an FPIR threshold was calibrated.
    """

    name: str
    value: float
    target: float
    n_scores: int
    gallery_size: int | None
    created_at: float


def _rate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InputError(f"{name} must be a number in (0, 1) such as 1e-3, got {value!r}")
    v = float(value)
    if not 0.0 < v < 1.0:
        raise InputError(f"{name} must be in (0, 1) (a rate such as 1e-3), got {v!r}")
    return v


def calibrate_threshold(
    impostor_scores: Any,
    *,
    fmr: float | None = None,
    fpir: float | None = None,
    conservative: bool = False,
    confidence: float = 0.95,
    gallery_size: int | None = None,
) -> ThresholdRecord:
    """Threshold reaching a target FMR or FPIR on impostor scores.

    Parameters
    ----------
    impostor_scores : array_like, (n,)
        Impostor comparison scores (for ``fmr``) or top candidate scores of
        non-mated searches (for ``fpir``; ``-inf`` for an empty result).
    fmr, fpir : float
        Exactly one target rate in (0, 1).
    conservative : bool
        Pick the threshold whose one-sided upper ``confidence`` bound on the
        rate is ≤ the target (see :func:`pyfacematch.metrics.threshold_for_fmr`).
    confidence : float
        Confidence of the conservative bound.
    gallery_size : int or None
        Identities enrolled when calibrating an FPIR threshold (recorded).

    Returns
    -------
    ThresholdRecord
        ``name`` is ``"fmr"`` or ``"fpir"``; accept when ``score >= value``.

    Raises
    ------
    InputError
        Neither or both targets, a target outside (0, 1), or fewer than
        ``ceil(3 / target)`` scores.
    NonFiniteError
        NaN scores (or +inf).
    """
    if (fmr is None) == (fpir is None):
        raise InputError("pass exactly one of fmr=… (verification) or fpir=… (identification)")
    name = "fmr" if fmr is not None else "fpir"
    target = _rate(fmr if fmr is not None else fpir, name)
    s = np.asarray(impostor_scores)
    if s.dtype == object or not (
        np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)
    ):
        raise InputError(f"impostor scores must be a numeric array, got dtype {s.dtype}")
    s = s.reshape(-1)
    if s.size == 0:
        raise EmptyInputError("no impostor scores given: calibration needs impostor scores")
    if np.isnan(s).any() or np.isposinf(s).any() or (name == "fmr" and np.isneginf(s).any()):
        bad = int(np.nonzero(~np.isfinite(s))[0][0])
        raise NonFiniteError(
            f"impostor score at position {bad} is not finite: remove failed comparisons "
            "before calibrating"
        )
    need = metrics.min_comparisons_for(target)
    if s.size < need:
        raise InputError(
            f"{s.size} impostor scores cannot calibrate {name}={target:g}: at least {need} "
            f"(rule of three, ceil(3/{target:g})) are needed; collect more impostor "
            "comparisons or choose a larger target"
        )
    if name == "fmr":
        value = metrics.threshold_for_fmr(
            s, target, conservative=conservative, confidence=confidence
        )
    else:
        value = metrics.threshold_for_fpir(
            s, target, conservative=conservative, confidence=confidence
        )
    return ThresholdRecord(
        name=name,
        value=float(value),
        target=target,
        n_scores=int(s.size),
        gallery_size=None if gallery_size is None else int(gallery_size),
        created_at=time.time(),
    )


def pair_scores(a: Any, b: Any) -> np.ndarray:
    """Cosine scores of row-aligned template pairs.

    Parameters
    ----------
    a, b : array_like, (n, d)
        Templates; row ``i`` of ``a`` is compared with row ``i`` of ``b``.

    Returns
    -------
    float64 (n,)
        Cosine similarity of each pair (rows are normalised here).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise DimensionError(
            f"impostor pairs must be two (n, d) arrays of one shape, got {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise NonFiniteError("an impostor pair template holds NaN or Inf")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    if (na == 0).any() or (nb == 0).any():
        raise InputError("an impostor pair template has norm zero and cannot be scored")
    return np.einsum("ij,ij->i", a, b) / (na * nb)
