"""Which threshold decides: an explicit one, else the calibrated one stored in the gallery.

:class:`Thresholds` caches the gallery's calibrated ``"fmr"`` (1:1) and
``"fpir"`` (1:N) records (:class:`~pyfacematch.gallery.calibration.ThresholdRecord`)
and applies the rule: a threshold passed to the call wins (source
``"explicit"``), else the stored one of the kind the call needs (source
``"calibrated-<kind>"``), else no decision (source ``"none"``). A decision
accepts when ``score >= threshold``.
"""

from __future__ import annotations

import numpy as np

from pyfacematch.errors import InputError, NonFiniteError
from pyfacematch.gallery.calibration import ThresholdRecord
from pyfacematch.gallery.store import Store

__all__ = ["Thresholds", "accept_top"]


def accept_top(scores: np.ndarray, threshold: float | None) -> np.ndarray | None:
    """The 1:N decision per probe: is the top candidate's score ``>= threshold``?

    Parameters
    ----------
    scores : float (M, k)
        Ranked candidate scores, best first; NaN (nothing comparable) and an empty row never
        accept.
    threshold : float or None
        None: no decision (returns None).

    Returns
    -------
    bool (M,) or None
        Compared in float64, not float32, so a threshold between two float32 values decides as
        written.
    """
    if threshold is None:
        return None
    m = scores.shape[0]
    top = scores[:, 0] if scores.ndim == 2 and scores.shape[1] else np.full(m, np.nan)
    return np.asarray(np.nan_to_num(top.astype(np.float64), nan=-np.inf) >= threshold)


class Thresholds:
    """The calibrated thresholds of one gallery's store, cached.

    Parameters
    ----------
    store : Store
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, ThresholdRecord | None] = {}

    def get(self, kind: str) -> ThresholdRecord | None:
        """The stored ``"fmr"`` or ``"fpir"`` threshold, or None (read from the store)."""
        if kind not in ("fmr", "fpir"):
            raise InputError(f"threshold kind is 'fmr' or 'fpir', got {kind!r}")
        return self._store.get_threshold(kind)

    def save(self, rec: ThresholdRecord) -> None:
        """Store a calibrated threshold (it replaces the one of its kind)."""
        self._store.set_threshold(rec)
        self._cache[rec.name] = rec

    def clear(self) -> None:
        """Forget cached records (another process may have calibrated)."""
        self._cache.clear()

    def resolve(self, threshold: object, kind: str) -> tuple[float | None, str, float | None]:
        """(value, source, target) of the threshold a decision will use; see the module."""
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(
                threshold, (int, float, np.floating, np.integer)
            ):
                raise InputError(f"threshold must be a number, got {threshold!r}")
            if not np.isfinite(threshold):
                raise NonFiniteError(f"threshold must be finite, got {threshold!r}")
            return float(threshold), "explicit", None
        if kind not in self._cache:
            self._cache[kind] = self._store.get_threshold(kind)
        rec = self._cache[kind]
        if rec is None:
            return None, "none", None
        return rec.value, f"calibrated-{kind}", rec.target
