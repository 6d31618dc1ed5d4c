"""``.npy`` inputs: one float array ``(n, d)`` of templates or ``(n, P, 2|3)`` of landmarks.

Ids are the zero-based row numbers. The header is checked before anything is allocated: its shape
times its item size must be the bytes the file holds after the header (a header claiming a huge
row count or row length is refused, never allocated), object dtypes are refused. A C-order file is
read a chunk at a time by seeking, so a job's memory is bounded by its chunk size; standard input
and other non-seekable files are read as a stream, one chunk at a time.
"""

from __future__ import annotations

import math
import os
import stat
import sys
from typing import IO, Any

import numpy as np

from pyfacematch.core.arrayfile import NpyHeader, read_npy_header
from pyfacematch.errors import InputError
from pyfacematch.io.source import RawRecords, ReadOptions, RecordSource, id_text

__all__ = ["ArraySource", "NpyRows", "NpySource", "NpyStream", "check_array_shape"]


def check_array_shape(name: str, kind: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse an array that cannot hold templates ``(n, d)`` or landmarks ``(n, P, 2|3)``."""
    want_ndim = (2,) if kind == "templates" else (2, 3)
    if dtype.kind not in "fiub" or dtype.fields is not None or len(shape) not in want_ndim:
        raise InputError(
            f"{name}: expected a numeric array of shape "
            f"{'(n, d)' if kind == 'templates' else '(n, P, 2|3)'}, got {shape} {dtype}"
        )


class NpyRows:
    """Rows of a ``.npy`` regular file, read by seeking (C order) or memory-mapped (Fortran order).

    A memory map of a C-order file would be simpler, but every page it touches stays in the
    process's resident set until the map is closed; reading a chunk with a seek keeps the memory
    of a job bounded by its chunk size.
    """

    def __init__(self, path: str, name: str, header: NpyHeader) -> None:
        self.path = path
        self.name = name
        self.header = header
        self.shape = header.shape
        self.dtype = header.dtype
        self.ndim = len(header.shape)
        self.row_items = math.prod(header.shape[1:]) if self.ndim > 1 else 1
        self.map: Any = None
        if header.fortran_order:  # rows are not contiguous: the size was checked, map it
            self.map = np.memmap(path, header.dtype, "r", header.offset, header.shape, order="F")

    def __getitem__(self, sl: slice) -> np.ndarray:
        if self.map is not None:
            return np.asarray(self.map[sl])
        a, b, _ = sl.indices(self.shape[0])
        n = max(0, b - a)
        with open(self.path, "rb") as fh:
            fh.seek(self.header.offset + a * self.row_items * self.dtype.itemsize)
            out = np.fromfile(fh, self.dtype, n * self.row_items)
        if out.size != n * self.row_items:  # shrunk since it was opened
            raise InputError(
                f"{self.name}: the file is truncated "
                f"(row {a + 1 + out.size // max(self.row_items, 1)}); it changed while being read"
            )
        return out.reshape((n, *self.shape[1:]))


class NpyStream:
    """Rows of a ``.npy`` stream (standard input, a pipe), read forward only.

    Nothing is allocated beyond the bytes that really arrive: a header claiming
    more rows than the stream holds ends the read with an error naming the row.
    """

    def __init__(self, fh: IO[bytes], name: str, header: NpyHeader) -> None:
        self.fh = fh
        self.name = name
        self.header = header
        self.shape = header.shape
        self.dtype = header.dtype
        self.ndim = len(header.shape)
        self.row_bytes = math.prod(header.shape[1:]) * header.dtype.itemsize
        self.next_row = 0

    def __getitem__(self, sl: slice) -> np.ndarray:
        a, b, _ = sl.indices(self.shape[0])
        if a < self.next_row:
            raise InputError(f"{self.name}: a stream cannot be read backwards")
        self._read(a - self.next_row, keep=False)  # skipped rows
        data = self._read(max(0, b - a), keep=True)
        out = np.frombuffer(data, self.dtype).reshape((max(0, b - a), *self.shape[1:]))
        return out

    def _read(self, rows: int, *, keep: bool) -> bytes:
        want = rows * self.row_bytes
        parts: list[bytes] = []
        got = 0
        while got < want:
            block = self.fh.read(min(want - got, 1 << 24))
            if not block:
                raise InputError(
                    f"{self.name}: the stream ends at row {self.next_row + got // self.row_bytes + 1}"
                    f" of the {self.shape[0]} its .npy header declares: truncated or crafted input"
                )
            got += len(block)
            if keep:
                parts.append(block)
        self.next_row += rows
        return b"".join(parts)


class ArraySource(RecordSource):
    """Records from arrays: values, and optional ids, masks, visibility and extra fields."""

    def __init__(self, opts: ReadOptions) -> None:
        super().__init__(opts)
        self.values: Any = None
        self.ids: np.ndarray | None = None
        self.masks: np.ndarray | None = None
        self.vis: np.ndarray | None = None
        self.extra: dict[str, np.ndarray] = {}

    def finish(self) -> None:
        """Check that the arrays agree on their row count; set ``total``."""
        v = self.values
        check_array_shape(self.opts.name, self.opts.kind, tuple(v.shape), np.dtype(v.dtype))
        n = v.shape[0]
        named = [("ids", self.ids), ("masks", self.masks), ("visibility", self.vis)]
        for what, a in named + list(self.extra.items()):
            if a is not None and (a.ndim == 0 or a.shape[0] != n):
                rows = "no" if a.ndim == 0 else a.shape[0]
                raise InputError(f"{self.opts.name}: {what} has {rows} rows, values {n}")
        self.total = n
        self.has_masks = self.masks is not None
        self.has_visibility = self.vis is not None

    def skip(self, n: int) -> None:
        self.pos = min(self.total or 0, self.pos + n)

    def next_raw(self, n: int) -> RawRecords | None:
        a, b = self.pos, min(self.pos + n, int(self.total or 0))
        if a >= b:
            return None
        self.pos = b
        vals = np.asarray(self.values[a:b], np.float64).reshape(b - a, -1)
        ids: list[str | None] = (
            [str(i) for i in range(a, b)]
            if self.ids is None
            else [id_text(x) for x in self.ids[a:b].tolist()]
        )
        masks = None if self.masks is None else self.masks[a:b].tolist()
        vis = None if self.vis is None else np.asarray(self.vis[a:b])
        fields = {f: [id_text(x) for x in arr[a:b].tolist()] for f, arr in self.extra.items()}
        for f in self.opts.fields:
            fields.setdefault(f, [None] * (b - a))
        return RawRecords(
            np.arange(a + 1, b + 1, dtype=np.int64), None, ids, vals, masks, vis, fields
        )


class NpySource(ArraySource):
    """A ``.npy`` file (read by seeking) or stream (standard input, a pipe)."""

    def __init__(self, opts: ReadOptions) -> None:
        super().__init__(opts)
        name = opts.name
        self.fh: IO[bytes] | None = None
        if opts.path == "-":
            self.fh = sys.stdin.buffer
            h = read_npy_header(self.fh, name)
            check_array_shape(name, opts.kind, h.shape, h.dtype)
            if h.fortran_order:
                raise InputError(
                    f"{name}: a Fortran-order .npy cannot be streamed; save it in C order "
                    "(numpy.ascontiguousarray) or pass a file"
                )
            self.values = NpyStream(self.fh, name, h)
        else:
            try:
                fh = open(opts.path, "rb")  # noqa: SIM115 - kept open for a stream
                mode = os.fstat(fh.fileno()).st_mode
            except OSError as exc:
                raise InputError(f"cannot open {name}: {exc.strerror or exc}") from exc
            try:
                h = read_npy_header(fh, name)
                check_array_shape(name, opts.kind, h.shape, h.dtype)
                if stat.S_ISREG(mode):
                    size = os.fstat(fh.fileno()).st_size
                    held = size - h.offset
                    if h.nbytes != held:
                        raise InputError(
                            f"{name}: its .npy header declares shape {h.shape} of {h.dtype} "
                            f"({h.nbytes} bytes) but the file holds {held} bytes of data: it "
                            "is truncated or crafted; re-save it with numpy.save"
                        )
                    fh.close()
                    self.values = NpyRows(opts.path, name, h)
                else:
                    if h.fortran_order:
                        raise InputError(
                            f"{name}: a Fortran-order .npy cannot be streamed; save it in C "
                            "order or pass a regular file"
                        )
                    self.fh = fh
                    self.values = NpyStream(fh, name, h)
            except BaseException:
                fh.close()
                raise
        self.finish()

    def close(self) -> None:
        if self.fh is not None and self.opts.path != "-":
            self.fh.close()
