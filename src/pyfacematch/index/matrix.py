"""The gallery's templates in memory: one contiguous float32 matrix with stable template ids.

Every backend reads templates from here and keeps only its own structure (codes, graph, lists);
rows move when templates are removed, and the moves are reported so backends can follow.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TemplateMatrix"]


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
        #: True when ``data`` is a read-only mapping of a serving file kept by the caller
        #: (:meth:`attach`): rows are then written to the file, never to ``data``.
        self.mapped = False

    @property
    def capacity(self) -> int:
        """Rows that fit before the arrays grow (structures aligned with rows size to it)."""
        return int(self.tids.shape[0])

    def attach(self, data: np.ndarray) -> None:
        """Use ``data`` (float32 (≥ n, dim), e.g. a ``numpy.memmap`` of a serving file) as the
        rows. From now on :meth:`append` and :meth:`remove_tids` leave the rows to whoever
        writes the file, who calls :meth:`attach` again with the grown / moved rows."""
        if data.dtype != np.float32 or data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(
                f"attach needs float32 (rows, {self.dim}), got {data.dtype} {data.shape}"
            )
        self.data = data
        self.mapped = True

    @property
    def view(self) -> np.ndarray:
        """float32 (n, dim) C-contiguous view of the rows in use."""
        return self.data[: self.n]

    def unmap(self) -> None:
        """Copy the mapped rows into memory (the file can no longer be written)."""
        data = np.zeros((self.capacity, self.dim), np.float32)
        data[: self.n] = self.data[: self.n]
        self.data = data
        self.mapped = False

    @classmethod
    def from_mapped(
        cls,
        data: np.ndarray,
        tids: np.ndarray,
        owner: np.ndarray,
        masks: np.ndarray | None,
        masked: bool,
    ) -> TemplateMatrix:
        """A matrix over ``data`` (float32 (n, dim), mapped) with its ids, owners and masks."""
        n = int(tids.shape[0])
        m = cls(int(data.shape[1]), masked=masked, capacity=1)
        m.data = np.zeros((0, m.dim), np.float32)
        m.mapped = True
        m._reserve(n)
        if n:
            m._reserve_tids(int(tids.max()))
        m.tids[:n] = tids
        m.owner[:n] = owner
        if m.masks is not None and masks is not None:
            m.masks[:n] = masks
        m.tid_to_row[tids] = np.arange(n, dtype=np.int64)
        m.n = n
        m.attach(data)
        return m

    @property
    def mask_view(self) -> np.ndarray | None:
        return None if self.masks is None else self.masks[: self.n]

    def _reserve(self, n: int) -> None:
        cap = self.capacity
        if n > cap:
            new = max(n, 2 * cap)
            if not self.mapped:
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
        if not self.mapped:
            self.data[idx] = rows
        elif self.data.shape[0] < self.n + m:
            raise ValueError(
                "append to a mapped matrix: write the rows to the file and attach first"
            )
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
                if not self.mapped:
                    self.data[r] = self.data[last]
                self.tids[r] = self.tids[last]
                self.owner[r] = self.owner[last]
                if self.masks is not None:
                    self.masks[r] = self.masks[last]
                self.tid_to_row[self.tids[r]] = r
                moves.append((last, r))
            if not self.mapped:  # (a mapped file is overwritten by its writer)
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
