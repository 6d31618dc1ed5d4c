"""FAISS backends: ``flat``, ``hnsw``, ``ivf`` and ``ivfpq``, one class, labels are template ids.

``flat``
    ``IndexFlatIP`` (exact, FAISS's BLAS scan), as a baseline.
``hnsw``
    ``IndexHNSWFlat`` (degree ``hnsw_m``, 32 by default). It cannot remove: removed templates
    are tombstoned (never returned: their rows no longer map) and the graph is rebuilt once
    tombstones pass ``HNSW_REBUILD_FRACTION`` of it, and before any checkpoint file is written
    (:meth:`~pyfacematch.index.base.Backend.compact`), so no file holds an erased template.
``ivf`` / ``ivfpq``
    ``IndexIVFFlat`` / ``IndexIVFPQ`` (d/8 sub-quantisers of 8 bits). They need training data:
    ``nlist`` coarse centroids need ≥ 39 templates each (FAISS's own minimum), so IVF trains once
    the gallery holds ``39 * 16 = 624`` templates and IVF-PQ once it holds ``max(624, 39 * 256 =
    9984)`` (256 codewords per sub-quantiser). Until then the backend falls back to the exact
    scan and says so in :meth:`~pyfacematch.index.base.Backend.info` and the log. ``nlist`` is
    ``4·√N`` rounded to a power of two (capped by the 39-per-list rule); the index is retrained
    when the gallery has grown 4× since training.

``faiss`` is imported on first use. Every option is validated (:data:`FAISS_OPTIONS`) before it
reaches FAISS, which aborts or crashes the process on some values. FAISS objects are used from
several threads only for searching; the gallery's readers–writer lock keeps adds and removes
exclusive.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pyfacematch.errors import GalleryFileError, IndexTrainingError, InputError
from pyfacematch.index.base import Backend
from pyfacematch.index.matrix import TemplateMatrix
from pyfacematch.index.options import Option, check_options, checked_int
from pyfacematch.index.prepared import PreparedProbes

__all__ = [
    "FAISS_KINDS",
    "FAISS_OPTIONS",
    "HNSW_REBUILD_FRACTION",
    "MIN_PER_CENTROID",
    "FaissBackend",
]

log = logging.getLogger("pyfacematch.index")

FAISS_KINDS = ("flat", "hnsw", "ivf", "ivfpq")
HNSW_REBUILD_FRACTION = 0.2
MIN_PER_CENTROID = 39
#: Largest shortlist IVF-PQ ranks exactly (tuning tries up to 4096).
MAX_PQ_SHORTLIST = 65536

#: Options of each FAISS backend (``Gallery(backend_options=…)``).
FAISS_OPTIONS: dict[str, tuple[Option, ...]] = {
    "flat": (),
    "hnsw": (
        # FAISS aborts at 0, crashes at 1 and allocates without bound for negative values.
        Option("hnsw_m", "int", 2, 256, 32, "HNSW graph degree M"),
        Option("ef_construction", "int", 1, 8192, 80, "HNSW build depth efConstruction"),
    ),
    "ivf": (),
    "ivfpq": (
        Option("pq_shortlist", "int", 1, MAX_PQ_SHORTLIST, 64, "IVF-PQ shortlist ranked exactly"),
    ),
}


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
    **options
        Those of ``kind`` in :data:`FAISS_OPTIONS`: ``hnsw_m`` (HNSW graph degree, 2 … 256,
        default 32) and ``ef_construction`` (HNSW build depth, 1 … 8192, default 80) for
        ``hnsw``; ``pq_shortlist`` (rows ranked exactly after IVF-PQ's approximate distances,
        1 … 65536, default 64; re-tuned) for ``ivfpq``; none for ``flat`` and ``ivf``.

    Raises
    ------
    InputError
        ``kind`` is not a FAISS backend.
    BackendOptionError
        An option ``kind`` does not know, or a value of the wrong type or outside its range.
    """

    checkpointable = True

    def __init__(self, kind: str, **options: Any) -> None:
        super().__init__()
        if not isinstance(kind, str) or kind not in FAISS_KINDS:
            raise InputError(
                f"unknown FAISS backend {kind!r}: choose one of {', '.join(FAISS_KINDS)}"
            )
        opts = check_options(kind, FAISS_OPTIONS[kind], options)
        self.name = kind
        self.kind = kind
        self.approximate = kind != "flat"
        self.hnsw_m: int = opts.get("hnsw_m", 32)
        self.ef_construction: int = opts.get("ef_construction", 80)
        self.pq_shortlist: int = opts.get("pq_shortlist", 64)
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

    def _shortfall(self, m: TemplateMatrix) -> str | None:
        """Why ``m`` is too small to train on, or None."""
        need = self.min_train_size(m.dim)
        if m.n >= need:
            return None
        return (
            f"{self.kind} needs at least {need} templates to train "
            f"(≥ {MIN_PER_CENTROID} per centroid"
            + (", 256 codewords per sub-quantiser" if self.kind == "ivfpq" else "")
            + f"); the gallery holds {m.n}: searching exactly until then"
        )

    def check_trainable(self, m: TemplateMatrix) -> None:
        reason = self._shortfall(m)
        if reason is not None:
            raise IndexTrainingError(reason)

    def train(self, m: TemplateMatrix, *, strict: bool = False) -> bool:
        """Build and train the index on every row of ``m``.

        Returns False (and records a fallback reason) when there is too
        little data; raises :class:`IndexTrainingError` instead when ``strict``.
        """
        reason = self._shortfall(m)
        if reason is not None:
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

    def compact(self, m: TemplateMatrix) -> None:
        if self.tombstones:
            self.rebuild(m)  # keeps the tuned depth

    @property
    def holds_erased(self) -> bool:
        return self.index is not None and self.tombstones > 0

    @property
    def size(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal) - self.tombstones

    def check_consistency(self, m: TemplateMatrix) -> str | None:
        """Every live template's id is a label of the index, and (but HNSW's tombstones) no other."""
        if self.index is None:
            return None  # falling back to the exact scan: nothing built to disagree
        labels = self.labels()
        tids = m.tids[: m.n]
        live = np.intersect1d(labels, tids)
        if live.size != tids.size or (self.kind != "hnsw" and labels.size != tids.size):
            return f"index holds {labels.size} labels, {live.size} live, store {tids.size}"
        return None

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

    def _bad_params(self, p: Any) -> str | None:
        why = super()._bad_params(p)
        if why is not None:
            return why
        for key, high in (("trained_size", 1 << 62), ("pq_shortlist", MAX_PQ_SHORTLIST)):
            v = p.get(key)
            if v is not None and checked_int(v, 0 if key == "trained_size" else 1, high) is None:
                return f"{key} = {v!r}"
        return None

    def _apply_params(self, p: dict[str, Any]) -> None:
        super()._apply_params(p)
        self.trained_size = int(p.get("trained_size") or 0)
        self.pq_shortlist = int(p.get("pq_shortlist") or self.pq_shortlist)

    def candidates(
        self,
        m: TemplateMatrix,
        probes: np.ndarray,
        k: int,
        prepared: PreparedProbes | None = None,
    ) -> np.ndarray:
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
        try:
            index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        except (RuntimeError, MemoryError) as exc:  # FAISS refused the bytes
            raise GalleryFileError(f"FAISS could not read the {self.kind} index ({exc})") from exc
        why = self._foreign(index, m)
        if why is not None:
            raise GalleryFileError(f"not a {self.kind} index of this gallery: {why}")
        self.index = index
        self.fallback_reason = None
        self.tombstones = 0
        if self.kind in ("ivf", "ivfpq"):
            self.nlist = int(self.index.nlist)
        if self.depth is not None:
            self.set_depth(self.depth)

    def _foreign(self, index: Any, m: TemplateMatrix) -> str | None:
        """Why a deserialised ``index`` cannot serve as this backend over ``m``, or None."""
        faiss = _faiss()
        expected = {
            "flat": faiss.IndexFlatIP,
            "hnsw": faiss.IndexHNSWFlat,
            "ivf": faiss.IndexIVFFlat,
            "ivfpq": faiss.IndexIVFPQ,
        }[self.kind]
        inner = index
        if self.kind in ("flat", "hnsw"):
            if not isinstance(index, faiss.IndexIDMap2):
                return f"{type(index).__name__} without an id map"
            inner = faiss.downcast_index(index.index)
        if not isinstance(inner, expected):
            return f"{type(inner).__name__}, expected {expected.__name__}"
        if index.d != m.dim:
            return f"dimension {index.d}, the gallery's is {m.dim}"
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            return "not an inner-product index"
        return None

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
