"""Input checks shared by every metric: score arrays, targets, ranks, rates, confidences.

Each function validates an argument and returns it in the form the metrics compute with, or
raises a typed error of :mod:`pyfacematch.errors` that says what was expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyfacematch.errors import EmptyInputError, InputError, NonFiniteError

__all__ = [
    "CI_METHODS",
    "as_scores",
    "score_dtype",
    "as_targets",
    "is_real",
    "as_confidence",
    "as_thresholds",
    "as_rate",
    "as_ranks",
    "as_max_rank",
]

#: binomial interval methods accepted by every ``ci=``/``method=`` argument
CI_METHODS: tuple[str, ...] = ("auto", "clopper-pearson", "wilson")


def as_scores(x: Any, name: str, *, allow_neg_inf: bool = False) -> np.ndarray:
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


def score_dtype(*arrays: Any) -> np.dtype:
    """Float dtype in which thresholds are made: the widest float input, else float64."""
    dts = [np.asarray(a).dtype for a in arrays]
    floats = [d for d in dts if np.issubdtype(d, np.floating)]
    if floats and all(d in (np.float16, np.float32, np.float64) for d in floats):
        return np.result_type(*floats)
    return np.dtype(np.float64)


def as_targets(t: Any, name: str) -> tuple[float, ...]:
    arr = np.atleast_1d(np.asarray(t, dtype=np.float64)) if is_real(t) else None
    if arr is None or arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name}: expected a number or a non-empty list of numbers in (0, 1)")
    bad = ~((arr > 0) & (arr < 1))
    if bad.any():
        raise InputError(
            f"{name}: every target must lie strictly between 0 and 1, got {arr[bad].tolist()}"
        )
    return tuple(float(v) for v in arr)


def is_real(t: Any) -> bool:
    try:
        a = np.asarray(t)
    except Exception:  # pragma: no cover
        return False
    return a.dtype != object and (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    )


def as_confidence(c: float) -> float:
    if not (isinstance(c, (int, float, np.floating)) and 0.0 < float(c) < 1.0):
        raise InputError(f"confidence: expected a number in (0, 1) such as 0.95, got {c!r}")
    return float(c)


def as_thresholds(thresholds: Any) -> np.ndarray:
    if not is_real(thresholds):
        raise InputError("thresholds: expected a number or a 1-D array of numbers")
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if t.ndim != 1 or t.size == 0:
        raise InputError(f"thresholds: expected a non-empty 1-D array, got shape {t.shape}")
    if np.isnan(t).any():
        raise NonFiniteError("thresholds: NaN is not a threshold")
    return t


def as_rate(v: Any, name: str) -> float:
    if not isinstance(v, (int, float, np.floating, np.integer)) or not (0.0 <= float(v) <= 1.0):
        raise InputError(f"{name}: expected a rate in [0, 1], got {v!r}")
    return float(v)


def as_ranks(x: Any, name: str) -> np.ndarray:
    if not is_real(x):
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


def as_max_rank(max_rank: int | None) -> int | None:
    if max_rank is None:
        return None
    if not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise InputError(f"max_rank: expected a positive integer or None, got {max_rank!r}")
    return int(max_rank)
