"""Binary codes: every template kept as a 1-bit code, the whole gallery scanned, a shortlist ranked exactly.

The default backend (``"binary"``): compressed exhaustive search. Each template is also kept as
the sign of each dimension after centring on the gallery mean (d/8 bytes, 64 at d = 512). The
whole gallery is scanned on the codes' first 256 bits (``hamming_topk2``, popcount kernels in the
core), the full codes of the rows admitted there order the candidates, and the ``depth`` nearest
are ranked exactly (:func:`~pyfacematch.index.exact.rank_shortlist`). Cost is one pass over N·32
bytes whatever the data looks like, which is why it beats graph and cluster indexes on embeddings
spread uniformly over the sphere (measured in ``bench/gallery.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pyfacematch.core import scoring
from pyfacematch.index.base import MAX_DEPTH, Backend
from pyfacematch.index.compactstore import STORES, CompactStore
from pyfacematch.index.matrix import TemplateMatrix
from pyfacematch.index.options import Option, check_options, checked_int
from pyfacematch.index.prepared import PreparedProbes

__all__ = ["BINARY_OPTIONS", "BinaryBackend"]

log = logging.getLogger("pyfacematch.index")

#: Options of the binary backend (``Gallery(backend_options=…)``).
BINARY_OPTIONS = (
    Option("min_shortlist", "int", 1, 65536, 32, "floor of the exactly ranked shortlist"),
    Option("min_scan", "int", 1, 1 << 20, 64, "floor of the first plane's admission rank"),
    Option("safety", "float", 1.0, 64.0, 2.0, "factor on the shortest passing shortlist"),
    Option(
        "rerank_store",
        "choice",
        0,
        0,
        "float32",
        "shortlist re-ranked from float32, or pruned on int8 / bf16 first (same answer)",
        STORES,
    ),
)


class BinaryBackend(Backend):
    """1-bit codes after centring, a two-stage Hamming scan, exact re-rank.

    Each template's code (d/8 bytes) is kept in two planes: the first
    ``PREFIX_BYTES`` (256 bits) in one contiguous array, the rest in another.
    The scan (``hamming_topk2``) reads the whole first plane; a row whose
    distance there is within the running ``scan_depth``-th best has the rest
    of its code read at once, and the ``depth`` best full-code distances are
    ranked exactly by the gallery. A one-probe search is bound by memory
    bandwidth and a batched one by popcounts, so reading half the bytes makes
    both about twice as fast; codes shorter than ``2 * PREFIX_BYTES`` bytes
    are scanned whole (``hamming_topk``).

    Parameters
    ----------
    min_shortlist : int, 1 … 65536
        Floor of the exactly ranked shortlist length (``depth``).
    min_scan : int, 1 … 2**20
        Floor of the first plane's admission rank (``scan_depth``).
    safety : float, 1 … 64
        Each tuned length is the smallest passing length times ``safety``
        (ranking a few more rows exactly is cheap next to the full code scan).

    Raises
    ------
    BackendOptionError
        An option of the wrong type or outside its range.
    """

    name = "binary"
    PREFIX_BYTES = 32

    def __init__(self, **options: Any) -> None:
        super().__init__()
        opts = check_options(self.name, BINARY_OPTIONS, options)
        self.min_shortlist: int = opts["min_shortlist"]
        self.min_scan: int = opts["min_scan"]
        self.safety: float = opts["safety"]
        self.rerank_store: str = opts["rerank_store"]
        self.compact_store: CompactStore | None = (
            None if self.rerank_store == "float32" else CompactStore(self.rerank_store)
        )
        self._n = 0
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
        self._repack(m)
        if self.compact_store is not None:
            self.compact_store.rebuild(m)

    def _repack(self, m: TemplateMatrix) -> None:
        """Codes of every row (centre kept if set, else the rows' mean); ``_n`` = ``m.n``."""
        nb = (m.dim + 7) // 8
        cap = m.capacity
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
        self._n = m.n

    def adopt(self, m: TemplateMatrix, arrays: dict[str, Any]) -> None:
        """Take the codes (n × d/8, packed with the stored centre) and compact arrays of the rows
        of ``m`` from a serving folder instead of packing them again."""
        codes, compact = arrays.get("codes"), arrays.get("compact")
        if codes is None:
            raise ValueError("no binary codes")
        nb = (m.dim + 7) // 8
        if self.center is None or codes.shape != (m.n, nb):
            raise ValueError("codes do not match the gallery (centre or shape)")
        cuts = self._split(nb)
        self.planes = tuple(np.zeros((m.capacity, b - a), np.uint8) for a, b in zip(cuts, cuts[1:]))
        for plane, (a, b) in zip(self.planes, zip(cuts, cuts[1:])):
            plane[: m.n] = codes[:, a:b]
        if self.compact_store is not None:
            if compact is None:
                raise ValueError("no compact templates to adopt")
            self.compact_store.adopt(m, compact)
        self._n = m.n

    def refresh(self, m: TemplateMatrix) -> None:
        # the gallery mean drifts as it grows: re-centre and re-pack (one pass). The compact
        # re-rank rows do not depend on the centre (each row quantised alone): kept as they are
        self.center = None
        if self.compact_store is not None and self.size != m.n:
            self.rebuild(m)  # not in step with the rows (never after add): everything again
            return
        self._repack(m)

    def _reserve(self, m: TemplateMatrix) -> None:
        cap = m.capacity
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
        if self.compact_store is not None:
            self.compact_store.add(m, rows)
        self._n = m.n

    def remove(self, m: TemplateMatrix, tids: np.ndarray, moves: list[tuple[int, int]]) -> None:
        for plane in self.planes:
            for src, dst in moves:
                plane[dst] = plane[src]
            plane[m.n : m.n + len(tids)] = 0
        if self.compact_store is not None:
            self.compact_store.remove(m, moves, len(tids))
        self._n = m.n

    @property
    def size(self) -> int:
        return self._n

    def check_consistency(self, m: TemplateMatrix) -> str | None:
        """Also that every row's code is the code of its template (one pass over the gallery)."""
        why = super().check_consistency(m)
        if why is None and m.n and not np.array_equal(self.codes(m.n), self._codes_of(m.view)):
            bad = int(np.argmin((self.codes(m.n) == self._codes_of(m.view)).all(axis=1)))
            why = f"binary code of row {bad} does not match its template"
        return why

    # search --------------------------------------------------------------
    def prepare(self, prepared: PreparedProbes) -> None:
        if self.center is not None:
            prepared.codes(self.center)

    def candidates(
        self,
        m: TemplateMatrix,
        probes: np.ndarray,
        k: int,
        prepared: PreparedProbes | None = None,
    ) -> np.ndarray:
        c = max(int(self.depth or 0), k)
        # probes prepared once for several shards: packed once per centre, not once per shard
        q = self._codes_of(probes) if prepared is None else prepared.codes(self.center)
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

    def _bad_params(self, p: Any) -> str | None:
        why = super()._bad_params(p)
        if why is not None:
            return why
        v = p.get("scan_depth")
        if v is not None and checked_int(v, 1, MAX_DEPTH) is None:
            return f"scan_depth = {v!r}"
        c = p.get("center")
        if c is not None:
            try:
                arr = np.asarray(c, dtype=np.float64)
            except (TypeError, ValueError):
                return "center is not a list of numbers"
            if arr.ndim != 1 or not (np.abs(arr) <= np.finfo(np.float32).max).all():
                return "center is not a list of finite float32 numbers"
        return None

    def _apply_params(self, p: dict[str, Any]) -> None:
        """Depths, and the centre the codes were tuned with (before :meth:`rebuild` packs them)."""
        super()._apply_params(p)
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
