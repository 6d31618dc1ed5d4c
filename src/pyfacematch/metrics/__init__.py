"""Accuracy metrics in the terms of biometric evaluations (NIST FRVT, ISO/IEC 19795-1).

Conventions
-----------
* Scores are **similarities**: higher means more alike. A comparison is
  *accepted* at threshold ``T`` when ``score >= T``.
* 1:1 (verification), from genuine (mated) and impostor (non-mated) scores::

      FMR(T)  = #{impostor >= T} / n_impostor      (false match rate)
      FNMR(T) = #{genuine  <  T} / n_genuine       (false non-match rate)

* 1:N (identification), as NIST FRVT 1:N defines it. A *mated* search has its
  true identity enrolled; a *non-mated* search does not::

      FPIR(T)    = #{non-mated searches whose top candidate scores >= T} / n_non_mated
      FNIR(T, R) = #{mated searches whose mate is NOT returned at rank <= R
                     with score >= T} / n_mated

  With ``T = -inf`` the rank-``R`` miss rate (1 - CMC(R)) is FNIR(-inf, R).
* The threshold that achieves a target FMR (or FPIR) ``a`` on ``n`` impostor
  scores is the **smallest threshold whose empirical rate is <= a**
  (:func:`threshold_for_fmr`). At most ``k = floor(a * n)`` impostors may
  score at or above it, so it lies just above the ``(k+1)``-th largest impostor
  score: the next representable number above that score in the scores' own
  floating-point type (so a float32 comparison gives the same decisions).
* **Too few impostors.** A target ``a`` is *supported* only when
  ``n_impostor >= ceil(3 / a)`` -- the "rule of three": with zero false matches
  in ``n`` trials the one-sided 95% upper bound on the rate is about ``3/n``,
  so fewer comparisons cannot show that the rate is below ``a``. Unsupported
  targets are still computed (the threshold is then simply above every
  impostor score) but are flagged with ``supported=False`` and a reason.
* Confidence intervals are two-sided binomial intervals on the counted rates:
  Clopper-Pearson (exact, via :mod:`scipy.stats`) when scipy is installed,
  else Wilson score; or a bootstrap that also resamples the impostor scores
  that fix the threshold (:func:`fnmr_at_fmr` with ``ci="bootstrap"``).
* Failure to enrol (FTE) and failure to acquire (FTA) are counted as
  ISO/IEC 19795-1 counts them: FMR/FNMR are measured on the comparisons that
  could be made, and the generalized rates fold the failures back in::

      GFAR = FMR * (1 - FTA) * (1 - FTE)
      GFRR = FTE + (1 - FTE) * FTA + (1 - FTE) * (1 - FTA) * FNMR

All functions take array-likes of any real dtype, validate them (empty arrays,
NaN, bad targets raise the typed errors of :mod:`pyfacematch.errors`), and
sort each score array once; millions of impostor scores take well under a
second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from pyfacematch.errors import EmptyInputError, InputError, NonFiniteError

__all__ = [
    "DEFAULT_FMR_TARGETS",
    "DEFAULT_FPIR_TARGETS",
    "Interval",
    "ErrorCurve",
    "OperatingPoint",
    "EERResult",
    "IdentificationPoint",
    "CMCCurve",
    "FailureRate",
    "GeneralizedRates",
    "binomial_ci",
    "min_comparisons_for",
    "error_rates",
    "threshold_for_fmr",
    "fnmr_at_fmr",
    "eer",
    "det_curve",
    "fpir_fnir",
    "threshold_for_fpir",
    "fnir_at_fpir",
    "identification_det_curve",
    "cmc",
    "rank_miss_rate",
    "failure_rate",
    "generalized_rates",
]

DEFAULT_FMR_TARGETS: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
DEFAULT_FPIR_TARGETS: tuple[float, ...] = (0.003, 0.01, 0.1)

_CI_METHODS = ("auto", "clopper-pearson", "wilson")

# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval on a rate.

    Attributes
    ----------
    low, high : float
        Bounds, in [0, 1].
    confidence : float
        Nominal coverage, e.g. 0.95.
    method : str
        ``"clopper-pearson"``, ``"wilson"`` or ``"bootstrap"``.
    """

    low: float
    high: float
    confidence: float
    method: str

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class ErrorCurve:
    """FMR and FNMR (or FPIR and FNIR) evaluated at a set of thresholds.

    Attributes
    ----------
    thresholds : ndarray, float64 (K,)
        Increasing thresholds; a comparison is accepted when ``score >= threshold``.
    fmr, fnmr : ndarray, float64 (K,)
        False match (or false positive identification) rate, non-increasing;
        false non-match (or false negative identification) rate, non-decreasing.
    n_genuine, n_impostor : int
        Number of genuine (mated) and impostor (non-mated) comparisons or searches.
    kind : str
        ``"verification"`` (FMR/FNMR) or ``"identification"`` (FPIR/FNIR).
    """

    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray
    n_genuine: int
    n_impostor: int
    kind: str = "verification"


