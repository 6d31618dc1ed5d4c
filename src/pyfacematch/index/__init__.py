"""Search backends of a gallery behind one interface.

Every backend returns a *shortlist* of template rows for each probe; the
gallery re-ranks it exactly (``pyfacematch.rerank``, with region masks when
templates have them). Backends:

``exact``
    No shortlist: the core's SIMD top-k (``topk`` / ``masked_topk``) over all
    templates. Recall 1 by definition; the reference of every other backend.
``binary`` (default)
    Compressed exhaustive search: every template is also kept as a 1-bit code
    (sign of each dimension after centring on the gallery mean, d/8 bytes,
    64 at d = 512). The whole gallery is scanned on the codes' first 256 bits
    (``hamming_topk``, popcount kernels in the core), the candidates' full
    codes refine that list (``hamming_refine``) and the ``shortlist`` nearest
    are re-ranked exactly. Cost is one pass over N·32 bytes whatever the data
    looks like, which is why it beats graph and cluster indexes on embeddings
    spread uniformly over the sphere (measured in ``bench/gallery.py``).
``flat``
    FAISS ``IndexFlatIP`` (exact, FAISS's BLAS scan), as a baseline.
``hnsw``
    FAISS ``IndexHNSWFlat`` (M = 32). It cannot remove: removed templates are
    tombstoned (never returned: their rows no longer map) and the graph is
    rebuilt once tombstones pass ``HNSW_REBUILD_FRACTION`` of it, and before
    any checkpoint file is written (so no file holds an erased template).
``ivf`` / ``ivfpq``
    FAISS ``IndexIVFFlat`` / ``IndexIVFPQ`` (d/8 sub-quantisers of 8 bits).
    They need training data: ``nlist`` coarse centroids need ≥ 39 templates
    each (FAISS's own minimum), so IVF trains once the gallery holds
    ``39 * 16 = 624`` templates and IVF-PQ once it holds ``max(624, 39 * 256 =
    9984)`` (256 codewords per sub-quantiser). Until then the backend falls
    back to the exact scan and says so in :meth:`Backend.info` and the log.
    ``nlist`` is ``4·√N`` rounded to a power of two (capped by the 39-per-list
    rule); the index is retrained when the gallery has grown 4× since training.

Self-tuning: each approximate backend has one depth knob (``shortlist``,
``efSearch``, ``nprobe``) chosen by :meth:`Backend.tune` on probes made from
the gallery's own templates, so that recall@1 against the exact search is
≥ the target (0.99 by default); the gallery re-tunes when its size doubles.

FAISS objects are used from several threads only for searching; the gallery's
readers–writer lock keeps adds/removes exclusive.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pyfacematch.core import scoring
from pyfacematch.errors import IndexTrainingError, InputError

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "Backend",
    "BinaryBackend",
    "ExactBackend",
    "FaissBackend",
    "TemplateMatrix",
    "make_backend",
]

log = logging.getLogger("pyfacematch.index")

BACKENDS = ("exact", "binary", "flat", "hnsw", "ivf", "ivfpq")
DEFAULT_BACKEND = "binary"
HNSW_REBUILD_FRACTION = 0.2
MIN_PER_CENTROID = 39


# --------------------------------------------------------------------------- core kernels
def exact_topk(
    probes: np.ndarray,
    matrix: np.ndarray,
    k: int,
    probe_masks: np.ndarray | None = None,
    gallery_masks: np.ndarray | None = None,
    blocks: np.ndarray | None = None,
    min_fraction: float = scoring.DEFAULT_MIN_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows of ``matrix`` for each probe (masked when blocks given)."""
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


