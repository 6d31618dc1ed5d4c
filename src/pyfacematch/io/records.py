"""Reading templates or landmarks in validated chunks, whatever the format.

Inputs are read in **chunks** of a fixed number of records, so a file of ten million probes never
needs ten million rows in memory, and every record is validated on its own: a malformed row, a
wrong dimension, NaN/Inf, a norm of zero or a bad mask either stops the read with an error naming
the file and the row (``on_error="stop"``) or becomes a :class:`Reject` with its reason
(``on_error="skip"``) while the read goes on. Nothing is dropped silently. The format readers live
in one module each (:mod:`~pyfacematch.io.npy`, :mod:`~pyfacematch.io.npz`,
:mod:`~pyfacematch.io.parquet`, :mod:`~pyfacematch.io.csvfile`, :mod:`~pyfacematch.io.jsonl`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.io.csvfile import CsvSource
from pyfacematch.io.formats import detect_format
from pyfacematch.io.jsonl import JsonlSource
from pyfacematch.io.npy import NpySource
from pyfacematch.io.npz import NpzSource
from pyfacematch.io.parquet import ParquetSource
from pyfacematch.io.source import RawRecords, ReadOptions, RecordSource

__all__ = ["SOURCES", "Chunk", "RecordReader", "Reject"]

_MAX_U64 = (1 << 64) - 1

#: Format → the source class that reads it.
SOURCES: dict[str, type[RecordSource]] = {
    "npy": NpySource,
    "npz": NpzSource,
    "parquet": ParquetSource,
    "csv": CsvSource,
    "jsonl": JsonlSource,
}


@dataclass(frozen=True)
class Reject:
    """A record that was not used, and why (never its biometric content).

    Attributes
    ----------
    row : int
        1-based record number in its file.
    line : int or None
        Line number (text formats).
    id : str or None
        The record's id when it could be read.
    reason : str
        Short reason, e.g. ``"wrong dimension: expected 512 numbers, got 511"``.
    """

    row: int
    line: int | None
    id: str | None
    reason: str

    @property
    def kind(self) -> str:
        """The reason's category (text before the first colon)."""
        return self.reason.split(":", 1)[0]


@dataclass
class Chunk:
    """A chunk of validated records.

    Attributes
    ----------
    index : int
        Chunk number (0-based); chunk ``i`` holds records ``i*size … i*size+count-1``.
    start : int
        Records before this chunk.
    count : int
        Records this chunk consumed (valid + rejected).
    ids : list of str
        Ids of the valid records, in file order.
    rows : int64 (n,)
        1-based record numbers of the valid records.
    values : float32 (n, d) or (n, P, D)
        Templates (finite, non-zero; not normalised) or landmarks.
    masks : uint64 (n,) or None
        Block bitmasks when the input has them.
    visibility : bool (n, P) or None
        Landmark visibility when the input has it.
    fields : dict of str to list of str or None
        Extra requested fields of the valid records.
    rejects : list of Reject
    """

    index: int
    start: int
    count: int
    ids: list[str]
    rows: np.ndarray
    values: np.ndarray
    masks: np.ndarray | None
    visibility: np.ndarray | None
    fields: dict[str, list[str | None]]
    rejects: list[Reject]

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, keep: np.ndarray) -> Chunk:
        """The same chunk restricted to valid rows where ``keep`` (bool (n,)) is true."""
        idx = np.flatnonzero(keep)
        return Chunk(
            self.index,
            self.start,
            self.count,
            [self.ids[i] for i in idx],
            self.rows[idx],
            self.values[idx],
            None if self.masks is None else self.masks[idx],
            None if self.visibility is None else self.visibility[idx],
            {k: [v[i] for i in idx] for k, v in self.fields.items()},
            self.rejects,
        )


