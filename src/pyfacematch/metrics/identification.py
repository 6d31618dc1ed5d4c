"""1:N identification (NIST FRVT definitions): FPIR/FNIR, FNIR at FPIR, DET, CMC, rank misses."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.metrics.intervals import binomial_ci, interval
from pyfacematch.metrics.thresholds import (
    allowed_count,
    conservative_count,
    curve_thresholds,
    kth_largest_threshold,
    min_comparisons_for,
    support,
    threshold_sorted,
)
from pyfacematch.metrics.types import CMCCurve, ErrorCurve, IdentificationPoint
from pyfacematch.metrics.validation import (
    CI_METHODS,
    as_confidence,
    as_max_rank,
    as_ranks,
    as_scores,
    as_targets,
    as_thresholds,
    score_dtype,
)

__all__ = [
    "DEFAULT_FPIR_TARGETS",
    "fpir_fnir",
    "threshold_for_fpir",
    "fnir_at_fpir",
    "identification_det_curve",
    "cmc",
    "rank_miss_rate",
]

DEFAULT_FPIR_TARGETS: tuple[float, ...] = (0.003, 0.01, 0.1)


def _mated(mated_rank: Any, mated_score: Any) -> tuple[np.ndarray, np.ndarray]:
    r = as_ranks(mated_rank, "mated_rank")
    s = as_scores(mated_score, "mated_score", allow_neg_inf=True)
    if s.size != r.size:
        raise InputError(
            f"mated_score has {s.size} entries but mated_rank has {r.size}; "
            "give one rank and one score per mated search"
        )
    s = np.where(r == 0, -np.inf, s)  # a mate not returned never passes a threshold
    return r, s


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
    nm = np.sort(as_scores(non_mated_top_score, "non_mated_top_score", allow_neg_inf=True))
    t = np.sort(as_thresholds(thresholds))
    mate = _mate_scores_within(r, s, as_max_rank(max_rank))
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
    (target,) = as_targets(fpir, "fpir")
    nm = as_scores(non_mated_top_score, "non_mated_top_score", allow_neg_inf=True)
    dtype = score_dtype(non_mated_top_score)
    n = nm.size
    if conservative:
        k = conservative_count(target, n, as_confidence(confidence), method)
        if k is None:
            raise InputError(
                f"cannot bound the FPIR below {target:g} with {confidence:.0%} confidence from "
                f"{n} non-mated searches; provide at least {min_comparisons_for(target)} "
                "or use conservative=False"
            )
    else:
        k = allowed_count(target, n)
    return kth_largest_threshold(nm, dtype, k)


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
    targets = as_targets(fpir, "fpir")
    confidence = as_confidence(confidence)
    if ci not in CI_METHODS:
        raise InputError(f"ci: expected one of {CI_METHODS}, got {ci!r}")
    mr = as_max_rank(max_rank)
    r, s = _mated(mated_rank, mated_score)
    dtype = score_dtype(non_mated_top_score)
    nm = np.sort(as_scores(non_mated_top_score, "non_mated_top_score", allow_neg_inf=True))
    mate = _mate_scores_within(r, s, mr)
    out = []
    for target in targets:
        k = allowed_count(target, nm.size)
        t = threshold_sorted(nm, target, dtype, k)
        fp = int(nm.size - np.searchsorted(nm, t, side="left"))
        fn = int(_fnir_counts(mate, np.array([t]))[0])
        ok, why = support(target, nm.size, "non-mated searches")
        out.append(
            IdentificationPoint(
                target_fpir=target,
                threshold=t,
                fpir=fp / nm.size,
                fnir=fn / r.size,
                fpir_ci=interval(fp, nm.size, confidence, ci),
                fnir_ci=interval(fn, r.size, confidence, ci),
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
    nm = np.sort(as_scores(non_mated_top_score, "non_mated_top_score", allow_neg_inf=True))
    mate = _mate_scores_within(r, s, as_max_rank(max_rank))
    fin_m = mate[np.isfinite(mate)]
    fin_n = nm[np.isfinite(nm)]
    if fin_m.size == 0 or fin_n.size == 0:
        t = np.array([-np.inf, np.inf])
    else:
        t = curve_thresholds(fin_m, fin_n, int(max_points))
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
    r = as_ranks(mated_rank, "mated_rank")
    mr = as_max_rank(max_rank)
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
    r = as_ranks(mated_rank, "mated_rank")
    k = as_max_rank(rank)
    if k is None:
        raise InputError("rank: expected a positive integer, got None")
    return float(np.count_nonzero((r == 0) | (r > k)) / r.size)
