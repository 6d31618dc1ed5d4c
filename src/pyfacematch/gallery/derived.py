"""Validation of derived data read from a gallery file: tuning and checkpoint parameters.

Search-index parameters (tuned depths, measured recall, the binary backend's
centre, IVF training size …) are stored as JSON beside the templates. They are
*derived*: the gallery can always re-tune or rebuild them from the templates.
So a malformed value must never stop a gallery from opening, nor be used: a
NaN centre, for example, turns every binary code into the same code and
silently drops recall. :func:`parse_params` returns the parameters when they
are well formed and ``None`` otherwise (with the reason), and the caller treats
``None`` as "absent": re-tune, or rebuild the index from the store.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "parse_params"]

#: Largest shortlist depth or size accepted from a file (a crafted 10**18 would
#: otherwise become an allocation).
MAX_DEPTH = 1 << 31

# key -> (kind, minimum); every key is optional, ``None`` allowed where noted
_INT_KEYS = {
    "depth": 1,
    "scan_depth": 1,
    "pq_shortlist": 1,
    "tuned_size": 0,
    "trained_size": 0,
}
_NULLABLE = {"depth", "scan_depth", "measured_recall"}
_UNIT = 1.0 + 1e-6


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def parse_params(text: str | None, dim: int) -> tuple[dict[str, Any] | None, str | None]:
    """Parse and check index parameters stored as JSON.

    Parameters
    ----------
    text : str or None
        The stored JSON text (None when absent).
    dim : int
        Template dimension of the gallery (length of a ``center``).

    Returns
    -------
    params : dict or None
        The parameters, or None when absent or not usable.
    reason : str or None
        Why they are not usable (None when they are, or when absent).
    """
    if text is None:
        return None, None
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, TypeError, RecursionError) as exc:
        return None, f"not valid JSON ({str(exc)[:80]})"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    for key, lo in _INT_KEYS.items():
        if key not in obj or (obj[key] is None and key in _NULLABLE):
            continue
        v = obj[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= MAX_DEPTH:
            return None, f"{key}={str(v)[:40]} is not an integer in [{lo}, {MAX_DEPTH}]"
    rec = obj.get("measured_recall")
    if rec is not None and (
        isinstance(rec, bool) or not isinstance(rec, (int, float)) or not 0.0 <= rec <= 1.0
    ):
        return None, f"measured_recall={str(rec)[:40]} is not a number in [0, 1]"
    if "center" in obj and obj["center"] is not None:
        c = obj["center"]
        if not isinstance(c, list) or len(c) != dim:
            n = len(c) if isinstance(c, list) else type(c).__name__
            return None, f"center holds {n} values, expected a list of {dim}"
        # the centre is a mean of unit vectors: every coordinate lies in [-1, 1]
        if not all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and -_UNIT <= v <= _UNIT
            for v in c
        ):
            return None, "center holds a value that is not a number in [-1, 1]"
    return obj, None