class RecordReader:
    """Read templates or landmarks in validated chunks.

    Parameters
    ----------
    path : str or os.PathLike
        File, or ``"-"`` for standard input.
    kind : {"templates", "landmarks"}
    fmt : str or None
        One of :data:`INPUT_FORMATS`; None: from the file ending.
    dim : int or None
        Templates: the expected dimension (None: taken from the first valid
        record). Ignored for landmarks.
    points : int or None
        Landmarks: the expected point count P (the key model's scheme).
    n_blocks : int or None
        Number of region blocks masks may refer to (bits beyond are rejected);
        None: masks are not accepted.
    id_field : str
        Name of the id column / field / npz array.
    fields : sequence of str
        Extra string fields to carry along (e.g. ``("claim",)``).
    chunk_size : int
        Records per chunk.
    on_error : {"stop", "skip"}
        Stop at the first bad record (raise :class:`InputError` naming the
        file and the row) or collect it as a :class:`Reject`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        kind: str = "templates",
        fmt: str | None = None,
        *,
        dim: int | None = None,
        points: int | None = None,
        n_blocks: int | None = None,
        id_field: str = "id",
        fields: Sequence[str] = (),
        chunk_size: int = 10_000,
        on_error: str = "stop",
    ) -> None:
        if kind not in ("templates", "landmarks"):
            raise InputError(f"kind must be 'templates' or 'landmarks', got {kind!r}")
        if on_error not in ("stop", "skip"):
            raise InputError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
        if isinstance(chunk_size, bool) or int(chunk_size) < 1:
            raise InputError(f"chunk size must be a positive integer, got {chunk_size!r}")
        self.path = "-" if os.fspath(path) == "-" else os.fspath(path)
        self.name = "<stdin>" if self.path == "-" else self.path
        self.kind = kind
        self.fmt = detect_format(self.path, fmt)
        if self.path == "-" and self.fmt not in ("csv", "jsonl", "npy"):
            raise InputError(f"standard input can be csv, jsonl or npy, not {self.fmt}")
        if self.path != "-" and not os.path.exists(self.path):
            raise InputError(f"input file {self.path!r} does not exist")
        if self.path != "-" and os.path.isdir(self.path):
            raise InputError(f"input {self.path!r} is a folder, expected a file")
        self.dim = None if dim is None else int(dim)
        self.points = None if points is None else int(points)
        self.n_blocks = n_blocks
        self.id_field = id_field
        self.fields = tuple(fields)
        self.chunk_size = int(chunk_size)
        self.on_error = on_error
        self._coord_dim: int | None = None
        opts = ReadOptions(
            self.path, self.name, self.fmt, kind, id_field, self.fields, self.chunk_size
        )
        self._src: RecordSource = SOURCES[self.fmt](opts)

    @property
    def total(self) -> int | None:
        """Number of records when known without reading the file (npy, npz, parquet)."""
        return self._src.total

    def count_records(self) -> int | None:
        """Number of records: known, or counted by a fast pass over a text file (None for stdin)."""
        if self._src.total is not None:
            return self._src.total
        if self.path == "-":
            return None
        n = 0
        with open(self.path, "rb") as fh:
            prev = b"\n"
            for block in iter(lambda: fh.read(1 << 22), b""):
                n += block.count(b"\n")
                prev = block[-1:]
            if prev != b"\n":
                n += 1
        return max(0, n - (1 if self.fmt == "csv" else 0))  # upper bound when blank lines

    @property
    def has_masks(self) -> bool:
        return self._src.has_masks

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chunks(self, skip_chunks: int = 0) -> Iterator[Chunk]:
        """Validated chunks, starting after ``skip_chunks`` whole chunks.

        Raises
        ------
        InputError
            ``on_error="stop"`` and a record is bad: the message names the
            file, the row (and line) and the reason.
        """
        try:
            self._src.skip(skip_chunks * self.chunk_size)
            ci = skip_chunks
            while True:
                start = self._src.pos
                raw = self._src.next_raw(self.chunk_size)
                if raw is None:
                    return
                yield self._validate(ci, start, raw)
                ci += 1
        finally:
            self.close()  # the file is closed once read, stopped or abandoned

    def where(self, row: int, line: int | None) -> str:
        """``"file row R (line L)"`` for messages."""
        return f"{self.name} row {row}" + (f" (line {line})" if line is not None else "")

    def fail(self, rej: Reject) -> InputError:
        """The error that stops a job at ``rej``."""
        return InputError(
            f"{self.where(rej.row, rej.line)}{f' id {rej.id!r}' if rej.id else ''}: {rej.reason}; "
            "fix the record, or pass --on-error skip to write bad records to a rejects "
            "file and go on"
        )

    def _validate(self, ci: int, start: int, raw: RawRecords) -> Chunk:
        n = len(raw.ids)
        reasons: list[str | None] = [None] * n
        for i, why in raw.errors.items():
            reasons[i] = why
        for i in range(n):
            if reasons[i] is None and raw.ids[i] is None:
                reasons[i] = f"missing id: no {self.id_field!r} value"
        # values: lengths and shape
        if self.kind == "templates":
            expect = self.dim
        else:
            if self.points is None:
                raise InputError("landmark input needs the point count of the key model's scheme")
            expect = None if self._coord_dim is None else self.points * self._coord_dim
        if isinstance(raw.values, np.ndarray):
            length = raw.values.shape[1]
            if expect is None:
                expect = self._first_length(length)
            mat = raw.values
            if length != expect:
                for i in range(n):
                    if reasons[i] is None:
                        reasons[i] = self._length_reason(expect, length)
                mat = np.zeros((n, expect), np.float64)
        else:
            mat = None
            for i, v in enumerate(raw.values):
                if reasons[i] is not None or v is None:
                    continue
                if expect is None:
                    expect = self._first_length(v.size)
                if v.size != expect:
                    reasons[i] = self._length_reason(expect, v.size)
            if expect is None:
                expect = self.dim or 1
            mat = np.zeros((n, expect), np.float64)
            for i, v in enumerate(raw.values):
                if reasons[i] is None and v is not None:
                    mat[i] = v
        if self.kind == "templates" and self.dim is None and expect is not None:
            self.dim = expect
        # finiteness (in float32, where the values end up), norm
        assert mat is not None
        with np.errstate(invalid="ignore", over="ignore"):
            fin = np.isfinite(mat).all(axis=1)
            big = (np.abs(mat) > np.finfo(np.float32).max).any(axis=1)
            nz = (mat != 0).any(axis=1)
        for i in np.flatnonzero(~fin).tolist():
            if reasons[i] is None:
                reasons[i] = "non-finite value: NaN or Inf in the " + self.kind[:-1]
        for i in np.flatnonzero(fin & big).tolist():  # landmarks too: found by the fuzzer
            if reasons[i] is None:
                reasons[i] = "non-finite value: a number overflows float32"
        if self.kind == "templates":
            for i in np.flatnonzero(fin & ~nz).tolist():
                if reasons[i] is None:
                    reasons[i] = "zero template: norm 0 cannot be normalised"
        masks = self._masks(raw, reasons)
        vis = self._visibility(raw, reasons)
        rejects = [
            Reject(int(raw.rows[i]), None if raw.lines is None else raw.lines[i], raw.ids[i], why)
            for i, why in enumerate(reasons)
            if why is not None
        ]
        if rejects and self.on_error == "stop":
            raise self.fail(rejects[0])
        keep = np.array([w is None for w in reasons], bool)
        idx = np.flatnonzero(keep)
        values = mat[idx].astype(np.float32)
        if self.kind == "landmarks":  # (0, P, D) too when every record was rejected
            values = values.reshape(len(idx), self.points or 0, self._coord_dim or 2)
        return Chunk(
            ci,
            start,
            n,
            [raw.ids[i] for i in idx],  # type: ignore[misc]
            raw.rows[idx],
            values,
            None if masks is None else masks[idx],
            None if vis is None else vis[idx],
            {k: [v[i] for i in idx] for k, v in raw.fields.items()},
            rejects,
        )

    def _first_length(self, length: int) -> int:
        if self.kind == "templates":
            return length
        p = self.points or 1
        if length % p or length // p not in (2, 3):
            return p * 2  # reported as a wrong count below
        self._coord_dim = length // p
        return length

    def _length_reason(self, expect: int, got: int) -> str:
        if self.kind == "templates":
            return f"wrong dimension: expected {expect} numbers, got {got}" + (
                " (was it made by another key model?)" if got else ""
            )
        return (
            f"wrong landmark count: expected {self.points} points × "
            f"{self._coord_dim or '2|3'} coordinates = {expect} numbers, got {got}"
        )

    def _masks(self, raw: RawRecords, reasons: list[str | None]) -> np.ndarray | None:
        if raw.masks is None:
            return None
        n = len(raw.ids)
        out = np.zeros(n, np.uint64)
        nb = self.n_blocks
        if nb is None:
            if any(m not in (None, "") for m in list(raw.masks)):
                for i in range(n):
                    if reasons[i] is None:
                        reasons[i] = (
                            "unexpected mask: this gallery has no region blocks, "
                            "so masks cannot be used"
                        )
            return None
        full = (1 << nb) - 1
        for i, m in enumerate(list(raw.masks)):
            if reasons[i] is not None:
                continue
            if m is None or m == "":
                out[i] = full
                continue
            try:
                v = int(m) if not isinstance(m, float) or m == int(m) else None
            except (TypeError, ValueError, OverflowError):
                v = None
            if v is None or isinstance(m, bool) or not 0 <= v <= _MAX_U64:
                reasons[i] = "bad mask: expected a non-negative integer bitmask"
            elif v == 0:
                reasons[i] = "bad mask: no valid block (mask 0)"
            elif v & ~full:
                reasons[i] = f"bad mask: bits beyond the {nb} region blocks"
            else:
                out[i] = v
        return out

    def _visibility(self, raw: RawRecords, reasons: list[str | None]) -> np.ndarray | None:
        if raw.visibility is None or self.kind != "landmarks":
            return None
        n = len(raw.ids)
        p = self.points or 0
        out = np.ones((n, p), bool)
        if isinstance(raw.visibility, np.ndarray):
            v = raw.visibility.reshape(n, -1)
            if v.shape[1] != p:
                for i in range(n):
                    if reasons[i] is None:
                        reasons[i] = f"bad visibility: expected {p} flags, got {v.shape[1]}"
                return out
            return v.astype(bool)
        for i, v in enumerate(raw.visibility):
            if reasons[i] is not None or v is None:
                continue
            try:
                a = np.asarray([float(x) for x in v], np.float64)
            except (TypeError, ValueError, OverflowError, RecursionError):
                reasons[i] = "bad visibility: expected 0/1 flags"
                continue
            if a.size != p:
                reasons[i] = f"bad visibility: expected {p} flags, got {a.size}"
            else:
                out[i] = a != 0
        return out
