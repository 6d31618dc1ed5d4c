"""The interface every search backend implements, and what all of them share.

A backend never owns templates: it reads them from the gallery's
:class:`~pyfacematch.index.matrix.TemplateMatrix` and keeps only its own structure (codes, graph,
lists). The gallery drives it through this interface alone:

- structure: :meth:`Backend.rebuild`, :meth:`~Backend.add`, :meth:`~Backend.remove`,
  :meth:`~Backend.maintenance_due`, :meth:`~Backend.refresh`, :meth:`~Backend.compact`,
  :meth:`~Backend.check_trainable`;
- state: :attr:`~Backend.size`, :attr:`~Backend.active`, :attr:`~Backend.needs_checkpoint`,
  :attr:`~Backend.holds_erased`, :meth:`~Backend.check_consistency`, :meth:`~Backend.info`;
- search: :meth:`~Backend.shortlist` (candidate rows for the exact re-rank, never fewer than
  ``min(k, N)`` per probe), the depth knob (:meth:`~Backend.set_depth`) and :meth:`~Backend.tune`;
- persistence: :meth:`~Backend.serialize` / :meth:`~Backend.deserialize` (the gallery writes and
  checks the files) and :meth:`~Backend.params` / :meth:`~Backend.load_params` (tuned state as
  JSON, validated when read back: a bad value means "re-tune", never a failed open).

Self-tuning: each approximate backend has one depth knob (shortlist length, ``efSearch``,
``nprobe``) chosen by :meth:`Backend.tune` on probes made from the gallery's own templates, so
that recall@1 against the exact search reaches the target (0.99 by default); the gallery re-tunes
when its size doubles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from pyfacematch.core import scoring
from pyfacematch.index.matrix import TemplateMatrix
from pyfacematch.index.options import checked_float, checked_int
from pyfacematch.index.prepared import PreparedProbes

__all__ = ["MAX_DEPTH", "Backend", "complete_shortlist"]

log = logging.getLogger("pyfacematch.index")

#: Largest depth (shortlist length, efSearch, nprobe) a stored tuning may set.
MAX_DEPTH = 1 << 20


class Backend:
    """Interface of a search backend, with the behaviour every backend shares.

    Subclasses implement :meth:`candidates` (and the structure hooks they need); the gallery calls
    :meth:`shortlist`, which adds the guarantees every backend must give.

    Attributes
    ----------
    name : str
        Backend name (``"exact"``, ``"binary"``, ``"flat"``, ``"hnsw"``, ``"ivf"``, ``"ivfpq"``).
    approximate : bool
        False when the shortlist holds the exact top-k (no tuning).
    checkpointable : bool
        The structure is costly to rebuild, so the gallery writes it to a file.
    depth : int or None
        The tuned depth knob.
    """

    name = "base"
    approximate = True
    checkpointable = False

    def __init__(self) -> None:
        self.depth: int | None = None
        self.tuned_size = 0
        self.measured_recall: float | None = None
        self.tune_info: dict[str, Any] = {}
        self.fallback_reason: str | None = None

    # structure ---------------------------------------------------------
    def rebuild(self, m: TemplateMatrix) -> None:
        """Build from every row of ``m``."""

    def add(self, m: TemplateMatrix, rows: np.ndarray) -> None:
        """Rows ``rows`` were appended to ``m``."""

    def remove(self, m: TemplateMatrix, tids: np.ndarray, moves: list[tuple[int, int]]) -> None:
        """Template ids ``tids`` were removed from ``m`` (after ``moves``)."""

    def adopt(self, m: TemplateMatrix, arrays: dict[str, Any]) -> None:
        """Take the structure of the rows of ``m`` from a serving folder instead of building it:
        ``arrays`` holds ``"codes"`` (binary codes) and ``"compact"`` (compact arrays by name).

        Raises
        ------
        ValueError
            This backend is not read from a serving folder, or the arrays do not fit ``m``.
        """
        raise ValueError(f"the {self.name} backend is not read from a serving folder")

    def maintenance_due(self, m: TemplateMatrix) -> bool:
        """True when a rebuild is due (tombstones, retraining)."""
        return False

    def refresh(self, m: TemplateMatrix) -> None:
        """Cheap re-derivation before a re-tune (binary: re-centre the codes)."""

    def compact(self, m: TemplateMatrix) -> None:
        """Drop every trace of removed templates (HNSW: rebuild without tombstones).

        Called before a checkpoint is written while :attr:`holds_erased` is True; the tuned
        depth is kept.
        """

    def check_trainable(self, m: TemplateMatrix) -> None:
        """Raise :class:`~pyfacematch.errors.IndexTrainingError` when ``m`` holds too few
        templates to build the structure (backends that need no training never raise)."""

    @property
    def size(self) -> int:
        """Live templates the structure holds (tombstones excluded)."""
        raise NotImplementedError

    @property
    def active(self) -> bool:
        """False while the backend falls back to the exact scan."""
        return self.fallback_reason is None

    @property
    def needs_checkpoint(self) -> bool:
        """True when the structure is built and costly enough to rebuild to be written to a file."""
        return self.checkpointable and self.active

    @property
    def holds_erased(self) -> bool:
        """True while the structure still holds removed templates (see :meth:`compact`)."""
        return False

    def check_consistency(self, m: TemplateMatrix) -> str | None:
        """The first mismatch between the structure and ``m`` in words, or None."""
        if self.size != m.n:
            return f"{self.name} index holds {self.size} templates, memory {m.n}"
        return None

    # search -------------------------------------------------------------
    def prepare(self, prepared: PreparedProbes) -> None:
        """Derive now, once, what this backend's search computes from the probes alone (the
        binary backend: their sign codes on its centre), memoised in ``prepared``: a copy of it
        sent to another process (a Dask worker holding other shards) then carries it too.
        Backends that derive nothing do nothing."""

    def candidates(
        self,
        m: TemplateMatrix,
        probes: np.ndarray,
        k: int,
        prepared: PreparedProbes | None = None,
    ) -> np.ndarray:
        """This backend's own candidate rows (M, C) int64, -1 padded, for ``k`` answers.

        May hold fewer than ``k`` valid rows for some probes (graph searches that stop early,
        lists too short, tombstones); :meth:`shortlist` completes them.
        """
        raise NotImplementedError

    def shortlist(
        self,
        m: TemplateMatrix,
        probes: np.ndarray,
        k: int,
        prepared: PreparedProbes | None = None,
    ) -> np.ndarray:
        """Candidate rows for the exact re-rank, at least ``min(k, N)`` valid per probe.

        Parameters
        ----------
        m : TemplateMatrix
        probes : float32 (M, d)
            Unit-norm probes.
        k : int
            Answers wanted per probe.

        Returns
        -------
        int64 (M, C)
            Rows of ``m``, -1 padded. When ``k >= N`` every row is a candidate (the re-rank is
            then an exact scan); otherwise a probe for which the backend found fewer than ``k``
            rows gets the exact top-k rows as well (unmasked scores).
        """
        n = m.n
        mp = probes.shape[0]
        if n == 0:
            return np.full((mp, 0), -1, np.int64)
        if k >= n:
            return np.ascontiguousarray(np.broadcast_to(np.arange(n, dtype=np.int64), (mp, n)))
        if not self.active:  # falling back to the exact scan until the structure can be built
            return complete_shortlist(m, probes, np.full((mp, 0), -1, np.int64), k)
        return complete_shortlist(m, probes, self.candidates(m, probes, k, prepared), k)

    def depth_ladder(self, m: TemplateMatrix) -> list[int]:
        """Depths :meth:`tune` tries, shallowest first (empty: not tuned by ladder)."""
        return []

    def set_depth(self, depth: int) -> None:
        """Set the depth knob."""
        self.depth = int(depth)

    # persistence ---------------------------------------------------------
    def serialize(self) -> bytes:
        """The structure as bytes (backends with :attr:`checkpointable`)."""
        raise NotImplementedError(f"the {self.name} backend is rebuilt, never written to a file")

    def deserialize(self, data: bytes, m: TemplateMatrix) -> None:
        """Restore the structure written by :meth:`serialize` for the rows of ``m``.

        Raises
        ------
        GalleryFileError
            The bytes are not a structure of this backend for ``m``.
        """
        raise NotImplementedError(f"the {self.name} backend is rebuilt, never read from a file")

    def params(self) -> dict[str, Any]:
        """Tuned state as JSON-serialisable values."""
        return {
            "depth": self.depth,
            "tuned_size": self.tuned_size,
            "measured_recall": self.measured_recall,
        }

    def load_params(self, p: dict[str, Any]) -> None:
        """Restore :meth:`params` read back from a file.

        The values are derived data: when any is malformed (wrong type, out of range, NaN) the
        whole set is ignored with a warning and the backend stays untuned
        (``tuned_size == 0``), so the gallery re-tunes instead of trusting it.
        """
        bad = self._bad_params(p)
        if bad is not None:
            log.warning("%s backend: stored tuning ignored (%s): re-tuning", self.name, bad)
            self.tuned_size = 0
            self.measured_recall = None
            return
        self._apply_params(p)

    def _bad_params(self, p: Any) -> str | None:
        """Why stored params ``p`` cannot be used, or None (subclasses add their own keys)."""
        if not isinstance(p, dict):
            return f"expected a JSON object, got {type(p).__name__}"
        checks = {
            "depth": lambda v: checked_int(v, 1, MAX_DEPTH),
            "tuned_size": lambda v: checked_int(v, 0, 1 << 62),
            "measured_recall": lambda v: checked_float(v, 0.0, 1.0),
        }
        for key, check in checks.items():
            v = p.get(key)
            if v is not None and check(v) is None:
                return f"{key} = {v!r}"
        return None

    def _apply_params(self, p: dict[str, Any]) -> None:
        if p.get("depth") is not None:
            self.set_depth(int(p["depth"]))
        self.tuned_size = int(p.get("tuned_size") or 0)
        r = p.get("measured_recall")
        self.measured_recall = None if r is None else float(r)

    def info(self, m: TemplateMatrix) -> dict[str, Any]:
        """Backend, templates, depth, measured recall@1, tuning size, fallback reason."""
        return {
            "backend": self.name,
            "templates": m.n,
            "depth": self.depth,
            "measured_recall_at_1": self.measured_recall,
            "tuned_at_size": self.tuned_size,
            "fallback": self.fallback_reason,
            **self.tune_info,
        }

    def code_bytes_per_template(self) -> float:
        """Bytes the structure keeps per template (0 when it keeps none)."""
        return 0.0

    #: A compact copy of the templates the search scans or re-ranks with (exact ``store`` /
    #: binary ``rerank_store``), or None for float32 only.
    compact_store: Any = None

    # tuning ----------------------------------------------------------------
    def tune(
        self,
        m: TemplateMatrix,
        probes: np.ndarray,
        reference_top1: np.ndarray,
        reference_rows: np.ndarray,
        pipeline_top1: Callable[[np.ndarray, int], np.ndarray],
        target: float,
    ) -> float | None:
        """Choose the smallest depth reaching recall@1 ≥ ``target``.

        Parameters
        ----------
        probes : float32 (S, d)
            Tuning probes (perturbed gallery templates).
        reference_top1 : float32 (S,)
            Exact best score of each probe.
        reference_rows : int64 (S,)
            Row of the exact best template of each probe.
        pipeline_top1 : callable (probes, k) -> float32 (S,)
            Best score of the full pipeline (shortlist + exact re-rank) at the
            backend's current depth.
        target : float
            Recall@1 to reach.

        Returns
        -------
        float or None
            The measured recall at the chosen depth (None when not tunable).
        """
        ladder = self.depth_ladder(m)
        if not ladder or not self.active:
            return None
        recall = 0.0
        chosen = ladder[-1]
        tried: list[tuple[int, float]] = []
        for depth in ladder:
            self.set_depth(depth)
            got = pipeline_top1(probes, 1)
            recall = float(np.mean(got >= reference_top1 - 1e-5))
            tried.append((depth, round(recall, 4)))
            if recall >= target:
                chosen = depth
                break
        self.set_depth(chosen)
        if recall < target:
            log.warning(
                "%s backend reaches recall@1 %.4f < %.4f at its deepest setting %d",
                self.name,
                recall,
                target,
                chosen,
            )
        self.measured_recall = recall
        self.tuned_size = m.n
        self.tune_info = {"tuning_curve": tried, "tuning_probes": int(probes.shape[0])}
        return recall


def complete_shortlist(
    m: TemplateMatrix, probes: np.ndarray, cand: np.ndarray, k: int
) -> np.ndarray:
    """Add the exact top-k rows to each probe whose candidates hold fewer than ``min(k, N)`` rows.

    Parameters
    ----------
    m : TemplateMatrix
    probes : float32 (M, d)
    cand : int64 (M, C)
        Candidate rows, -1 padded (duplicates allowed).
    k : int

    Returns
    -------
    int64 (M, C) or (M, C + k)
        ``cand`` itself when every probe has enough distinct rows; otherwise ``cand`` widened by
        ``k`` columns holding, for the short probes only, their exact (unmasked) top-k rows.
    """
    need = min(int(k), m.n)
    mp, c = cand.shape
    if c:
        s = np.sort(cand, axis=1)
        distinct = (s >= 0) & np.concatenate(
            [np.ones((mp, 1), bool), s[:, 1:] != s[:, :-1]], axis=1
        )
        short = distinct.sum(axis=1) < need
    else:
        short = np.ones(mp, bool)
    if not short.any():
        return cand
    _, rows = scoring.topk(np.ascontiguousarray(probes[short]), m.view, need)
    out = np.full((mp, c + need), -1, np.int64)
    out[:, :c] = cand
    out[short, c:] = rows
    return out