def rerank(
    probes: np.ndarray,
    matrix: np.ndarray,
    candidates: np.ndarray,
    k: int,
    probe_masks: np.ndarray | None = None,
    gallery_masks: np.ndarray | None = None,
    blocks: np.ndarray | None = None,
    min_fraction: float = scoring.DEFAULT_MIN_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among candidate rows (-1 = padding) for each probe (masked when blocks given)."""
    if blocks is None:  # unmasked templates: any masks passed along are meaningless
        return scoring.rerank(probes, matrix, candidates, k)
    return scoring.rerank(
        probes, matrix, candidates, k, probe_masks, gallery_masks, blocks, min_fraction
    )


# --------------------------------------------------------------------------- matrix
class TemplateMatrix:
    """Contiguous float32 templates with stable template ids.

    Rows are dense ``0 … n-1`` (capacity doubles on growth; removal moves the
    last row into the hole). ``tids[row]`` is the store's template id and
    ``tid_to_row[tid]`` the inverse (-1 when absent), so FAISS labels (template
    ids) map to rows with one gather.

    Attributes
    ----------
    dim : int
    n : int
        Rows in use.
    data : float32 (capacity, dim)
    tids : int64 (capacity,)
    owner : int64 (capacity,)
        Identity slot of each row.
    masks : uint64 (capacity,) or None
    """

    def __init__(self, dim: int, *, masked: bool, capacity: int = 64) -> None:
        self.dim = int(dim)
        self.n = 0
        cap = max(int(capacity), 1)
        self.data = np.zeros((cap, self.dim), np.float32)
        self.tids = np.full(cap, -1, np.int64)
        self.owner = np.full(cap, -1, np.int64)
        self.masks: np.ndarray | None = np.zeros(cap, np.uint64) if masked else None
        self.tid_to_row = np.full(64, -1, np.int64)

    @property
    def view(self) -> np.ndarray:
        """float32 (n, dim) C-contiguous view of the rows in use."""
        return self.data[: self.n]

    @property
    def mask_view(self) -> np.ndarray | None:
        return None if self.masks is None else self.masks[: self.n]

    def _reserve(self, n: int) -> None:
        cap = self.data.shape[0]
        if n > cap:
            new = max(n, 2 * cap)
            data = np.zeros((new, self.dim), np.float32)
            data[: self.n] = self.data[: self.n]
            self.data = data
            for name in ("tids", "owner"):
                arr = np.full(new, -1, np.int64)
                arr[: self.n] = getattr(self, name)[: self.n]
                setattr(self, name, arr)
            if self.masks is not None:
                m = np.zeros(new, np.uint64)
                m[: self.n] = self.masks[: self.n]
                self.masks = m

    def _reserve_tids(self, max_tid: int) -> None:
        if max_tid >= self.tid_to_row.size:
            new = max(max_tid + 1, 2 * self.tid_to_row.size)
            arr = np.full(new, -1, np.int64)
            arr[: self.tid_to_row.size] = self.tid_to_row
            self.tid_to_row = arr

    def append(
        self, rows: np.ndarray, tids: np.ndarray, owner: np.ndarray, masks: np.ndarray | None
    ) -> np.ndarray:
        """Append rows; return their row indices (int64)."""
        m = rows.shape[0]
        self._reserve(self.n + m)
        if m:
            self._reserve_tids(int(tids.max()))
        idx = np.arange(self.n, self.n + m, dtype=np.int64)
        self.data[idx] = rows
        self.tids[idx] = tids
        self.owner[idx] = owner
        if self.masks is not None:
            self.masks[idx] = masks
        self.tid_to_row[tids] = idx
        self.n += m
        return idx

    def remove_tids(self, tids: np.ndarray) -> list[tuple[int, int]]:
        """Remove rows by template id (swap-with-last).

        Returns the moves ``(src_row, dst_row)`` applied, in order, so that
        arrays aligned with rows (binary codes) can follow.
        """
        rows = self.tid_to_row[np.asarray(tids, np.int64)]
        rows = np.sort(rows[rows >= 0])[::-1]
        moves: list[tuple[int, int]] = []
        for r in rows.tolist():
            last = self.n - 1
            if r != last:
                self.data[r] = self.data[last]
                self.tids[r] = self.tids[last]
                self.owner[r] = self.owner[last]
                if self.masks is not None:
                    self.masks[r] = self.masks[last]
                self.tid_to_row[self.tids[r]] = r
                moves.append((last, r))
            self.data[last] = 0.0  # do not keep erased templates in spare capacity
            self.tids[last] = -1
            self.owner[last] = -1
            self.n -= 1
        self.tid_to_row[np.asarray(tids, np.int64)] = -1
        return moves

    def rows_of_tids(self, labels: np.ndarray) -> np.ndarray:
        """Map FAISS labels (template ids, -1 padding) to rows (-1 when absent)."""
        labels = np.asarray(labels, np.int64)
        ok = (labels >= 0) & (labels < self.tid_to_row.size)
        out = np.full(labels.shape, -1, np.int64)
        out[ok] = self.tid_to_row[labels[ok]]
        return out


# --------------------------------------------------------------------------- backends
class Backend:
    """Interface of a search backend (see the module docstring).

    A backend never owns templates: it reads them from the gallery's
    :class:`TemplateMatrix` and keeps only its own codes / graph / lists.
    """

    name = "base"
    approximate = True
    checkpointable = False  # worth writing to a file (costly to rebuild)

    def __init__(self) -> None:
        self.depth: int | None = None  # the tuned knob
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

    def maintenance_due(self, m: TemplateMatrix) -> bool:
        """True when a rebuild is due (tombstones, retraining)."""
        return False

    def refresh(self, m: TemplateMatrix) -> None:
        """Cheap re-derivation before a re-tune (binary: re-centre the codes)."""

    @property
    def active(self) -> bool:
        """False while the backend falls back to the exact scan."""
        return self.fallback_reason is None

    # search -------------------------------------------------------------
    def shortlist(self, m: TemplateMatrix, probes: np.ndarray, k: int) -> np.ndarray:
        """Candidate rows (M, C) int64, -1 padded, for the exact re-rank."""
        raise NotImplementedError

    def depth_ladder(self, m: TemplateMatrix) -> list[int]:
        return []

    def set_depth(self, depth: int) -> None:
        self.depth = int(depth)

    # persistence ---------------------------------------------------------
    def serialize(self) -> bytes:
        raise NotImplementedError

    def deserialize(self, data: bytes, m: TemplateMatrix) -> None:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "tuned_size": self.tuned_size,
            "measured_recall": self.measured_recall,
        }

    def load_params(self, p: dict[str, Any]) -> None:
        if p.get("depth") is not None:
            self.set_depth(int(p["depth"]))
        self.tuned_size = int(p.get("tuned_size") or 0)
        self.measured_recall = p.get("measured_recall")

    def info(self, m: TemplateMatrix) -> dict[str, Any]:
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
        return 0.0

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


class ExactBackend(Backend):
    """Exact SIMD scan; the gallery calls the top-k kernel itself."""

    name = "exact"
    approximate = False

    def shortlist(self, m: TemplateMatrix, probes: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError("exact backend has no shortlist")  # pragma: no cover

    def info(self, m: TemplateMatrix) -> dict[str, Any]:
        return {"backend": self.name, "templates": m.n, "measured_recall_at_1": 1.0}


class BinaryBackend(Backend):
    """1-bit codes after centring, a two-stage Hamming scan, exact re-rank.

    Each template's code (d/8 bytes) is kept in two planes: the first
    ``PREFIX_BYTES`` (256 bits) in one contiguous array, the rest in another.
    The scan (``hamming_topk2``) reads the whole first plane; a row whose
    distance there is within the running ``scan_depth``-th best has the rest
    of its code read at once, and the ``depth`` best full-code distances are
    re-ranked exactly by the gallery. A one-probe search is bound by memory
    bandwidth and a batched one by popcounts, so reading half the bytes makes
    both about twice as fast; codes shorter than ``2 * PREFIX_BYTES`` bytes
    are scanned whole (``hamming_topk``).

    Parameters
    ----------
    min_shortlist : int
        Floor of the re-ranked shortlist length (``depth``).
    min_scan : int
        Floor of the first plane's admission rank (``scan_depth``).
    safety : float
        Each tuned length is the smallest passing length times ``safety``
        (re-ranking a few more rows is cheap next to the full code scan).
    """

    name = "binary"
    PREFIX_BYTES = 32

    def __init__(self, *, min_shortlist: int = 32, min_scan: int = 64, safety: float = 2.0) -> None:
        super().__init__()
        self.min_shortlist = int(min_shortlist)
        self.min_scan = int(min_scan)
        self.safety = float(safety)
        self.depth = 64
        self.scan_depth = 256
        self.center: np.ndarray | None = None
        self.planes: tuple[np.ndarray, ...] = (np.zeros((0, 0), np.uint8),)

    # codes ---------------------------------------------------------------
    def _split(self, nb: int) -> list[int]:
        """Byte ranges of the planes for codes of ``nb`` bytes."""
        if nb >= 2 * self.PREFIX_BYTES:
            return [0, self.PREFIX_BYTES, nb]
        return [0, nb]

    def _codes_of(self, x: np.ndarray) -> np.ndarray:
        """Whole codes of templates x, centred as the gallery's."""
        return scoring.pack_signs(np.ascontiguousarray(x, np.float32), center=self.center)

    def _pack(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        codes = self._codes_of(x)
        cuts = self._split(codes.shape[1])
        return tuple(np.ascontiguousarray(codes[:, a:b]) for a, b in zip(cuts, cuts[1:]))

    @property
    def two_stage(self) -> bool:
        return len(self.planes) == 2

    def codes(self, n: int) -> np.ndarray:
        """The full codes of the first ``n`` rows (n × d/8 bytes), e.g. for a FAISS baseline."""
        return np.ascontiguousarray(np.hstack([p[:n] for p in self.planes]))

    def rebuild(self, m: TemplateMatrix) -> None:
        nb = (m.dim + 7) // 8
        cap = m.data.shape[0]
        # The centre changes only when the codes are re-tuned (refresh): a rebuild, e.g. when a
        # gallery is reopened, packs with the centre the tuning saw, so results do not move.
        if self.center is None or self.center.shape != (m.dim,) or not m.n:
            self.center = (
                m.view.mean(axis=0, dtype=np.float64).astype(np.float32)
                if m.n
                else np.zeros(m.dim, np.float32)
            )
        cuts = self._split(nb)
        self.planes = tuple(np.zeros((cap, b - a), np.uint8) for a, b in zip(cuts, cuts[1:]))
        if m.n:
            for plane, part in zip(self.planes, self._pack(m.view)):
                plane[: m.n] = part

    def refresh(self, m: TemplateMatrix) -> None:
        # the gallery mean drifts as it grows: re-centre and re-pack (one pass)
        self.center = None
        self.rebuild(m)

    def _reserve(self, m: TemplateMatrix) -> None:
        cap = m.data.shape[0]
        if self.planes[0].shape[0] < cap:
            grown = []
            for plane in self.planes:
                g = np.zeros((cap, plane.shape[1]), np.uint8)
                g[: plane.shape[0]] = plane
                grown.append(g)
            self.planes = tuple(grown)

    def add(self, m: TemplateMatrix, rows: np.ndarray) -> None:
        if self.center is None:
            self.rebuild(m)
            return
        self._reserve(m)
        for plane, part in zip(self.planes, self._pack(m.data[rows])):
            plane[rows] = part

    def remove(self, m: TemplateMatrix, tids: np.ndarray, moves: list[tuple[int, int]]) -> None:
        for plane in self.planes:
            for src, dst in moves:
                plane[dst] = plane[src]
            plane[m.n : m.n + len(tids)] = 0

    # search --------------------------------------------------------------
    def shortlist(self, m: TemplateMatrix, probes: np.ndarray, k: int) -> np.ndarray:
        c = max(int(self.depth or 0), k)
        q = self._codes_of(probes)
        if self.two_stage:
            scan = max(int(self.scan_depth), c)
            return scoring.hamming_topk2(q, self.planes[0][: m.n], self.planes[1][: m.n], c, scan)[
                1
            ]
        return scoring.hamming_topk(q, self.planes[0][: m.n], c)[1]

    def depth_ladder(self, m: TemplateMatrix) -> list[int]:
        return []  # tuned from rank distributions, see tune()

    @staticmethod
    def _needed(ranks: np.ndarray, target: float) -> int:
        """Smallest length holding the best row of a ``target`` share of the sample (0-based ranks)."""
        s = ranks.size
        return int(np.sort(ranks)[min(s - 1, max(0, math.ceil(target * s) - 1))]) + 1

    def tune(
        self,
        m: TemplateMatrix,
        probes: np.ndarray,
        reference_top1: np.ndarray,
        reference_rows: np.ndarray,
        pipeline_top1: Callable[[np.ndarray, int], np.ndarray],
        target: float,
    ) -> float | None:
        # The re-ranked length comes from the rank of each probe's exact best row
        # among full-code distances (one deep search gives every length's recall);
        # the first plane's admission rank from the rank of that row on the first
        # plane alone, then checked on the whole pipeline.
        c_max = min(m.n, 4096)

        def ranks_of(idx: np.ndarray) -> np.ndarray:
            hit = idx == reference_rows[:, None]
            return np.where(hit.any(axis=1), hit.argmax(axis=1), idx.shape[1])

        q = self._codes_of(probes)
        info: dict[str, Any] = {"tuning_probes": int(len(probes))}
        full = self.codes(m.n) if self.two_stage else self.planes[0][: m.n]
        ranks = ranks_of(scoring.hamming_topk(q, full, c_max)[1])
        need = self._needed(ranks, target)
        length = max(self.min_shortlist, int(math.ceil(need * self.safety)))
        length = min(1 << (length - 1).bit_length(), max(m.n, 1))  # a power of two
        if need > c_max:
            log.warning(
                "binary codes need a shortlist longer than %d to reach recall@1 %.3f", c_max, target
            )
        self.set_depth(length)
        info["shortlist_needed_on_sample"] = need
        info["rank_quantiles"] = {
            q_: int(np.quantile(ranks, q_)) + 1 for q_ in (0.5, 0.9, 0.99, 0.999) if ranks.size
        }

        def measure() -> float:
            got = pipeline_top1(probes, 1)
            return float(np.mean(got >= reference_top1 - 1e-5))

        if self.two_stage:
            # The admission rank costs time in every search (each admitted row is read twice), so
            # it starts a quarter above the sample's need, rounded up to 128, and doubles only while
            # the whole pipeline misses the target on the sample.
            first = np.ascontiguousarray(q[:, : self.planes[0].shape[1]])
            need1 = self._needed(
                ranks_of(scoring.hamming_topk(first, self.planes[0][: m.n], c_max)[1]), target
            )
            scan = max(self.min_scan, length, -(-int(math.ceil(need1 * 1.25)) // 128) * 128)
            curve = []
            while True:
                self.scan_depth = min(scan, max(m.n, 1))
                recall = measure()
                curve.append((self.scan_depth, round(recall, 4)))
                if recall >= target or self.scan_depth >= min(m.n, c_max):
                    break
                scan *= 2
            info["scan_needed_on_sample"] = need1
            info["scan_curve"] = curve
            self.measured_recall = recall
        else:
            self.measured_recall = measure()
        self.tuned_size = m.n
        self.tune_info = info
        return self.measured_recall

    def params(self) -> dict[str, Any]:
        p = super().params()
        p["scan_depth"] = self.scan_depth
        if self.center is not None:
            p["center"] = [float(v) for v in self.center]  # float32 values survive JSON exactly
        return p

    def load_params(self, p: dict[str, Any]) -> None:
        """Depths, and the centre the codes were tuned with (before :meth:`rebuild` packs them)."""
        super().load_params(p)
        if p.get("scan_depth") is not None:
            self.scan_depth = int(p["scan_depth"])
        c = p.get("center")
        if c is not None:
            self.center = np.asarray(c, dtype=np.float32)

    def code_bytes_per_template(self) -> float:
        return float(sum(p.shape[1] for p in self.planes))

    def info(self, m: TemplateMatrix) -> dict[str, Any]:
        d = super().info(m)
        d["shortlist"] = self.depth
        if self.two_stage:
            d["scan_shortlist"] = self.scan_depth
            d["scan_bytes_per_template"] = self.planes[0].shape[1]
        d["code_bytes_per_template"] = self.code_bytes_per_template()
        return d


def _faiss() -> Any:
    import faiss

    return faiss


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(x, 1.0)))))