@dataclass(frozen=True)
class OperatingPoint:
    """FNMR at a target FMR (one row of the FRVT 1:1 table).

    Attributes
    ----------
    target_fmr : float
        The requested false match rate.
    threshold : float
        Smallest threshold whose empirical FMR is <= ``target_fmr``.
    fmr : float
        Achieved empirical FMR at ``threshold`` (<= target).
    fnmr : float
        Empirical FNMR at ``threshold``.
    fmr_ci, fnmr_ci : Interval
        Confidence intervals on the achieved FMR and on the FNMR.
    false_matches, false_non_matches : int
        The counts behind ``fmr`` and ``fnmr``.
    n_genuine, n_impostor : int
        Number of genuine and impostor comparisons.
    supported : bool
        ``n_impostor >= ceil(3 / target_fmr)`` (rule of three).
    reason : str or None
        Why the target is not supported, else None.
    gfar, gfrr : float
        Generalized rates of ISO/IEC 19795-1 with the ``fte``/``fta`` given
        to :func:`fnmr_at_fmr` (equal to ``fmr``/``fnmr`` when both are 0).
    """

    target_fmr: float
    threshold: float
    fmr: float
    fnmr: float
    fmr_ci: Interval
    fnmr_ci: Interval
    false_matches: int
    false_non_matches: int
    n_genuine: int
    n_impostor: int
    supported: bool
    reason: str | None = None
    gfar: float = math.nan
    gfrr: float = math.nan


@dataclass(frozen=True)
class EERResult:
    """Equal error rate.

    Attributes
    ----------
    eer : float
        The rate where the FMR and FNMR curves cross, linearly interpolated
        between the two thresholds that bracket the crossing.
    threshold : float
        The threshold (of the two bracketing ones) where ``|FMR - FNMR|`` is
        smallest.
    fmr, fnmr : float
        Empirical FMR and FNMR at ``threshold``.
    """

    eer: float
    threshold: float
    fmr: float
    fnmr: float


@dataclass(frozen=True)
class IdentificationPoint:
    """FNIR at a target FPIR (one row of the FRVT 1:N table).

    Attributes
    ----------
    target_fpir : float
        The requested false positive identification rate.
    threshold : float
        Smallest threshold whose empirical FPIR is <= ``target_fpir``.
    fpir, fnir : float
        Achieved FPIR and FNIR at ``threshold``.
    fpir_ci, fnir_ci : Interval
        Confidence intervals.
    false_positives, false_negatives : int
        Counts behind ``fpir`` and ``fnir``.
    n_mated, n_non_mated : int
        Number of mated and non-mated searches.
    max_rank : int or None
        ``R``: a mate counts as found only at rank <= R (None: anywhere in the list).
    supported : bool
        ``n_non_mated >= ceil(3 / target_fpir)``.
    reason : str or None
        Why the target is not supported, else None.
    """

    target_fpir: float
    threshold: float
    fpir: float
    fnir: float
    fpir_ci: Interval
    fnir_ci: Interval
    false_positives: int
    false_negatives: int
    n_mated: int
    n_non_mated: int
    max_rank: int | None
    supported: bool
    reason: str | None = None


@dataclass(frozen=True)
class CMCCurve:
    """Cumulative match characteristic.

    Attributes
    ----------
    ranks : ndarray, int64 (R,)
        1, 2, ..., R.
    hit_rate : ndarray, float64 (R,)
        Fraction of mated searches whose mate is at rank <= r (non-decreasing).
    miss_rate : ndarray, float64 (R,)
        ``1 - hit_rate``: the rank-r miss rate, FNIR(T=-inf, r).
    ci_low, ci_high : ndarray, float64 (R,)
        Confidence interval on ``miss_rate`` at each rank.
    n_mated : int
        Number of mated searches.
    """

    ranks: np.ndarray
    hit_rate: np.ndarray
    miss_rate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n_mated: int


@dataclass(frozen=True)
class FailureRate:
    """Failure to enrol (FTE) or failure to acquire (FTA), ISO/IEC 19795-1.

    Attributes
    ----------
    rate : float
        ``failures / attempts``.
    failures, attempts : int
        Counts (persons for FTE; attempts/transactions for FTA).
    ci : Interval
        Binomial confidence interval on ``rate``.
    """

    rate: float
    failures: int
    attempts: int
    ci: Interval


