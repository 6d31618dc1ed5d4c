"""Exact search: the core's SIMD top-k over every template, and the exact ranking of a shortlist.

``exact`` is the backend with recall 1 by definition, the reference of every other one; the
gallery scans with :func:`exact_topk` itself (masked when its templates have region blocks).
:func:`rank_shortlist` is the step every other backend ends with: the candidate rows it found are
scored exactly and the best ``k`` kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyfacematch.core import scoring
from pyfacematch.index.base import Backend
from pyfacematch.index.matrix import TemplateMatrix

__all__ = ["ExactBackend", "exact_topk", "rank_shortlist"]


def exact_topk(
    probes: np.ndarray,
    matrix: np.ndarray,
    k: int,
    probe_masks: np.ndarray | None = None,
    gallery_masks: np.ndarray | None = None,
    blocks: np.ndarray | None = None,
    min_fraction: float = scoring.DEFAULT_MIN_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows of ``matrix`` for each probe (masked cosine when ``blocks`` is given).

    Parameters
    ----------
    probes : float32 (M, d)
    matrix : float32 (N, d)
    k : int
    probe_masks : uint64 (M,) or None
    gallery_masks : uint64 (N,) or None
    blocks : int (B+1,) or None
        Region-block offsets; None scores plain cosine.
    min_fraction : float
        Masked scoring: minimum share of dimensions two templates must share.

    Returns
    -------
    scores : float32 (M, k), rows : int64 (M, k)
        Best first; NaN / -1 padding.
    """
    if blocks is None:
        return scoring.topk(probes, matrix, k)
    return scoring.masked_topk(
        probes,
        matrix,
        k,
        probe_masks,
        gallery_masks,
        blocks,
        min_fraction=min_fraction,
        check_finite=False,  # validated at enrollment
    )


def rank_shortlist(
    probes: np.ndarray,
    matrix: np.ndarray,
    shortlist: np.ndarray,
    k: int,
    probe_masks: np.ndarray | None = None,
    gallery_masks: np.ndarray | None = None,
    blocks: np.ndarray | None = None,
    min_fraction: float = scoring.DEFAULT_MIN_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among each probe's shortlisted rows (masked cosine when ``blocks`` is given).

    The index's re-rank step, on the core's :func:`pyfacematch.rerank`; masks are passed on only
    when the gallery has region blocks.

    Parameters
    ----------
    probes : float32 (M, d)
    matrix : float32 (N, d)
    shortlist : int64 (M, C)
        Candidate rows, -1 padding, duplicates ignored.
    k : int
    probe_masks, gallery_masks, blocks, min_fraction
        As in :func:`exact_topk`.

    Returns
    -------
    scores : float32 (M, k), rows : int64 (M, k)
        Best first; NaN / -1 padding.
    """
    if blocks is None:  # unmasked templates: any masks passed along are meaningless
        return scoring.rerank(probes, matrix, shortlist, k)
    return scoring.rerank(
        probes, matrix, shortlist, k, probe_masks, gallery_masks, blocks, min_fraction
    )


class ExactBackend(Backend):
    """Exact SIMD scan: no structure of its own, nothing to tune or write to a file.

    The gallery scans with :func:`exact_topk` itself (masked when it has region blocks); through
    the interface, :meth:`candidates` is the exact top-k on plain cosine.
    """

    name = "exact"
    approximate = False

    def __init__(self) -> None:
        super().__init__()
        self._n = 0

    def rebuild(self, m: TemplateMatrix) -> None:
        self._n = m.n

    def add(self, m: TemplateMatrix, rows: np.ndarray) -> None:
        self._n = m.n

    def remove(self, m: TemplateMatrix, tids: np.ndarray, moves: list[tuple[int, int]]) -> None:
        self._n = m.n

    @property
    def size(self) -> int:
        return self._n

    def candidates(self, m: TemplateMatrix, probes: np.ndarray, k: int) -> np.ndarray:
        return scoring.topk(np.ascontiguousarray(probes, np.float32), m.view, min(k, m.n))[1]

    def info(self, m: TemplateMatrix) -> dict[str, Any]:
        return {"backend": self.name, "templates": m.n, "measured_recall_at_1": 1.0}