def _pq_m(dim: int) -> int:
    """Sub-quantisers of IVF-PQ: d/8 (one byte per 8 dimensions), a divisor of d."""
    target = max(1, dim // 8)
    for m in range(target, 0, -1):
        if dim % m == 0:
            return m
    return 1  # pragma: no cover


class FaissBackend(Backend):
    """FAISS ``flat``, ``hnsw``, ``ivf`` or ``ivfpq`` index; labels are template ids.

    Parameters
    ----------
    kind : {"flat", "hnsw", "ivf", "ivfpq"}
    hnsw_m : int
        Graph degree of HNSW.
    ef_construction : int
        HNSW build depth.
    pq_shortlist : int
        Shortlist re-ranked exactly for IVF-PQ (its distances are approximate).
    """

    checkpointable = True

    def __init__(
        self,
        kind: str,
        *,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        pq_shortlist: int = 64,
    ) -> None:
        super().__init__()
        self.name = kind
        self.kind = kind
        self.approximate = kind != "flat"
        self.hnsw_m = int(hnsw_m)
        self.ef_construction = int(ef_construction)
        self.pq_shortlist = int(pq_shortlist)
        self.index: Any = None
        self.tombstones = 0
        self.trained_size = 0
        self.nlist = 0
        self.depth = {"hnsw": 64, "ivf": 8, "ivfpq": 16}.get(kind)

    # ----------------------------------------------------------- structure
    def min_train_size(self, dim: int) -> int:
        if self.kind == "ivf":
            return MIN_PER_CENTROID * 16
        if self.kind == "ivfpq":
            return max(MIN_PER_CENTROID * 16, MIN_PER_CENTROID * 256)
        return 0

    def _nlist_for(self, n: int) -> int:
        nlist = _pow2_floor(4.0 * math.sqrt(n))
        nlist = min(nlist, _pow2_floor(n / MIN_PER_CENTROID))
        return max(nlist, 1)

    def _make(self, m: TemplateMatrix) -> Any:
        faiss = _faiss()
        d = m.dim
        ip = faiss.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        if self.kind == "hnsw":
            h = faiss.IndexHNSWFlat(d, self.hnsw_m, ip)
            h.hnsw.efConstruction = self.ef_construction
            return faiss.IndexIDMap2(h)
        self.nlist = self._nlist_for(m.n)
        quantizer = faiss.IndexFlatIP(d)
        if self.kind == "ivf":
            idx = faiss.IndexIVFFlat(quantizer, d, self.nlist, ip)
        else:
            idx = faiss.IndexIVFPQ(quantizer, d, self.nlist, _pq_m(d), 8, ip)
        idx.own_fields = True
        quantizer.this.disown()
        idx.cp.seed = 1234
        return idx

    def train(self, m: TemplateMatrix, *, strict: bool = False) -> bool:
        """Build and train the index on every row of ``m``.

        Returns False (and records a fallback reason) when there is too
        little data; raises :class:`IndexTrainingError` instead when ``strict``.
        """
        need = self.min_train_size(m.dim)
        if m.n < need:
            reason = (
                f"{self.kind} needs at least {need} templates to train "
                f"(≥ {MIN_PER_CENTROID} per centroid"
                + (", 256 codewords per sub-quantiser" if self.kind == "ivfpq" else "")
                + f"); the gallery holds {m.n}: searching exactly until then"
            )
            if strict:
                raise IndexTrainingError(reason)
            if self.fallback_reason != reason:
                log.info(reason)
            self.fallback_reason = reason
            self.index = None
            return False
        self.fallback_reason = None
        self.index = self._make(m)
        if self.kind in ("ivf", "ivfpq"):
            self.index.train(np.ascontiguousarray(m.view))
            self.trained_size = m.n
        if self.depth is not None:
            self.set_depth(self.depth)
        return True

    def rebuild(self, m: TemplateMatrix) -> None:
        self.tombstones = 0
        if not self.train(m):
            return
        if m.n:
            self.index.add_with_ids(np.ascontiguousarray(m.view), m.tids[: m.n].copy())

    def add(self, m: TemplateMatrix, rows: np.ndarray) -> None:
        if self.index is None:
            if m.n >= self.min_train_size(m.dim):
                self.rebuild(m)
            return
        self.index.add_with_ids(np.ascontiguousarray(m.data[rows]), m.tids[rows].copy())

    def remove(self, m: TemplateMatrix, tids: np.ndarray, moves: list[tuple[int, int]]) -> None:
        if self.index is None:
            return
        if self.kind == "hnsw":
            self.tombstones += int(len(tids))
        else:
            self.index.remove_ids(np.asarray(tids, np.int64))

    def maintenance_due(self, m: TemplateMatrix) -> bool:
        if self.kind == "hnsw" and self.index is not None:
            return self.tombstones > HNSW_REBUILD_FRACTION * max(self.index.ntotal, 1)
        if self.kind in ("ivf", "ivfpq"):
            if self.index is None:
                return m.n >= self.min_train_size(m.dim)
            return m.n >= 4 * max(self.trained_size, 1)
        return False

    # -------------------------------------------------------------- search
    def set_depth(self, depth: int) -> None:
        self.depth = int(depth)
        if self.index is None:
            return
        faiss = _faiss()
        if self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = self.depth
        elif self.kind in ("ivf", "ivfpq"):
            self.index.nprobe = min(self.depth, self.index.nlist)

    def depth_ladder(self, m: TemplateMatrix) -> list[int]:
        if self.kind == "hnsw":
            return [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        if self.kind in ("ivf", "ivfpq") and self.index is not None:
            out, p = [], 1
            while p < self.index.nlist:
                out.append(p)
                p *= 2
            out.append(self.index.nlist)
            return out
        return []

    def tune(
        self,
        m: TemplateMatrix,
        probes: np.ndarray,
        reference_top1: np.ndarray,
        reference_rows: np.ndarray,
        pipeline_top1: Callable[[np.ndarray, int], np.ndarray],
        target: float,
    ) -> float | None:
        if self.kind != "ivfpq" or self.index is None:
            return super().tune(m, probes, reference_top1, reference_rows, pipeline_top1, target)
        # PQ distances are approximate: first the shortlist that reaches the
        # target when every list is probed, then the fewest lists with it.
        self.set_depth(self.index.nlist)
        curve = []
        for length in (64, 128, 256, 512, 1024, 2048, 4096):
            self.pq_shortlist = min(length, max(m.n, 1))
            got = pipeline_top1(probes, 1)
            recall = float(np.mean(got >= reference_top1 - 1e-5))
            curve.append((self.pq_shortlist, round(recall, 4)))
            if recall >= target or self.pq_shortlist >= m.n:
                break
        out = super().tune(m, probes, reference_top1, reference_rows, pipeline_top1, target)
        self.tune_info["shortlist_curve"] = curve
        return out

    def params(self) -> dict[str, Any]:
        p = super().params()
        p["trained_size"] = self.trained_size
        p["pq_shortlist"] = self.pq_shortlist
        return p

    def load_params(self, p: dict[str, Any]) -> None:
        super().load_params(p)
        self.trained_size = int(p.get("trained_size") or 0)
        self.pq_shortlist = int(p.get("pq_shortlist") or self.pq_shortlist)

    def shortlist(self, m: TemplateMatrix, probes: np.ndarray, k: int) -> np.ndarray:
        c = k
        if self.kind == "ivfpq":
            c = max(k, self.pq_shortlist)
        if self.kind == "hnsw" and self.tombstones:
            live = max(self.index.ntotal - self.tombstones, 1)
            c = k + int(math.ceil(k * self.tombstones / live)) + 8
        c = min(c, max(self.index.ntotal, 1))
        _, labels = self.index.search(np.ascontiguousarray(probes, np.float32), c)
        return m.rows_of_tids(labels)

    # --------------------------------------------------------- persistence
    def serialize(self) -> bytes:
        return _faiss().serialize_index(self.index).tobytes()

    def deserialize(self, data: bytes, m: TemplateMatrix) -> None:
        faiss = _faiss()
        self.index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        self.fallback_reason = None
        self.tombstones = 0
        if self.kind in ("ivf", "ivfpq"):
            self.nlist = int(self.index.nlist)
        if self.depth is not None:
            self.set_depth(self.depth)

    def labels(self) -> np.ndarray:
        """Every label (template id) stored in the index, tombstones included."""
        faiss = _faiss()
        if self.index is None:
            return np.zeros(0, np.int64)
        if self.kind in ("flat", "hnsw"):
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self.index)
        inv = ivf.invlists
        out = []
        for lst in range(inv.nlist):
            sz = inv.list_size(lst)
            if sz:
                out.append(faiss.rev_swig_ptr(inv.get_ids(lst), sz).copy())
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def code_bytes_per_template(self) -> float:
        if self.index is None or self.index.ntotal == 0:
            return 0.0
        return len(self.serialize()) / self.index.ntotal

    def info(self, m: TemplateMatrix) -> dict[str, Any]:
        d = super().info(m)
        if self.kind == "hnsw":
            d.update(ef_search=self.depth, M=self.hnsw_m, tombstones=self.tombstones)
        elif self.kind in ("ivf", "ivfpq"):
            d.update(nprobe=self.depth, nlist=self.nlist, trained_at_size=self.trained_size)
            if self.kind == "ivfpq":
                d.update(pq_m=_pq_m(m.dim), shortlist=self.pq_shortlist)
        if self.kind == "flat":
            d["measured_recall_at_1"] = 1.0
        return d


def make_backend(name: str, **options: Any) -> Backend:
    """Backend by name (see :data:`BACKENDS`)."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if name == "exact":
        return ExactBackend()
    if name == "binary":
        return BinaryBackend(**options)
    return FaissBackend(name, **options)
