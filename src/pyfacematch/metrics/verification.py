"""1:1 verification: FMR/FNMR, thresholds for a target FMR, FNMR at FMR, EER, DET curves."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.metrics.intervals import interval
from pyfacematch.metrics.iso19795 import generalized_rates
from pyfacematch.metrics.thresholds import (
    allowed_count,
    conservative_count,
    curve_thresholds,
    kth_largest_threshold,
    merged_unique,
    min_comparisons_for,
    support,
    threshold_sorted,
)
from pyfacematch.metrics.types import EERResult, ErrorCurve, Interval, OperatingPoint
from pyfacematch.metrics.validation import (
    CI_METHODS,
    as_confidence,
    as_rate,
    as_scores,
    as_targets,
    as_thresholds,
    score_dtype,
)

__all__ = [
    "DEFAULT_FMR_TARGETS",
    "error_rates",
    "threshold_for_fmr",
    "fnmr_at_fmr",
    "eer",
    "det_curve",
]

DEFAULT_FMR_TARGETS: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _rates_sorted(
    gen_sorted: np.ndarray, imp_sorted: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counts of false matches and false non-matches at each threshold (score >= T accepts)."""
    fm = imp_sorted.size - np.searchsorted(imp_sorted, thresholds, side="left")
    fnm = np.searchsorted(gen_sorted, thresholds, side="left")
    return (
        fm.astype(np.int64),
        fnm.astype(np.int64),
        fm / imp_sorted.size,
        fnm / gen_sorted.size,
    )


def error_rates(genuine: Any, impostor: Any, thresholds: Any) -> ErrorCurve:
    """Exact FMR and FNMR at the given thresholds.

    Parameters
    ----------
    genuine : array_like, (n_genuine,)
        Similarity scores of mated comparisons.
    impostor : array_like, (n_impostor,)
        Similarity scores of non-mated comparisons.
    thresholds : array_like, (K,)
        Thresholds (any order; returned sorted increasing). ``score >= T`` accepts.

    Returns
    -------
    ErrorCurve
    """
    g = np.sort(as_scores(genuine, "genuine"))
    i = np.sort(as_scores(impostor, "impostor"))
    t = np.sort(as_thresholds(thresholds))
    _, _, fmr, fnmr = _rates_sorted(g, i, t)
    return ErrorCurve(t, fmr, fnmr, g.size, i.size)


def threshold_for_fmr(
    impostor: Any,
    fmr: float,
    *,
    conservative: bool = False,
    confidence: float = 0.95,
    method: str = "auto",
) -> float:
    """Decision threshold for a target false match rate: the calibration primitive.

    Returns the smallest threshold ``T`` whose empirical FMR,
    ``#{impostor >= T} / n``, is <= ``fmr``. At most ``k = floor(fmr * n)``
    impostor scores reach it, so ``T`` is the next representable number (in
    the scores' float dtype) above the ``(k+1)``-th largest impostor score.

    Parameters
    ----------
    impostor : array_like, (n,)
        Impostor similarity scores (or top candidate scores of non-mated searches).
    fmr : float
        Target rate in (0, 1).
    conservative : bool
        If True, choose instead the smallest threshold at which the one-sided
        upper ``confidence`` bound on the FMR (binomial, see :func:`binomial_ci`)
        is <= ``fmr``: the true FMR is then below the target with that
        confidence, at the cost of a higher threshold.
    confidence : float
        Confidence of the conservative bound (one-sided).
    method : str
        Interval method for the conservative bound.

    Returns
    -------
    float
        The threshold; accept when ``score >= threshold``.

    Raises
    ------
    InputError
        Bad target, or ``conservative=True`` with too few impostor scores to
        bound the FMR below the target at all (about ``3 / fmr`` are needed).
    """
    (target,) = as_targets(fmr, "fmr")
    dtype = score_dtype(impostor)
    imp = as_scores(impostor, "impostor")
    n = imp.size
    if conservative:
        k = conservative_count(target, n, as_confidence(confidence), method)
        if k is None:
            raise InputError(
                f"cannot bound the FMR below {target:g} with {confidence:.0%} confidence from "
                f"{n} impostor scores even with no false match; provide at least "
                f"{min_comparisons_for(target)} impostor scores or use conservative=False"
            )
    else:
        k = allowed_count(target, n)
    return kth_largest_threshold(imp, dtype, k)


