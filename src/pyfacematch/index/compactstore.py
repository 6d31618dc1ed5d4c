"""Compact (int8 / bf16) copies of the gallery's templates, kept in step with its TemplateMatrix.

The ``exact`` backend with ``store="int8"|"bf16"`` scans this copy instead of the float32 matrix
and re-scores, exactly in float32, only the rows its proven error bound cannot rule out (see
:class:`pyfacematch.CompactMatrix`): the answer is the float32 top-k (same rows and scores as an
exact re-rank over every row) for a quarter (int8) or half (bf16) of the bytes read per probe. The
``binary`` backend with ``rerank_store=…`` prunes its shortlist the same way before the float32
re-score. Only unmasked cosine is served this way (masked galleries keep the float32 paths).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyfacematch.core.compact import CompactMatrix, padded_width
from pyfacematch.index.matrix import TemplateMatrix

__all__ = ["STORES", "CompactStore"]

#: Template stores a backend can scan: float32 (the matrix itself) or a compact copy.
STORES = ("float32", "int8", "bf16")


class CompactStore:
    """A compact copy of a :class:`TemplateMatrix`'s rows (capacity grows by doubling)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._n = 0
        self._dim = 0
        self._arrays: dict[str, np.ndarray] = {}

    def _alloc(self, cap: int, dim: int) -> dict[str, np.ndarray]:
        dt = np.int8 if self.kind == "int8" else np.uint16
        return {
            "codes": np.zeros((cap, padded_width(self.kind, dim)), dt),
            "scale": np.zeros(cap, np.float32),
            "norm": np.zeros(cap, np.float32),
            "resid": np.zeros(cap, np.float32),
            "gsum": np.zeros(cap, np.int32),
        }

    def _put(self, rows: np.ndarray, x: np.ndarray) -> None:
        c = CompactMatrix.from_float32(x, self.kind)
        for name, arr in c.arrays().items():
            if arr.shape[0]:
                self._arrays[name][rows] = arr

    def rebuild(self, m: TemplateMatrix) -> None:
        self._dim = m.dim
        self._arrays = self._alloc(max(m.capacity, 1), m.dim)
        if m.n:
            self._put(np.arange(m.n), m.view)
        self._n = m.n

    def add(self, m: TemplateMatrix, rows: np.ndarray) -> None:
        if not self._arrays or self._dim != m.dim:
            self.rebuild(m)
            return
        self._own()
        cap = m.capacity
        if self._arrays["codes"].shape[0] < cap:
            grown = self._alloc(cap, m.dim)
            for name, arr in self._arrays.items():
                grown[name][: arr.shape[0]] = arr
            self._arrays = grown
        rows = np.asarray(rows, np.int64)
        if rows.size:
            self._put(rows, m.data[rows])
        self._n = m.n

    def adopt(self, m: TemplateMatrix, arrays: dict[str, Any]) -> None:
        """Take the compact arrays of the rows of ``m`` (from a serving folder): each value is an
        array of ``m.n`` rows, kept as given (a read-only mapping is copied at the first change,
        so opening reads nothing), or a callable filling the given output array."""
        self._dim = m.dim
        ref = self._alloc(1, m.dim)
        n = m.n
        out: dict[str, np.ndarray] = {}
        for name, r in ref.items():
            got = arrays.get(name)
            if got is None:
                if name in ("codes", "norm") or self.kind == "int8":
                    raise ValueError(f"compact {name} missing")
                out[name] = np.zeros((max(n, 1), *r.shape[1:]), r.dtype)
                continue
            if callable(got):
                arr = np.zeros((max(n, 1), *r.shape[1:]), r.dtype)
                got(arr)
            else:
                arr = got
                if arr.shape[0] != n:
                    raise ValueError(f"compact {name} of the wrong length")
                if arr.dtype != r.dtype or arr.shape[1:] != r.shape[1:]:
                    raise ValueError(f"compact {name} of the wrong dtype or width")
            out[name] = arr
        self._arrays = out
        self._n = n

    def _own(self) -> None:
        """Copy adopted read-only (mapped) arrays into memory before changing them."""
        if any(not a.flags.writeable for a in self._arrays.values()):
            self._arrays = {k: np.array(a) for k, a in self._arrays.items()}

    def arrays_of(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The stored arrays of ``rows`` (as a serving folder holds them: bf16 without
        scale / resid / gsum)."""
        keep = ("codes", "norm") if self.kind == "bf16" else tuple(self._arrays)
        return {k: self._arrays[k][rows] for k in keep}

    def remove(self, m: TemplateMatrix, moves: list[tuple[int, int]], removed: int) -> None:
        self._own()
        for arr in self._arrays.values():
            for src, dst in moves:
                arr[dst] = arr[src]
            arr[m.n : m.n + removed] = 0  # nothing of a removed template stays behind
        self._n = m.n

    def matrix(self, m: TemplateMatrix) -> CompactMatrix:
        """The rows in use as a :class:`CompactMatrix` re-scoring from ``m``'s float32 rows."""
        if self._n != m.n or self._dim != m.dim:  # never scan a copy out of step with the matrix
            self.rebuild(m)
        n = m.n
        a = self._arrays
        return CompactMatrix(
            self.kind,
            m.dim,
            a["codes"][:n],
            a["scale"][:n],
            a["norm"][:n],
            a["resid"][:n],
            a["gsum"][:n],
            exact=m.view,
        )

    @property
    def size(self) -> int:
        return self._n

    def bytes_per_template(self) -> float:
        if not self._arrays:
            return 0.0
        meta = 16 if self.kind == "int8" else 4
        return float(self._arrays["codes"].shape[1] * self._arrays["codes"].itemsize + meta)

    def topk(self, m: TemplateMatrix, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out: tuple[np.ndarray, np.ndarray] = self.matrix(m).topk(probes, min(k, m.n))
        return out

    def rerank(
        self, m: TemplateMatrix, probes: np.ndarray, cand: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.matrix(m).rerank(probes, cand, k)