@dataclass(frozen=True)
class GeneralizedRates:
    """Generalized false accept / false reject rates (ISO/IEC 19795-1).

    ``gfar = fmr (1-fta)(1-fte)`` and
    ``gfrr = fte + (1-fte) fta + (1-fte)(1-fta) fnmr``.
    """

    gfar: float
    gfrr: float
    fmr: float
    fnmr: float
    fte: float
    fta: float


# ----------------------------------------------------------------------------- validation


def _scores(x: Any, name: str, *, allow_neg_inf: bool = False) -> np.ndarray:
    """Validate a 1-D score array; return it as float64 plus the source float dtype."""
    try:
        a = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise InputError(f"{name}: expected a 1-D array of scores, got {type(x).__name__}") from exc
    if a.dtype == object or not (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    ):
        raise InputError(
            f"{name}: expected real-valued scores, got dtype {a.dtype}; pass a numeric array"
        )
    if a.ndim != 1:
        raise InputError(
            f"{name}: expected a 1-D array of scores, got shape {a.shape}; "
            "flatten it (e.g. scores.ravel()) if every entry is one comparison"
        )
    if a.size == 0:
        raise EmptyInputError(f"{name}: expected at least one score, got an empty array")
    a64 = a.astype(np.float64, copy=False)
    if np.issubdtype(a.dtype, np.floating):
        nan = np.isnan(a64)
        if nan.any():
            raise NonFiniteError(
                f"{name}: {int(nan.sum())} of {a.size} scores are NaN (first at index "
                f"{int(np.argmax(nan))}); drop incomparable pairs"
                + (" or use -inf for 'no candidate'" if allow_neg_inf else "")
            )
        bad = np.isposinf(a64) if allow_neg_inf else np.isinf(a64)
        if bad.any():
            raise NonFiniteError(
                f"{name}: {int(bad.sum())} of {a.size} scores are infinite (first at index "
                f"{int(np.argmax(bad))}); scores must be finite"
                + (" (-inf is allowed for 'no candidate')" if allow_neg_inf else "")
            )
    return a64


def _score_dtype(*arrays: Any) -> np.dtype:
    """Float dtype in which thresholds are made: the widest float input, else float64."""
    dts = [np.asarray(a).dtype for a in arrays]
    floats = [d for d in dts if np.issubdtype(d, np.floating)]
    if floats and all(d in (np.float16, np.float32, np.float64) for d in floats):
        return np.result_type(*floats)
    return np.dtype(np.float64)


def _targets(t: Any, name: str) -> tuple[float, ...]:
    arr = np.atleast_1d(np.asarray(t, dtype=np.float64)) if _is_real(t) else None
    if arr is None or arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name}: expected a number or a non-empty list of numbers in (0, 1)")
    bad = ~((arr > 0) & (arr < 1))
    if bad.any():
        raise InputError(
            f"{name}: every target must lie strictly between 0 and 1, got {arr[bad].tolist()}"
        )
    return tuple(float(v) for v in arr)


def _is_real(t: Any) -> bool:
    try:
        a = np.asarray(t)
    except Exception:  # pragma: no cover
        return False
    return a.dtype != object and (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    )


def _confidence(c: float) -> float:
    if not (isinstance(c, (int, float, np.floating)) and 0.0 < float(c) < 1.0):
        raise InputError(f"confidence: expected a number in (0, 1) such as 0.95, got {c!r}")
    return float(c)


def _allowed_count(target: float, n: int) -> int:
    """Largest k with k / n <= target (exact in floating point)."""
    k = int(math.floor(target * n))
    while k + 1 <= n and (k + 1) / n <= target:
        k += 1
    while k > 0 and k / n > target:
        k -= 1
    return k


def _next_up(value: float, dtype: np.dtype) -> float:
    """Smallest number of ``dtype`` strictly above ``value``, as a Python float."""
    v = dtype.type(value)
    return float(np.nextafter(v, dtype.type(np.inf)))


def min_comparisons_for(target: float) -> int:
    """Number of impostor comparisons (or non-mated searches) a target rate needs.

    The rule of three: ``ceil(3 / target)``. With zero errors in ``n`` trials the
    one-sided 95% upper confidence bound on the rate is ``1 - 0.05**(1/n) ~ 3/n``.

    Parameters
    ----------
    target : float
        Target rate in (0, 1).

    Returns
    -------
    int
    """
    (t,) = _targets(target, "target")
    # guard against 3/1e-3 = 2999.9999999999995 style rounding
    return int(math.ceil(3.0 / t - 1e-9))


# ----------------------------------------------------------------------------- intervals


def _have_scipy() -> bool:
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        return False
    return True


