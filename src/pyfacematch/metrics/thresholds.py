"""Thresholds from order statistics: allowed error counts, the rule of three, curve points.

The threshold for a target rate ``a`` on ``n`` scores admits at most ``floor(a n)`` of them; it is
the next representable number above the ``(k+1)``-th largest score in the scores' own float type.
"""

from __future__ import annotations

import math

import numpy as np

from pyfacematch.metrics.intervals import binomial_ci
from pyfacematch.metrics.validation import as_targets

__all__ = [
    "min_comparisons_for",
    "allowed_count",
    "next_up",
    "kth_largest_threshold",
    "threshold_sorted",
    "conservative_count",
    "support",
    "merged_unique",
    "curve_thresholds",
]


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
    (t,) = as_targets(target, "target")
    # guard against 3/1e-3 = 2999.9999999999995 style rounding
    return int(math.ceil(3.0 / t - 1e-9))


def allowed_count(target: float, n: int) -> int:
    """Largest k with k / n <= target (exact in floating point)."""
    k = int(math.floor(target * n))
    while k + 1 <= n and (k + 1) / n <= target:
        k += 1
    while k > 0 and k / n > target:
        k -= 1
    return k


def next_up(value: float, dtype: np.dtype) -> float:
    """Smallest number of ``dtype`` strictly above ``value``, as a Python float."""
    v = dtype.type(value)
    return float(np.nextafter(v, dtype.type(np.inf)))


def kth_largest_threshold(scores: np.ndarray, dtype: np.dtype, k: int) -> float:
    """Smallest threshold admitting at most k scores, by selection (O(n), no full sort)."""
    n = scores.size
    if k >= n:
        return -math.inf
    v = np.partition(scores, n - k - 1)[n - k - 1]
    return next_up(float(v), dtype)


def threshold_sorted(imp_sorted: np.ndarray, target: float, dtype: np.dtype, k: int) -> float:
    """Smallest threshold admitting at most k impostor scores (imp_sorted ascending)."""
    n = imp_sorted.size
    if k >= n:
        return -math.inf
    return next_up(float(imp_sorted[n - k - 1]), dtype)


def conservative_count(target: float, n: int, confidence: float, method: str) -> int | None:
    """Largest k whose one-sided upper confidence bound on k/n is <= target (None if none)."""
    # one-sided bound at `confidence` == upper end of a two-sided interval at 2*confidence-1
    two_sided = 2 * confidence - 1
    k_max = allowed_count(target, n)
    ks = np.arange(0, k_max + 1)
    _, hi, _ = binomial_ci(ks, np.full(ks.shape, n), two_sided, method)
    ok = np.nonzero(hi <= target)[0]
    return int(ok[-1]) if ok.size else None


def support(target: float, n: int, what: str) -> tuple[bool, str | None]:
    need = min_comparisons_for(target)
    if n >= need:
        return True, None
    return False, (
        f"only {n} {what}; a rate of {target:g} needs at least {need} (rule of three: "
        f"ceil(3/{target:g})) before an observed rate can show it"
    )


def merged_unique(a_sorted: np.ndarray, b_sorted: np.ndarray) -> np.ndarray:
    """Distinct values of two sorted arrays, sorted (timsort merges the two runs in O(n))."""
    t = np.concatenate([a_sorted, b_sorted])
    t.sort(kind="stable")
    keep = np.empty(t.size, dtype=bool)
    keep[0] = True
    np.not_equal(t[1:], t[:-1], out=keep[1:])
    return t[keep]


def curve_thresholds(g: np.ndarray, imp: np.ndarray, max_points: int) -> np.ndarray:
    """Thresholds for a DET curve: all distinct scores, or a log-spaced selection of tails."""
    top = max(g[-1], imp[-1])
    allt = merged_unique(g, imp)
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
