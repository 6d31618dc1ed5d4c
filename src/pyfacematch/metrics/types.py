"""Result types of the accuracy metrics: intervals, curves, operating points, rates."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Interval",
    "ErrorCurve",
    "OperatingPoint",
    "EERResult",
    "IdentificationPoint",
    "CMCCurve",
    "FailureRate",
    "GeneralizedRates",
]


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