def fnmr_at_fmr(
    genuine: Any,
    impostor: Any,
    fmr: Any = DEFAULT_FMR_TARGETS,
    *,
    confidence: float = 0.95,
    ci: str = "auto",
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    fte: float = 0.0,
    fta: float = 0.0,
) -> list[OperatingPoint]:
    """FNMR at each target FMR, with thresholds, achieved FMR and confidence intervals.

    Parameters
    ----------
    genuine : array_like, (n_genuine,)
        Mated similarity scores.
    impostor : array_like, (n_impostor,)
        Non-mated similarity scores.
    fmr : float or sequence of float
        Target FMRs in (0, 1); default 1e-2 … 1e-6.
    confidence : float
        Coverage of the intervals.
    ci : {"auto", "clopper-pearson", "wilson", "bootstrap"}
        Binomial intervals on the counted FMR and FNMR (these treat the
        threshold as fixed), or ``"bootstrap"``: a percentile interval on the
        FNMR from ``n_bootstrap`` resamples of *both* score sets, recalibrating
        the threshold each time, so it includes the threshold's own
        uncertainty (the FMR interval stays binomial, "auto"). The bootstrap is exact and
        cheap: the resampled threshold is an order statistic drawn from a Beta
        law and the resampled FNMR count is binomial, so no array is resampled.
    n_bootstrap : int
        Number of bootstrap resamples.
    seed : int or None
        Seed of the bootstrap.
    fte, fta : float
        Failure-to-enrol and failure-to-acquire rates used for the generalized
        rates ``gfar``/``gfrr`` of each point (ISO/IEC 19795-1).

    Returns
    -------
    list of OperatingPoint
        One per target, in the order given. Targets with fewer than
        ``ceil(3/target)`` impostor scores are flagged ``supported=False``.
    """
    targets = as_targets(fmr, "fmr")
    confidence = as_confidence(confidence)
    if ci not in (*CI_METHODS, "bootstrap"):
        raise InputError(f"ci: expected one of {(*CI_METHODS, 'bootstrap')}, got {ci!r}")
    if ci == "bootstrap" and (not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 10):
        raise InputError(f"n_bootstrap: expected an integer >= 10, got {n_bootstrap!r}")
    fte_v = as_rate(fte, "fte")
    fta_v = as_rate(fta, "fta")
    dtype = score_dtype(genuine, impostor)
    g = np.sort(as_scores(genuine, "genuine"))
    imp = np.sort(as_scores(impostor, "impostor"))
    rng = np.random.default_rng(seed) if ci == "bootstrap" else None
    out = []
    for target in targets:
        k = allowed_count(target, imp.size)
        t = threshold_sorted(imp, target, dtype, k)
        fm, fnm, fmr_v, fnmr_v = _rates_sorted(g, imp, np.array([t]))
        fm_i, fnm_i = int(fm[0]), int(fnm[0])
        if rng is not None:
            fmr_ci = interval(fm_i, imp.size, confidence, "auto")
            fnmr_ci = _bootstrap_fnmr(g, imp, k, dtype, confidence, n_bootstrap, rng)
        else:
            fmr_ci = interval(fm_i, imp.size, confidence, ci)
            fnmr_ci = interval(fnm_i, g.size, confidence, ci)
        ok, why = support(target, imp.size, "impostor comparisons")
        gen_rates = generalized_rates(float(fmr_v[0]), float(fnmr_v[0]), fte=fte_v, fta=fta_v)
        out.append(
            OperatingPoint(
                target_fmr=target,
                threshold=t,
                fmr=float(fmr_v[0]),
                fnmr=float(fnmr_v[0]),
                fmr_ci=fmr_ci,
                fnmr_ci=fnmr_ci,
                false_matches=fm_i,
                false_non_matches=fnm_i,
                n_genuine=int(g.size),
                n_impostor=int(imp.size),
                supported=ok,
                reason=why,
                gfar=gen_rates.gfar,
                gfrr=gen_rates.gfrr,
            )
        )
    return out


