"""How a gallery search is computed: exact scan, or backend shortlist + exact re-rank, then fusion.

Every search returns template rows ranked by exact (masked) cosine; an
approximate backend only proposes the shortlist. When identities hold several
templates, the shortlist is widened to every template of each shortlisted
identity (:class:`SiblingExpander`) so an identity's fused score is the best of
all its templates; :func:`fuse` then keeps the best template per identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyfacematch.index import Backend, TemplateMatrix, exact_topk, rank_shortlist
from pyfacematch.index.prepared import PreparedProbes

__all__ = ["SiblingExpander", "approx_search", "exact_search", "fuse"]


def exact_search(
    m: TemplateMatrix,
    probes: np.ndarray,
    k: int,
    pm: np.ndarray | None,
    blocks: np.ndarray | None,
    min_fraction: float,
    backend: Backend | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` template rows: (scores float32 (M, k), rows int64 (M, k)).

    An exact backend with a compact ``store`` scans it (unmasked galleries): compact scan, then the
    float32 re-score of the rows its error bound keeps — the same rows, exact float32 scores.
    """
    if blocks is None and backend is not None and backend.name == "exact" and backend.compact_store:
        if m.n:
            out: tuple[np.ndarray, np.ndarray] = backend.compact_store.topk(m, probes, k)
            return out
    return exact_topk(probes, m.view, k, pm, m.mask_view, blocks, min_fraction)


def approx_search(
    backend: Backend,
    m: TemplateMatrix,
    probes: np.ndarray,
    k: int,
    pm: np.ndarray | None,
    blocks: np.ndarray | None,
    min_fraction: float,
    siblings: SiblingExpander | None,
    prepared: PreparedProbes | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Backend shortlist (widened by ``siblings`` when given), re-ranked exactly.

    ``prepared``: the same probes prepared once for several galleries (their codes memoised).
    """
    cand = backend.shortlist(m, probes, k, prepared)
    if siblings is not None:
        cand = siblings.expand(m, cand)
    if blocks is None and backend.compact_store is not None and cand.shape[1]:
        out: tuple[np.ndarray, np.ndarray] = backend.compact_store.rerank(m, probes, cand, k)
        return out
    return rank_shortlist(probes, m.view, cand, k, pm, m.mask_view, blocks, min_fraction)


class SiblingExpander:
    """Widens a shortlist to every template of each shortlisted identity.

    Keeps a per-identity row table, rebuilt when the matrix layout changes
    (call :meth:`invalidate` whenever rows move).
    """

    def __init__(self) -> None:
        self._version = 0
        self._cache: tuple[Any, ...] | None = None

    def invalidate(self) -> None:
        """Rows moved: the next :meth:`expand` rebuilds its table."""
        self._version += 1

    def expand(self, m: TemplateMatrix, cand: np.ndarray) -> np.ndarray:
        """(M, C) candidate rows, -1 padded → (M, C') rows, -1 padded.

        Duplicates are left to the re-rank.
        """
        key = (m.n, self._version)
        if self._cache is None or self._cache[0] != key:
            owner = m.owner[: m.n]
            order = np.argsort(owner, kind="stable")
            slots_sorted = owner[order]
            n_slots = int(owner.max()) + 1 if m.n else 0
            start = np.searchsorted(slots_sorted, np.arange(n_slots), side="left")
            count = np.searchsorted(slots_sorted, np.arange(n_slots), side="right") - start
            self._cache = (key, order, start, count)
        _, order, start, count = self._cache
        mrows, c = cand.shape
        valid = cand >= 0
        slots = np.where(valid, m.owner[np.maximum(cand, 0)], 0)
        lens = np.where(valid, count[slots], 0).ravel()
        total = int(lens.sum())
        if total == 0:
            return cand
        first = np.repeat(start[slots.ravel()], lens)
        seg_start = np.repeat(np.cumsum(lens) - lens, lens)
        rows = order[first + (np.arange(total) - seg_start)]
        per_probe = lens.reshape(mrows, c).sum(axis=1)
        probe_of = np.repeat(np.arange(mrows), per_probe)
        pos = np.arange(total) - np.repeat(np.cumsum(per_probe) - per_probe, per_probe)
        out = np.full((mrows, int(per_probe.max())), -1, np.int64)
        out[probe_of, pos] = rows
        return out


def fuse(scores: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the best template per identity, first ``k`` identities per row.

    ``scores`` (M, K) are sorted best first (NaN padding), ``slots`` the
    identity slot of each (-1 padding). Returns (scores (M, k'), slots (M, k')).
    """
    m, kk = slots.shape
    if kk == 0:
        return np.zeros((m, 0), np.float32), np.zeros((m, 0), np.int64)
    valid = (slots >= 0) & ~np.isnan(scores)
    dup = np.zeros_like(valid)
    for j in range(1, kk):
        dup[:, j] = (slots[:, :j] == slots[:, j : j + 1]).any(axis=1)
    keep = valid & ~dup
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(keep, order, 1)
    out_s = np.where(kept, np.take_along_axis(scores, order, 1), np.nan).astype(np.float32)
    out_i = np.where(kept, np.take_along_axis(slots, order, 1), -1)
    return out_s[:, : min(k, kk)], out_i[:, : min(k, kk)]
