"""Confidence intervals on counted rates: Clopper-Pearson (exact) or Wilson score."""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.metrics.types import Interval
from pyfacematch.metrics.validation import CI_METHODS, as_confidence

__all__ = ["binomial_ci", "interval"]


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
    confidence = as_confidence(confidence)
    if method not in CI_METHODS:
        raise InputError(f"method: expected one of {CI_METHODS}, got {method!r}")
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


def interval(k: int, n: int, confidence: float, method: str) -> Interval:
    lo, hi, used = binomial_ci(k, n, confidence, method)
    return Interval(float(lo), float(hi), confidence, used)