def binomial_ci(
    k: Any, n: Any, confidence: float = 0.95, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray, str]:
    """Two-sided binomial confidence interval for ``k`` successes in ``n`` trials.

    Parameters
    ----------
    k, n : int or array of int
        Counts (broadcast together); ``0 <= k <= n``, ``n >= 1``.
    confidence : float
        Nominal coverage in (0, 1).
    method : {"auto", "clopper-pearson", "wilson"}
        ``"clopper-pearson"`` is exact (never under-covers) and needs scipy;
        ``"wilson"`` is the Wilson score interval; ``"auto"`` picks
        Clopper-Pearson when scipy is installed, else Wilson.

    Returns
    -------
    low, high : ndarray, float64
        Bounds (0-d arrays for scalar input).
    method : str
        The method used.
    """
    confidence = _confidence(confidence)
    if method not in _CI_METHODS:
        raise InputError(f"method: expected one of {_CI_METHODS}, got {method!r}")
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if (
        np.any(n_arr < 1)
        or np.any(k_arr < 0)
        or np.any(k_arr > n_arr)
        or np.any(k_arr != np.round(k_arr))
        or np.any(n_arr != np.round(n_arr))
    ):
        raise InputError("binomial_ci: expected integer counts with 0 <= k <= n and n >= 1")
    if method == "auto":
        method = "clopper-pearson" if _have_scipy() else "wilson"
    alpha = 1.0 - confidence
    if method == "clopper-pearson":
        try:
            from scipy.stats import beta
        except ImportError as exc:
            raise ImportError(
                "Clopper-Pearson intervals need scipy; install scipy or use method='wilson'"
            ) from exc
        k_b, n_b = np.broadcast_arrays(k_arr, n_arr)
        with np.errstate(invalid="ignore", divide="ignore"):
            low = np.where(k_b > 0, beta.ppf(alpha / 2, np.maximum(k_b, 1), n_b - k_b + 1), 0.0)
            high = np.where(
                k_b < n_b, beta.ppf(1 - alpha / 2, k_b + 1, np.maximum(n_b - k_b, 1)), 1.0
            )
        return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64), method
    z = NormalDist().inv_cdf(1.0 - alpha / 2)
    p = k_arr / n_arr
    denom = 1.0 + z * z / n_arr
    centre = (p + z * z / (2 * n_arr)) / denom
    half = z * np.sqrt(p * (1 - p) / n_arr + z * z / (4 * n_arr * n_arr)) / denom
    low = np.clip(centre - half, 0.0, 1.0)
    high = np.clip(centre + half, 0.0, 1.0)
    # exact at the edges: 0 successes -> low = 0; n successes -> high = 1
    low = np.where(k_arr == 0, 0.0, low)
    high = np.where(k_arr == n_arr, 1.0, high)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64), method


def _interval(k: int, n: int, confidence: float, method: str) -> Interval:
    lo, hi, used = binomial_ci(k, n, confidence, method)
    return Interval(float(lo), float(hi), confidence, used)


# ----------------------------------------------------------------------------- 1:1


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
    g = np.sort(_scores(genuine, "genuine"))
    i = np.sort(_scores(impostor, "impostor"))
    t = np.sort(_threshold_array(thresholds))
    _, _, fmr, fnmr = _rates_sorted(g, i, t)
    return ErrorCurve(t, fmr, fnmr, g.size, i.size)


def _threshold_array(thresholds: Any) -> np.ndarray:
    if not _is_real(thresholds):
        raise InputError("thresholds: expected a number or a 1-D array of numbers")
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if t.ndim != 1 or t.size == 0:
        raise InputError(f"thresholds: expected a non-empty 1-D array, got shape {t.shape}")
    if np.isnan(t).any():
        raise NonFiniteError("thresholds: NaN is not a threshold")
    return t


def _merged_unique(a_sorted: np.ndarray, b_sorted: np.ndarray) -> np.ndarray:
    """Distinct values of two sorted arrays, sorted (timsort merges the two runs in O(n))."""
    t = np.concatenate([a_sorted, b_sorted])
    t.sort(kind="stable")
    keep = np.empty(t.size, dtype=bool)
    keep[0] = True
    np.not_equal(t[1:], t[:-1], out=keep[1:])
    return t[keep]


def _kth_largest_threshold(scores: np.ndarray, dtype: np.dtype, k: int) -> float:
    """Smallest threshold admitting at most k scores, by selection (O(n), no full sort)."""
    n = scores.size
    if k >= n:
        return -math.inf
    v = np.partition(scores, n - k - 1)[n - k - 1]
    return _next_up(float(v), dtype)


def _threshold_sorted(imp_sorted: np.ndarray, target: float, dtype: np.dtype, k: int) -> float:
    """Smallest threshold admitting at most k impostor scores (imp_sorted ascending)."""
    n = imp_sorted.size
    if k >= n:
        return -math.inf
    return _next_up(float(imp_sorted[n - k - 1]), dtype)


