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
from pyfacematch.index.compactstore import STORES, CompactStore
from pyfacematch.index.matrix import TemplateMatrix
from pyfacematch.index.options import Option, check_options
from pyfacematch.index.prepared import PreparedProbes

__all__ = ["EXACT_OPTIONS", "ExactBackend", "exact_topk", "rank_shortlist"]

#: Options of the exact backend (``Gallery(backend="exact", backend_options={"store": "int8"})``).
EXACT_OPTIONS = (
    Option(
        "store",
        "choice",
        0,
        0,
        "float32",
        "templates scanned: float32, or int8 / bf16 with an exact float32 re-score",
        STORES,
    ),
)


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

    With ``store="int8"`` or ``"bf16"`` it keeps a compact copy of the templates and scans that
    instead (:class:`~pyfacematch.index.compactstore.CompactStore`): the rows the proven error bound
    cannot rule out are re-scored in float32, so the answer is still the exact top-k.
    """

    name = "exact"
    approximate = False

    def __init__(self, **options: Any) -> None:
        super().__init__()
        opts = check_options(self.name, EXACT_OPTIONS, options)
        self.store: str = opts["store"]
        self.compact_store: CompactStore | None = (
            None if self.store == "float32" else CompactStore(self.store)
        )
        self._n = 0

    def rebuild(self, m: TemplateMatrix) -> None:
        if self.compact_store is not None:
            self.compact_store.rebuild(m)
        self._n = m.n

    def adopt(self, m: TemplateMatrix, arrays: dict[str, Any]) -> None:
        """The compact copy from a serving folder (float32 needs nothing)."""
        if self.compact_store is not None:
            compact = arrays.get("compact")
            if not compact:
                raise ValueError("no compact templates")
            self.compact_store.adopt(m, compact)
        self._n = m.n

    def add(self, m: TemplateMatrix, rows: np.ndarray) -> None:
        if self.compact_store is not None:
            self.compact_store.add(m, rows)
        self._n = m.n

    def remove(self, m: TemplateMatrix, tids: np.ndarray, moves: list[tuple[int, int]]) -> None:
        if self.compact_store is not None:
            self.compact_store.remove(m, moves, len(tids))
        self._n = m.n

    def code_bytes_per_template(self) -> float:
        return 0.0 if self.compact_store is None else self.compact_store.bytes_per_template()

    @property
    def size(self) -> int:
        return self._n

    def candidates(
        self,
        m: TemplateMatrix,
        probes: np.ndarray,
        k: int,
        prepared: PreparedProbes | None = None,
    ) -> np.ndarray:
        q = np.ascontiguousarray(probes, np.float32)
        if self.compact_store is not None:
            return self.compact_store.topk(m, q, min(k, m.n))[1]
        return scoring.topk(q, m.view, min(k, m.n))[1]

    def info(self, m: TemplateMatrix) -> dict[str, Any]:
        return {
            "backend": self.name,
            "templates": m.n,
            "measured_recall_at_1": 1.0,
            "store": self.store,
            "store_bytes_per_template": self.code_bytes_per_template() or 4.0 * m.dim,
        }