def _bootstrap_fnmr(
    g: np.ndarray,
    imp: np.ndarray,
    k: int,
    dtype: np.dtype,
    confidence: float,
    n_boot: int,
    rng: np.random.Generator,
) -> Interval:
    """Percentile bootstrap of the FNMR at a threshold recalibrated on each resample.

    Resampling ``n`` impostor scores with replacement from the sorted array is
    drawing ``n`` indices ``floor(n U)``; the ``(k+1)``-th largest of them is
    ``floor(n U_(n-k))`` with ``U_(n-k) ~ Beta(n-k, k+1)`` -- the order
    statistic is drawn directly. The number of resampled genuine scores below
    the threshold is Binomial(n_g, m / n_g), ``m`` being the number of original
    genuine scores below it. Both draws are exact and O(1) per resample.
    """
    n = imp.size
    alpha = 1.0 - confidence
    u = rng.beta(n - k, k + 1, size=n_boot)
    idx = np.minimum((u * n).astype(np.int64), n - 1)
    thr = np.nextafter(imp[idx].astype(dtype), dtype.type(np.inf)).astype(np.float64)
    m = np.searchsorted(g, thr, side="left")
    fnmr_b = rng.binomial(g.size, m / g.size) / g.size
    lo, hi = np.percentile(fnmr_b, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Interval(float(lo), float(hi), confidence, "bootstrap")


def eer(genuine: Any, impostor: Any) -> EERResult:
    """Equal error rate: where FMR(T) and FNMR(T) cross.

    Both rates are evaluated exactly at every distinct score (and just above
    the largest); the EER is interpolated linearly between the two bracketing
    thresholds.

    Parameters
    ----------
    genuine, impostor : array_like, (n,)
        Mated and non-mated similarity scores.

    Returns
    -------
    EERResult
    """
    g = np.sort(as_scores(genuine, "genuine"))
    imp = np.sort(as_scores(impostor, "impostor"))
    top = max(g[-1], imp[-1])
    t = np.append(merged_unique(g, imp), np.nextafter(top, np.inf))
    _, _, fmr, fnmr = _rates_sorted(g, imp, t)
    d = fnmr - fmr  # non-decreasing from -1 (T = min) to +1 (T > max)
    i = int(np.searchsorted(d, 0.0, side="left"))
    if i == 0 or d[i] == 0.0:
        return EERResult(float((fmr[i] + fnmr[i]) / 2), float(t[i]), float(fmr[i]), float(fnmr[i]))
    lam = -d[i - 1] / (d[i] - d[i - 1])
    rate = fmr[i - 1] + lam * (fmr[i] - fmr[i - 1])
    j = i if abs(d[i]) <= abs(d[i - 1]) else i - 1
    return EERResult(float(rate), float(t[j]), float(fmr[j]), float(fnmr[j]))


def det_curve(genuine: Any, impostor: Any, *, max_points: int = 2000) -> ErrorCurve:
    """Detection error trade-off curve: FMR and FNMR over thresholds.

    Parameters
    ----------
    genuine, impostor : array_like, (n,)
        Mated and non-mated similarity scores.
    max_points : int
        If there are more distinct scores than this, thresholds are chosen at
        log-spaced ranks of the impostor upper tail and of the genuine lower
        tail (plus evenly spaced quantiles), so the curve stays detailed down to
        FMR = 1/n_impostor. Every point is exact.

    Returns
    -------
    ErrorCurve
    """
    if not isinstance(max_points, (int, np.integer)) or max_points < 10:
        raise InputError(f"max_points: expected an integer >= 10, got {max_points!r}")
    g = np.sort(as_scores(genuine, "genuine"))
    imp = np.sort(as_scores(impostor, "impostor"))
    t = curve_thresholds(g, imp, int(max_points))
    _, _, fmr, fnmr = _rates_sorted(g, imp, t)
    return ErrorCurve(t, fmr, fnmr, int(g.size), int(imp.size))