def _conservative_count(target: float, n: int, confidence: float, method: str) -> int | None:
    """Largest k whose one-sided upper confidence bound on k/n is <= target (None if none)."""
    # one-sided bound at `confidence` == upper end of a two-sided interval at 2*confidence-1
    two_sided = 2 * confidence - 1
    k_max = _allowed_count(target, n)
    ks = np.arange(0, k_max + 1)
    _, hi, _ = binomial_ci(ks, np.full(ks.shape, n), two_sided, method)
    ok = np.nonzero(hi <= target)[0]
    return int(ok[-1]) if ok.size else None


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
    (target,) = _targets(fmr, "fmr")
    dtype = _score_dtype(impostor)
    imp = _scores(impostor, "impostor")
    n = imp.size
    if conservative:
        k = _conservative_count(target, n, _confidence(confidence), method)
        if k is None:
            raise InputError(
                f"cannot bound the FMR below {target:g} with {confidence:.0%} confidence from "
                f"{n} impostor scores even with no false match; provide at least "
                f"{min_comparisons_for(target)} impostor scores or use conservative=False"
            )
    else:
        k = _allowed_count(target, n)
    return _kth_largest_threshold(imp, dtype, k)


def _support(target: float, n: int, what: str) -> tuple[bool, str | None]:
    need = min_comparisons_for(target)
    if n >= need:
        return True, None
    return False, (
        f"only {n} {what}; a rate of {target:g} needs at least {need} (rule of three: "
        f"ceil(3/{target:g})) before an observed rate can show it"
    )


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
    targets = _targets(fmr, "fmr")
    confidence = _confidence(confidence)
    if ci not in (*_CI_METHODS, "bootstrap"):
        raise InputError(f"ci: expected one of {(*_CI_METHODS, 'bootstrap')}, got {ci!r}")
    if ci == "bootstrap" and (not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 10):
        raise InputError(f"n_bootstrap: expected an integer >= 10, got {n_bootstrap!r}")
    fte_v = _rate_arg(fte, "fte")
    fta_v = _rate_arg(fta, "fta")
    dtype = _score_dtype(genuine, impostor)
    g = np.sort(_scores(genuine, "genuine"))
    imp = np.sort(_scores(impostor, "impostor"))
    rng = np.random.default_rng(seed) if ci == "bootstrap" else None
    out = []
    for target in targets:
        k = _allowed_count(target, imp.size)
        t = _threshold_sorted(imp, target, dtype, k)
        fm, fnm, fmr_v, fnmr_v = _rates_sorted(g, imp, np.array([t]))
        fm_i, fnm_i = int(fm[0]), int(fnm[0])
        if rng is not None:
            fmr_ci = _interval(fm_i, imp.size, confidence, "auto")
            fnmr_ci = _bootstrap_fnmr(g, imp, k, dtype, confidence, n_bootstrap, rng)
        else:
            fmr_ci = _interval(fm_i, imp.size, confidence, ci)
            fnmr_ci = _interval(fnm_i, g.size, confidence, ci)
        ok, why = _support(target, imp.size, "impostor comparisons")
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
    g = np.sort(_scores(genuine, "genuine"))
    imp = np.sort(_scores(impostor, "impostor"))
    top = max(g[-1], imp[-1])
    t = np.append(_merged_unique(g, imp), np.nextafter(top, np.inf))
    _, _, fmr, fnmr = _rates_sorted(g, imp, t)
    d = fnmr - fmr  # non-decreasing from -1 (T = min) to +1 (T > max)
    i = int(np.searchsorted(d, 0.0, side="left"))
    if i == 0 or d[i] == 0.0:
        return EERResult(float((fmr[i] + fnmr[i]) / 2), float(t[i]), float(fmr[i]), float(fnmr[i]))
    lam = -d[i - 1] / (d[i] - d[i - 1])
    rate = fmr[i - 1] + lam * (fmr[i] - fmr[i - 1])
    j = i if abs(d[i]) <= abs(d[i - 1]) else i - 1
    return EERResult(float(rate), float(t[j]), float(fmr[j]), float(fnmr[j]))


