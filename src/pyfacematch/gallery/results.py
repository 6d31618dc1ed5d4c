"""Result types of searches and decisions: what :class:`~pyfacematch.gallery.Gallery` returns.

:class:`Decision` says which threshold decided and what; :class:`Candidate` is one ranked
identity; :class:`IdentifyResult` / :class:`VerifyResult` are the per-probe results of 1:N and
1:1 searches, :class:`IdentifyArrays` the vectorised form used by bulk jobs. Pure data, no logic
beyond conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Candidate", "Decision", "IdentifyArrays", "IdentifyResult", "VerifyResult"]


@dataclass(frozen=True)
class Decision:
    """Which threshold decided, and what it decided.

    Attributes
    ----------
    accepted : bool or None
        ``score >= threshold``; None when no threshold applies.
    threshold : float or None
    source : str
        ``"explicit"`` (passed to the call), ``"calibrated-fmr"`` /
        ``"calibrated-fpir"`` (stored in the gallery) or ``"none"``.
    target : float or None
        The calibrated target rate, when ``source`` is calibrated.
    """

    accepted: bool | None
    threshold: float | None
    source: str
    target: float | None = None


@dataclass(frozen=True)
class Candidate:
    """One ranked identity: its id and its best template score (cosine)."""

    identity: str
    score: float


@dataclass(frozen=True)
class IdentifyResult:
    """Result of one probe: ranked candidates (best first) and the decision on the first."""

    candidates: tuple[Candidate, ...]
    decision: Decision

    @property
    def identity(self) -> str | None:
        """The top candidate if the decision accepted it, else None."""
        if self.decision.accepted and self.candidates:
            return self.candidates[0].identity
        return None


@dataclass(frozen=True)
class VerifyResult:
    """Result of a 1:1 comparison: best score over the identity's templates."""

    identity: str
    score: float
    decision: Decision


@dataclass(frozen=True)
class IdentifyArrays:
    """Vectorised identify results for bulk jobs.

    Attributes
    ----------
    identities : object array (M, k)
        Identity ids, ``None`` where fewer than ``k`` candidates.
    scores : float32 (M, k)
        Best template score per candidate, NaN padding.
    accepted : bool (M,) or None
        Decision on the top candidate (None when no threshold applies).
    threshold, source, target
        As in :class:`Decision`.
    tids : int64 (M, k) or None
        Template id of each candidate's best template (-1 padding), when asked for
        (``with_tids=True``): the key that breaks ties between equal scores (the lower id wins),
        which a sharded search needs to merge per-shard lists in one gallery's order.
    """

    identities: np.ndarray
    scores: np.ndarray
    accepted: np.ndarray | None
    threshold: float | None
    source: str
    target: float | None = None
    tids: np.ndarray | None = None

    def results(self) -> list[IdentifyResult]:
        """The same results as a list of :class:`IdentifyResult`."""
        out = []
        for i in range(self.scores.shape[0]):
            cands = tuple(
                Candidate(str(n), float(s))
                for n, s in zip(self.identities[i], self.scores[i])
                if n is not None
            )
            acc = None if self.accepted is None else bool(self.accepted[i])
            out.append(
                IdentifyResult(cands, Decision(acc, self.threshold, self.source, self.target))
            )
        return out