def _curve_thresholds(g: np.ndarray, imp: np.ndarray, max_points: int) -> np.ndarray:
    """Thresholds for a DET curve: all distinct scores, or a log-spaced selection of tails."""
    top = max(g[-1], imp[-1])
    allt = _merged_unique(g, imp)
    if allt.size + 1 <= max_points:
        return np.append(allt, np.nextafter(top, np.inf))
    m = max(max_points // 3, 2)
    # impostor upper tail: FMR log-spaced from 1/n to 1 -> thresholds at order statistics
    r_imp = np.unique(np.geomspace(1, imp.size, m).astype(np.int64))
    r_gen = np.unique(np.geomspace(1, g.size, m).astype(np.int64))
    t = np.concatenate(
        [
            imp[imp.size - r_imp],
            g[r_gen - 1],
            np.quantile(allt, np.linspace(0, 1, m)),
            [np.nextafter(top, np.inf)],
        ]
    )
    return np.unique(t)


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
    g = np.sort(_scores(genuine, "genuine"))
    imp = np.sort(_scores(impostor, "impostor"))
    t = _curve_thresholds(g, imp, int(max_points))
    _, _, fmr, fnmr = _rates_sorted(g, imp, t)
    return ErrorCurve(t, fmr, fnmr, int(g.size), int(imp.size))


# ----------------------------------------------------------------------------- 1:N


def _ranks(x: Any, name: str) -> np.ndarray:
    if not _is_real(x):
        raise InputError(f"{name}: expected integer ranks (1 = best, 0 = mate not returned)")
    a = np.asarray(x)
    if a.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.size == 0:
        raise EmptyInputError(f"{name}: expected at least one mated search, got none")
    a64 = a.astype(np.float64)
    if np.isnan(a64).any() or np.any(a64 != np.round(a64)) or np.any(a64 < 0):
        raise InputError(
            f"{name}: expected non-negative integer ranks (1 = best, 0 = mate not in the list)"
        )
    return a64.astype(np.int64)


def _mated(mated_rank: Any, mated_score: Any) -> tuple[np.ndarray, np.ndarray]:
    r = _ranks(mated_rank, "mated_rank")
    s = _scores(mated_score, "mated_score", allow_neg_inf=True)
    if s.size != r.size:
        raise InputError(
            f"mated_score has {s.size} entries but mated_rank has {r.size}; "
            "give one rank and one score per mated search"
        )
    s = np.where(r == 0, -np.inf, s)  # a mate not returned never passes a threshold
    return r, s


def _max_rank(max_rank: int | None) -> int | None:
    if max_rank is None:
        return None
    if not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise InputError(f"max_rank: expected a positive integer or None, got {max_rank!r}")
    return int(max_rank)


def _mate_scores_within(r: np.ndarray, s: np.ndarray, max_rank: int | None) -> np.ndarray:
    """Sorted scores of mates found at rank <= R (others -> -inf)."""
    found = r >= 1
    if max_rank is not None:
        found &= r <= max_rank
    return np.sort(np.where(found, s, -np.inf))


def _fnir_counts(mate_sorted: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    # missed = not found within rank, or score < T  ==  (score_within < T) with -inf for misses;
    # -inf < T for every T > -inf; at T = -inf only the rank misses count.
    fn = np.searchsorted(mate_sorted, thresholds, side="left")
    at_neg_inf = thresholds == -np.inf
    if at_neg_inf.any():
        fn = np.where(at_neg_inf, np.count_nonzero(mate_sorted == -np.inf), fn)
    return fn.astype(np.int64)


def fpir_fnir(
    mated_rank: Any,
    mated_score: Any,
    non_mated_top_score: Any,
    thresholds: Any,
    *,
    max_rank: int | None = 1,
) -> ErrorCurve:
    """FPIR and FNIR at given thresholds (NIST FRVT 1:N definitions).

    Parameters
    ----------
    mated_rank : array_like of int, (n_mated,)
        Rank of the true identity in each mated search's candidate list
        (1 = top); 0 when the mate is not in the list.
    mated_score : array_like, (n_mated,)
        Score of the true identity (ignored where the rank is 0; -inf allowed).
    non_mated_top_score : array_like, (n_non_mated,)
        Top candidate score of each non-mated search (-inf for an empty list).
    thresholds : array_like, (K,)
        Thresholds; a candidate is returned when ``score >= T``. ``-inf`` gives
        the pure rank-based miss rate.
    max_rank : int or None
        ``R``: a mate counts only at rank <= R; None = anywhere in the list.
        Default 1: the top candidate decides (lights-out identification);
        pass the candidate-list length L to count a mate anywhere in the list.

    Returns
    -------
    ErrorCurve
        ``kind="identification"``: ``fmr`` holds FPIR and ``fnmr`` holds FNIR;
        ``n_genuine`` = mated and ``n_impostor`` = non-mated searches.
    """
    r, s = _mated(mated_rank, mated_score)
    nm = np.sort(_scores(non_mated_top_score, "non_mated_top_score", allow_neg_inf=True))
    t = np.sort(_threshold_array(thresholds))
    mate = _mate_scores_within(r, s, _max_rank(max_rank))
    fn = _fnir_counts(mate, t)
    fp = nm.size - np.searchsorted(nm, t, side="left")
    return ErrorCurve(t, fp / nm.size, fn / r.size, int(r.size), int(nm.size), "identification")


def threshold_for_fpir(
    non_mated_top_score: Any,
    fpir: float,
    *,
    conservative: bool = False,
    confidence: float = 0.95,
    method: str = "auto",
) -> float:
    """Smallest threshold whose empirical FPIR is <= ``fpir``.

    Same rule as :func:`threshold_for_fmr`, applied to the top candidate score
    of each non-mated search (-inf allowed for empty candidate lists).
    """
    (target,) = _targets(fpir, "fpir")
    nm = _scores(non_mated_top_score, "non_mated_top_score", allow_neg_inf=True)
    dtype = _score_dtype(non_mated_top_score)
    n = nm.size
    if conservative:
        k = _conservative_count(target, n, _confidence(confidence), method)
        if k is None:
            raise InputError(
                f"cannot bound the FPIR below {target:g} with {confidence:.0%} confidence from "
                f"{n} non-mated searches; provide at least {min_comparisons_for(target)} "
                "or use conservative=False"
            )
    else:
        k = _allowed_count(target, n)
    return _kth_largest_threshold(nm, dtype, k)


def fnir_at_fpir(
    mated_rank: Any,
    mated_score: Any,
    non_mated_top_score: Any,
    fpir: Any = DEFAULT_FPIR_TARGETS,
    *,
    max_rank: int | None = 1,
    confidence: float = 0.95,
    ci: str = "auto",
) -> list[IdentificationPoint]:
    """FNIR at each target FPIR (the FRVT 1:N table).

    The threshold of each target is :func:`threshold_for_fpir` on the
    non-mated top scores; FNIR counts the mated searches whose mate is not
    returned at rank <= ``max_rank`` with score >= threshold.

    Parameters
    ----------
    mated_rank, mated_score, non_mated_top_score :
        As in :func:`fpir_fnir`.
    fpir : float or sequence of float
        Targets in (0, 1); default 0.003, 0.01, 0.1.
    max_rank : int or None
        ``R`` (default 1).
    confidence : float
        Coverage of the binomial intervals.
    ci : {"auto", "clopper-pearson", "wilson"}
        Interval method.

    Returns
    -------
    list of IdentificationPoint
        One per target; flagged ``supported=False`` when there are fewer than
        ``ceil(3/target)`` non-mated searches.
    """
    targets = _targets(fpir, "fpir")
    confidence = _confidence(confidence)
    if ci not in _CI_METHODS:
        raise InputError(f"ci: expected one of {_CI_METHODS}, got {ci!r}")
    mr = _max_rank(max_rank)
    r, s = _mated(mated_rank, mated_score)
    dtype = _score_dtype(non_mated_top_score)
    nm = np.sort(_scores(non_mated_top_score, "non_mated_top_score", allow_neg_inf=True))
    mate = _mate_scores_within(r, s, mr)
    out = []
    for target in targets:
        k = _allowed_count(target, nm.size)
        t = _threshold_sorted(nm, target, dtype, k)
        fp = int(nm.size - np.searchsorted(nm, t, side="left"))
        fn = int(_fnir_counts(mate, np.array([t]))[0])
        ok, why = _support(target, nm.size, "non-mated searches")
        out.append(
            IdentificationPoint(
                target_fpir=target,
                threshold=t,
                fpir=fp / nm.size,
                fnir=fn / r.size,
                fpir_ci=_interval(fp, nm.size, confidence, ci),
                fnir_ci=_interval(fn, r.size, confidence, ci),
                false_positives=fp,
                false_negatives=fn,
                n_mated=int(r.size),
                n_non_mated=int(nm.size),
                max_rank=mr,
                supported=ok,
                reason=why,
            )
        )
    return out


def identification_det_curve(
    mated_rank: Any,
    mated_score: Any,
    non_mated_top_score: Any,
    *,
    max_rank: int | None = 1,
    max_points: int = 2000,
) -> ErrorCurve:
    """FNIR against FPIR over thresholds (the 1:N DET curve).

    Thresholds are chosen as in :func:`det_curve` from the mates' scores and
    the non-mated top scores; every point is exact.
    """
    if not isinstance(max_points, (int, np.integer)) or max_points < 10:
        raise InputError(f"max_points: expected an integer >= 10, got {max_points!r}")
    r, s = _mated(mated_rank, mated_score)
    nm = np.sort(_scores(non_mated_top_score, "non_mated_top_score", allow_neg_inf=True))
    mate = _mate_scores_within(r, s, _max_rank(max_rank))
    fin_m = mate[np.isfinite(mate)]
    fin_n = nm[np.isfinite(nm)]
    if fin_m.size == 0 or fin_n.size == 0:
        t = np.array([-np.inf, np.inf])
    else:
        t = _curve_thresholds(fin_m, fin_n, int(max_points))
    fn = _fnir_counts(mate, t)
    fp = nm.size - np.searchsorted(nm, t, side="left")
    return ErrorCurve(t, fp / nm.size, fn / r.size, int(r.size), int(nm.size), "identification")


def cmc(
    mated_rank: Any,
    max_rank: int | None = None,
    *,
    confidence: float = 0.95,
    ci: str = "auto",
) -> CMCCurve:
    """Cumulative match characteristic and rank-k miss rates (threshold-free).

    Parameters
    ----------
    mated_rank : array_like of int, (n_mated,)
        Rank of the mate in each mated search (1 = top, 0 = not returned).
    max_rank : int or None
        Last rank of the curve; default the largest rank observed (at least 1).
    confidence, ci :
        Binomial interval on the miss rate at each rank.

    Returns
    -------
    CMCCurve
    """
    r = _ranks(mated_rank, "mated_rank")
    mr = _max_rank(max_rank)
    if mr is None:
        mr = max(int(r.max()), 1)
    counts = np.bincount(r[(r >= 1) & (r <= mr)], minlength=mr + 1)[1:]
    hits = np.cumsum(counts)
    misses = r.size - hits
    lo, hi, _ = binomial_ci(misses, np.full(misses.shape, r.size), confidence, ci)
    return CMCCurve(
        ranks=np.arange(1, mr + 1, dtype=np.int64),
        hit_rate=hits / r.size,
        miss_rate=misses / r.size,
        ci_low=np.asarray(lo, dtype=np.float64),
        ci_high=np.asarray(hi, dtype=np.float64),
        n_mated=int(r.size),
    )


def rank_miss_rate(mated_rank: Any, rank: int = 1) -> float:
    """Fraction of mated searches whose mate is not at rank <= ``rank``."""
    r = _ranks(mated_rank, "mated_rank")
    k = _max_rank(rank)
    if k is None:
        raise InputError("rank: expected a positive integer, got None")
    return float(np.count_nonzero((r == 0) | (r > k)) / r.size)


# ----------------------------------------------------------------------------- ISO/IEC 19795-1


def _rate_arg(v: Any, name: str) -> float:
    if not isinstance(v, (int, float, np.floating, np.integer)) or not (0.0 <= float(v) <= 1.0):
        raise InputError(f"{name}: expected a rate in [0, 1], got {v!r}")
    return float(v)


def failure_rate(
    failures: int, attempts: int, *, confidence: float = 0.95, ci: str = "auto"
) -> FailureRate:
    """FTE or FTA as ISO/IEC 19795-1 counts them: failures over attempts.

    FTE: persons for whom enrolment could not be completed / persons who
    attempted enrolment. FTA: attempts where no sample of sufficient quality
    was acquired / all attempts. Neither set of failures contributes
    comparisons to FMR/FNMR; fold them back with :func:`generalized_rates`.
    """
    for name, v in (("failures", failures), ("attempts", attempts)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"{name}: expected a non-negative integer count, got {v!r}")
    if attempts == 0:
        raise EmptyInputError("attempts: expected at least one attempt, got 0")
    if failures > attempts:
        raise InputError(f"failures ({failures}) cannot exceed attempts ({attempts})")
    return FailureRate(
        float(failures / attempts),
        int(failures),
        int(attempts),
        _interval(int(failures), int(attempts), _confidence(confidence), ci),
    )


def generalized_rates(
    fmr: float, fnmr: float, *, fte: float | FailureRate = 0.0, fta: float | FailureRate = 0.0
) -> GeneralizedRates:
    """Generalized FAR/FRR of ISO/IEC 19795-1 from FMR, FNMR, FTE and FTA.

    ``GFAR = FMR (1 - FTA)(1 - FTE)``;
    ``GFRR = FTE + (1 - FTE) FTA + (1 - FTE)(1 - FTA) FNMR``.

    Parameters
    ----------
    fmr, fnmr : float
        Rates measured on the comparisons that could be made.
    fte, fta : float or FailureRate
        Failure-to-enrol and failure-to-acquire rates.
    """
    f_e = fte.rate if isinstance(fte, FailureRate) else _rate_arg(fte, "fte")
    f_a = fta.rate if isinstance(fta, FailureRate) else _rate_arg(fta, "fta")
    fm = _rate_arg(fmr, "fmr")
    fnm = _rate_arg(fnmr, "fnmr")
    gfar = fm * (1 - f_a) * (1 - f_e)
    gfrr = f_e + (1 - f_e) * f_a + (1 - f_e) * (1 - f_a) * fnm
    return GeneralizedRates(gfar, gfrr, fm, fnm, f_e, f_a)
