"""Reading templates and landmarks, writing results: the file formats of the CLI.

Inputs are read in **chunks** of a fixed number of records, so a file of ten
million probes never needs ten million rows in memory, and every record is
validated on its own: a malformed row, a wrong dimension, NaN/Inf, a norm of
zero or a bad mask either stops the read with an error naming the file and
the row (``on_error="stop"``) or becomes a :class:`Reject` with its reason
(``on_error="skip"``) while the read goes on. Nothing is dropped silently.

Input formats (chosen from the file ending, or given explicitly):

``npy``
    float array ``(n, d)`` of templates or ``(n, P, 2|3)`` of landmarks;
    memory-mapped. Ids are the zero-based row numbers (``"0"``, ``"1"`` …).
``npz``
    arrays ``ids`` (or the id field name), ``templates`` (or ``template``) or
    ``landmarks``, optional ``masks`` (uint64 block bitmasks), ``visibility``
    (bool ``(n, P)``) and extra string fields (e.g. ``claim``).
``parquet``
    a string/integer id column, a list column ``template`` or ``landmarks``
    (flat ``P*D`` numbers or a list of points), optional ``mask``,
    ``visibility`` and extra columns. Read by row groups.
``csv``
    a header; the id column; optional ``mask`` and extra columns; columns
    whose name starts with ``vis`` are landmark visibility flags (0/1); every
    other column is a number of the template (or a landmark coordinate
    ``x0, y0, x1, y1 …``).
``jsonl``
    one JSON object per line: ``{"id": "p1", "template": [...], "mask": 7}``
    or ``{"id": "p1", "landmarks": [[x, y], ...], "visibility": [...]}``.

``"-"`` reads standard input (``csv``, ``jsonl`` or ``npy``; give the format).
Rows are numbered from 1 in the order of the file (data rows, the CSV header
and blank lines not counted); text formats also give the line number.

Result tables (:func:`write_results_part`) hold ``probe_id, rank, identity,
score, decision`` and are written as CSV, JSON Lines or Parquet.
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

from pyfacematch.errors import InputError

__all__ = [
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "Chunk",
    "RecordReader",
    "Reject",
    "ResultColumns",
    "concat_parts",
    "detect_format",
    "result_part_suffix",
    "write_rejects",
    "write_results_part",
    "write_table",
]

INPUT_FORMATS: tuple[str, ...] = ("npy", "npz", "parquet", "csv", "jsonl")
OUTPUT_FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet")

_EXT = {
    ".npy": "npy",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}

_MAX_U64 = (1 << 64) - 1


def detect_format(
    path: str | os.PathLike[str], fmt: str | None = None, *, output: bool = False
) -> str:
    """The format of ``path``: ``fmt`` if given, else from the file ending.

    Raises
    ------
    InputError
        Unknown format, or ``"-"`` without an explicit format.
    """
    allowed = OUTPUT_FORMATS if output else INPUT_FORMATS
    if fmt is not None:
        f = str(fmt).lower()
        if f == "ndjson":
            f = "jsonl"
        if f not in allowed:
            raise InputError(f"unknown format {fmt!r}: expected one of {', '.join(allowed)}")
        return f
    p = os.fspath(path)
    if p == "-":
        raise InputError(
            "reading standard input ('-') needs its format: pass --input-format csv|jsonl|npy"
        )
    suffix = Path(p).suffix.lower()
    f = _EXT.get(suffix)
    if f is None or f not in allowed:
        raise InputError(
            f"cannot tell the format of {p!r} from its ending {suffix or '(none)'!r}: "
            f"use one of {', '.join(sorted(k for k, v in _EXT.items() if v in allowed))} "
            "or pass the format explicitly"
        )
    return f


# --------------------------------------------------------------------------- records
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


@dataclass
class _Raw:
    """Records as parsed, before validation (private)."""

    rows: np.ndarray
    lines: list[int] | None
    ids: list[str | None]
    values: np.ndarray | list[np.ndarray | None]  # (n, L) float64, or one flat array per row
    masks: list[Any] | np.ndarray | None = None
    visibility: list[Any] | np.ndarray | None = None
    fields: dict[str, list[str | None]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


def _id_str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, float):
        if not math.isfinite(v) or v != int(v):
            return None
        v = int(v)
    s = str(v)
    return s if s else None


# --------------------------------------------------------------------------- sources
class _Source:
    """Sequential reader of raw records of one format (private)."""

    total: int | None = None
    has_masks = False
    has_visibility = False

    def __init__(self, reader: RecordReader) -> None:
        self.r = reader
        self.pos = 0  # records handed out so far

    def next_raw(self, n: int) -> _Raw | None:
        raise NotImplementedError

    def skip(self, n: int) -> None:
        """Skip ``n`` records (default: read and drop them)."""
        while n > 0:
            raw = self.next_raw(min(n, 65536))
            if raw is None:
                return
            n -= len(raw.ids)

    def close(self) -> None:
        pass


class _ArraySource(_Source):
    """``.npy`` (memory-mapped) and ``.npz`` inputs."""

    def __init__(self, reader: RecordReader) -> None:
        super().__init__(reader)
        r = reader
        self.ids: np.ndarray | None = None
        self.masks: np.ndarray | None = None
        self.vis: np.ndarray | None = None
        self.extra: dict[str, np.ndarray] = {}
        if r.fmt == "npy":
            src: Any = sys.stdin.buffer if r.path == "-" else r.path
            try:
                if r.path == "-":
                    self.values = np.lib.format.read_array(src)
                else:
                    self.values = _NpyRows.open(r.path)
            except (ValueError, OSError, EOFError) as exc:
                raise InputError(f"{r.name}: not a readable .npy array ({exc})") from exc
        else:
            try:
                z = np.load(r.path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise InputError(f"{r.name}: not a readable .npz archive ({exc})") from exc
            with z:
                keys = set(z.files)
                want = ("templates", "template") if r.kind == "templates" else ("landmarks",)
                vk = next((k for k in want if k in keys), None)
                if vk is None:
                    raise InputError(
                        f"{r.name}: expected an array named {' or '.join(want)!s}, "
                        f"found {', '.join(sorted(keys)) or 'none'}"
                    )
                try:
                    self.values = z[vk]
                    for k in (r.id_field, "ids", "id"):
                        if k in keys:
                            self.ids = z[k]
                            break
                    if "masks" in keys or "mask" in keys:
                        self.masks = z["masks" if "masks" in keys else "mask"]
                    if r.kind == "landmarks" and "visibility" in keys:
                        self.vis = z["visibility"]
                    for f in r.fields:
                        if f in keys:
                            self.extra[f] = z[f]
                except (ValueError, OSError, EOFError) as exc:
                    raise InputError(f"{r.name}: cannot read its arrays ({exc})") from exc
        v = self.values
        want_ndim = (2,) if r.kind == "templates" else (2, 3)
        if v.dtype.kind not in "fiub" or v.ndim not in want_ndim:
            raise InputError(
                f"{r.name}: expected a numeric array of shape "
                f"{'(n, d)' if r.kind == 'templates' else '(n, P, 2|3)'}, "
                f"got {v.shape} {v.dtype}"
            )
        n = v.shape[0]
        for what, a in (("ids", self.ids), ("masks", self.masks), ("visibility", self.vis)):
            if a is not None and a.shape[0] != n:
                raise InputError(f"{r.name}: {what} has {a.shape[0]} rows, values {n}")
        self.total = n
        self.has_masks = self.masks is not None
        self.has_visibility = self.vis is not None

    def skip(self, n: int) -> None:
        self.pos = min(self.total or 0, self.pos + n)

    def next_raw(self, n: int) -> _Raw | None:
        a, b = self.pos, min(self.pos + n, int(self.total or 0))
        if a >= b:
            return None
        self.pos = b
        vals = np.asarray(self.values[a:b], np.float64).reshape(b - a, -1)
        ids = (
            [str(i) for i in range(a, b)]
            if self.ids is None
            else [_id_str(x) for x in self.ids[a:b].tolist()]
        )
        masks = None if self.masks is None else self.masks[a:b].tolist()
        vis = None if self.vis is None else np.asarray(self.vis[a:b])
        fields = {f: [_id_str(x) for x in arr[a:b].tolist()] for f, arr in self.extra.items()}
        for f in self.r.fields:
            fields.setdefault(f, [None] * (b - a))
        return _Raw(np.arange(a + 1, b + 1, dtype=np.int64), None, ids, vals, masks, vis, fields)


class _NpyRows:
    """Rows of a C-order ``.npy`` file read by seeking (private).

    A memory map would be simpler, but every page it touches stays in the
    process's resident set until the map is closed, so a ten-million-probe file
    would look like ten million probes in memory; reading a chunk with a seek
    keeps the memory of a job bounded by its chunk size.
    """

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.offset = offset
        self.ndim = len(shape)
        self.row_items = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1

    @staticmethod
    def open(path: str) -> Any:
        """A ``_NpyRows`` for a C-order file, else a read-only memory map."""
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                return np.load(path, mmap_mode="r", allow_pickle=False)
            offset = fh.tell()
        if fortran or dtype.hasobject or not shape:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        return _NpyRows(path, tuple(shape), dtype, offset)

    def __getitem__(self, sl: slice) -> np.ndarray:
        a, b, _ = sl.indices(self.shape[0])
        n = max(0, b - a)
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + a * self.row_items * self.dtype.itemsize)
            out = np.fromfile(fh, self.dtype, n * self.row_items)
        if out.size != n * self.row_items:
            raise InputError(
                f"{self.path}: the file is truncated (row {a + 1 + out.size // max(self.row_items, 1)})"
            )
        return out.reshape((n, *self.shape[1:]))


def _list_rows(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flatten an Arrow (nested) list array: (flat float64 values, per-row lengths; -1 = null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = np.asarray(pc.list_value_length(arr).fill_null(-1), np.int64)
    flat = pc.list_flatten(arr)
    if (
        pa.types.is_list(flat.type)
        or pa.types.is_large_list(flat.type)
        or pa.types.is_fixed_size_list(flat.type)
    ):
        inner, inner_len = _list_rows(flat)
        starts = np.concatenate([[0], np.cumsum(np.maximum(lengths, 0))])
        cs = np.concatenate([[0], np.cumsum(np.maximum(inner_len, 0))])
        totals = cs[starts[1:]] - cs[starts[:-1]]
        return inner, np.where(lengths < 0, -1, totals)
    if not (pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)):
        raise InputError(f"expected a list of numbers, got a list of {flat.type}")
    vals = np.asarray(pc.cast(flat, pa.float64()).fill_null(float("nan")), np.float64)
    return vals, lengths


class _ParquetSource(_Source):
    def __init__(self, reader: RecordReader) -> None:
        super().__init__(reader)
        import pyarrow as pa
        import pyarrow.parquet as pq

        r = reader
        try:
            self.pf = pq.ParquetFile(r.path)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{r.name}: not a readable Parquet file ({exc})") from exc
        names = set(self.pf.schema_arrow.names)
        want = ("template", "templates") if r.kind == "templates" else ("landmarks",)
        self.vcol = next((c for c in want if c in names), None)
        if self.vcol is None:
            raise InputError(
                f"{r.name}: expected a list column named {' or '.join(want)}, "
                f"found columns {', '.join(sorted(names))}"
            )
        self.idcol = r.id_field if r.id_field in names else None
        if self.idcol is None:
            raise InputError(f"{r.name}: no id column {r.id_field!r} (pass --id-field NAME)")
        self.mcol = "mask" if "mask" in names else ("masks" if "masks" in names else None)
        self.viscol = "visibility" if (r.kind == "landmarks" and "visibility" in names) else None
        self.fcols = [f for f in r.fields if f in names]
        self.cols = [c for c in (self.idcol, self.vcol, self.mcol, self.viscol) if c] + self.fcols
        self.total = self.pf.metadata.num_rows
        self.has_masks = self.mcol is not None
        self.has_visibility = self.viscol is not None
        self.rg = 0  # next row group to read
        self.buf: list[Any] = []  # pending record batches
        self.buffered = 0
        self._batches: Iterator[Any] | None = None

    def _iter(self) -> Iterator[Any]:
        import pyarrow as pa

        try:
            yield from self.pf.iter_batches(
                batch_size=max(1024, self.r.chunk_size),
                row_groups=list(range(self.rg, self.pf.num_row_groups)),
                columns=self.cols,
            )
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{self.r.name}: cannot read row {self.pos + 1}: {exc}") from exc

    def skip(self, n: int) -> None:
        md = self.pf.metadata
        # whole row groups first, without reading them
        while n > 0 and self.rg < md.num_row_groups and not self.buf:
            g = md.row_group(self.rg).num_rows
            if g > n:
                break
            self.rg += 1
            self.pos += g
            n -= g
        super().skip(n)

    def next_raw(self, n: int) -> _Raw | None:
        import pyarrow as pa

        if self._batches is None:
            self._batches = self._iter()
        while self.buffered < n:
            b = next(self._batches, None)
            if b is None:
                break
            if b.num_rows:
                self.buf.append(b)
                self.buffered += b.num_rows
        if not self.buffered:
            return None
        take = min(n, self.buffered)
        tbl = pa.Table.from_batches(self.buf).combine_chunks()
        cur, rest = tbl.slice(0, take), tbl.slice(take)
        self.buf = rest.to_batches() if rest.num_rows else []
        self.buffered = rest.num_rows
        a = self.pos
        self.pos += take
        rows = np.arange(a + 1, a + take + 1, dtype=np.int64)
        ids = [_id_str(x) for x in cur.column(self.idcol).to_pylist()]
        errors: dict[int, str] = {}
        try:
            flat, lengths = _list_rows(cur.column(self.vcol).combine_chunks())
        except InputError as exc:
            raise InputError(f"{self.r.name}: column {self.vcol!r}: {exc}") from exc
        if take and (lengths == lengths[0]).all() and lengths[0] >= 0:
            values: Any = flat.reshape(take, int(lengths[0]))
        else:
            offs = np.concatenate([[0], np.cumsum(np.maximum(lengths, 0))])
            values = []
            for i in range(take):
                if lengths[i] < 0:
                    values.append(None)
                    errors[i] = f"missing {self.r.kind[:-1]}: the {self.vcol!r} value is null"
                else:
                    values.append(flat[offs[i] : offs[i + 1]])
        masks = None if self.mcol is None else cur.column(self.mcol).to_pylist()
        vis = None if self.viscol is None else cur.column(self.viscol).to_pylist()
        fields: dict[str, list[str | None]] = {
            f: [_id_str(x) for x in cur.column(f).to_pylist()] for f in self.fcols
        }
        for f in self.r.fields:
            fields.setdefault(f, [None] * take)
        return _Raw(rows, None, ids, values, masks, vis, fields, errors)


class _TextSource(_Source):
    """CSV and JSON Lines (file or standard input)."""

    def __init__(self, reader: RecordReader) -> None:
        super().__init__(reader)
        r = reader
        if r.path == "-":
            self.fh: TextIO = sys.stdin
            self.own = False
        else:
            try:
                self.fh = open(r.path, encoding="utf-8", newline="")  # noqa: SIM115
            except OSError as exc:
                raise InputError(f"cannot open {r.name}: {exc.strerror or exc}") from exc
            self.own = True
            self.total = None
        self.line = 0
        self.header: list[str] | None = None
        if r.fmt == "csv":
            self.csv = csv.reader(self.fh)
            try:
                first = next(self.csv, None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise InputError(f"{r.name} line 1: unreadable CSV header ({exc})") from exc
            if first is None:
                first = []
            self.line = self.csv.line_num
            self._set_header([h.strip() for h in first])

    def _set_header(self, h: list[str]) -> None:
        r = self.r
        if r.id_field not in h:
            raise InputError(
                f"{r.name}: the CSV header has no id column {r.id_field!r} "
                f"(found {', '.join(h[:8]) or 'nothing'}{' …' if len(h) > 8 else ''}); "
                "pass --id-field NAME or add a header"
            )
        self.header = h
        self.i_id = h.index(r.id_field)
        self.i_mask = h.index("mask") if "mask" in h else None
        self.i_fields = {f: h.index(f) for f in r.fields if f in h}
        special = {self.i_id, self.i_mask, *self.i_fields.values()}
        self.i_vis = (
            [i for i, c in enumerate(h) if c.lower().startswith("vis") and i not in special]
            if r.kind == "landmarks"
            else []
        )
        special |= set(self.i_vis)
        self.i_vals = [i for i in range(len(h)) if i not in special]
        if not self.i_vals:
            raise InputError(f"{r.name}: the CSV header has no value columns after the id")
        self.has_masks = self.i_mask is not None
        self.has_visibility = bool(self.i_vis)
        self.width = len(h)

    def close(self) -> None:
        if self.own:
            self.fh.close()

    def _lines(self, n: int) -> Iterator[tuple[int, Any]]:
        """Yield up to ``n`` (line number, parsed record or exception) pairs."""
        got = 0
        if self.r.fmt == "csv":
            while got < n:
                try:
                    rec = next(self.csv, None)
                except csv.Error as exc:
                    self.line = self.csv.line_num
                    got += 1
                    yield self.line, exc
                    continue
                except UnicodeDecodeError as exc:
                    self.line += 1
                    got += 1
                    yield self.line, exc
                    continue
                if rec is None:
                    return
                self.line = self.csv.line_num
                if not rec or (len(rec) == 1 and not rec[0].strip()):
                    continue  # blank line
                got += 1
                yield self.line, rec
        else:
            while got < n:
                try:
                    s = self.fh.readline()
                except UnicodeDecodeError as exc:
                    self.line += 1
                    got += 1
                    yield self.line, exc
                    continue
                if not s:
                    return
                self.line += 1
                if not s.strip():
                    continue
                got += 1
                try:
                    yield self.line, json.loads(s)
                except ValueError as exc:
                    yield self.line, exc

    def next_raw(self, n: int) -> _Raw | None:
        r = self.r
        lines: list[int] = []
        ids: list[str | None] = []
        values: list[np.ndarray | None] = []
        masks: list[Any] = []
        vis: list[Any] = []
        fields: dict[str, list[str | None]] = {f: [] for f in r.fields}
        errors: dict[int, str] = {}
        for ln, rec in self._lines(n):
            i = len(ids)
            lines.append(ln)
            idv: str | None = None
            val: np.ndarray | None = None
            mk: Any = None
            vs: Any = None
            fv: dict[str, str | None] = {}
            try:
                if isinstance(rec, Exception):
                    kind = "malformed CSV" if r.fmt == "csv" else "malformed JSON"
                    if isinstance(rec, UnicodeDecodeError):
                        kind = "malformed text"
                    raise ValueError(f"{kind}: {str(rec)[:80]}")
                if r.fmt == "csv":
                    if self.header is None:  # pragma: no cover - header read in __init__
                        raise ValueError("malformed CSV: no header")
                    idv = _id_str(rec[self.i_id].strip()) if self.i_id < len(rec) else None
                    for f, j in self.i_fields.items():
                        fv[f] = _id_str(rec[j].strip()) if j < len(rec) else None
                    if len(rec) != self.width:
                        raise ValueError(
                            f"malformed row: expected {self.width} fields as in the header, "
                            f"got {len(rec)}"
                        )
                    try:
                        val = np.fromiter(
                            (float(rec[j]) for j in self.i_vals), np.float64, len(self.i_vals)
                        )
                    except ValueError:
                        bad = next(j for j in self.i_vals if not _is_float(rec[j]))
                        raise ValueError(
                            f"malformed number: column {self.header[bad]!r} is not a number"
                        ) from None
                    if self.i_mask is not None:
                        mk = rec[self.i_mask].strip()
                    if self.i_vis:
                        vs = [rec[j].strip() for j in self.i_vis]
                else:
                    if not isinstance(rec, dict):
                        raise ValueError(
                            f"malformed JSON: expected an object per line, got {type(rec).__name__}"
                        )
                    idv = _id_str(rec.get(r.id_field))
                    for f in r.fields:
                        fv[f] = _id_str(rec.get(f))
                    key = next(
                        (
                            k
                            for k in (
                                ("template", "templates")
                                if r.kind == "templates"
                                else ("landmarks",)
                            )
                            if k in rec
                        ),
                        None,
                    )
                    if key is None:
                        raise ValueError(
                            f"missing {r.kind[:-1]}: no "
                            f"{'template' if r.kind == 'templates' else 'landmarks'!r} field"
                        )
                    try:
                        val = np.asarray(rec[key], np.float64).reshape(-1)
                    except (ValueError, TypeError):
                        raise ValueError(
                            f"malformed {r.kind[:-1]}: {key!r} must be a list of numbers"
                        ) from None
                    mk = rec.get("mask")
                    vs = rec.get("visibility")
            except ValueError as exc:
                errors[i] = str(exc)
            ids.append(idv)
            values.append(val)
            masks.append(mk)
            vis.append(vs)
            for f in r.fields:
                fields[f].append(fv.get(f))
        if not ids:
            return None
        a = self.pos
        self.pos += len(ids)
        has_m = self.has_masks or any(m is not None for m in masks)
        has_v = self.has_visibility or any(v is not None for v in vis)
        return _Raw(
            np.arange(a + 1, a + len(ids) + 1, dtype=np.int64),
            lines,
            ids,
            values,
            masks if has_m else None,
            vis if has_v else None,
            fields,
            errors,
        )


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- reader
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
        self._src: _Source = {
            "npy": _ArraySource,
            "npz": _ArraySource,
            "parquet": _ParquetSource,
            "csv": _TextSource,
            "jsonl": _TextSource,
        }[self.fmt](self)

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

    def _validate(self, ci: int, start: int, raw: _Raw) -> Chunk:
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
        # finiteness, norm
        with np.errstate(invalid="ignore", over="ignore"):
            fin = np.isfinite(mat).all(axis=1)
            if self.kind == "templates":
                nz = (mat != 0).any(axis=1)
                big = (np.abs(mat) > np.finfo(np.float32).max).any(axis=1)
        for i in np.flatnonzero(~fin):
            if reasons[i] is None:
                reasons[i] = "non-finite value: NaN or Inf in the " + self.kind[:-1]
        if self.kind == "templates":
            for i in np.flatnonzero(fin & big):
                if reasons[i] is None:
                    reasons[i] = "non-finite value: a number overflows float32"
            for i in np.flatnonzero(fin & ~nz):
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
        if self.kind == "landmarks":
            values = values.reshape(len(idx), self.points or 0, -1)
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

    def _masks(self, raw: _Raw, reasons: list[str | None]) -> np.ndarray | None:
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

    def _visibility(self, raw: _Raw, reasons: list[str | None]) -> np.ndarray | None:
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
            except (TypeError, ValueError):
                reasons[i] = "bad visibility: expected 0/1 flags"
                continue
            if a.size != p:
                reasons[i] = f"bad visibility: expected {p} flags, got {a.size}"
            else:
                out[i] = a != 0
        return out


# --------------------------------------------------------------------------- results
@dataclass
class ResultColumns:
    """Rows of a result table (one per probe and rank).

    Attributes
    ----------
    probe_id : list of str
    rank : int32 (n,)
        1 = best; 0 when the probe has no candidate at all.
    identity : list of str or None
    score : float32 (n,)
        NaN when there is no candidate.
    decision : list of str or None
        ``"match"`` (score ≥ threshold), ``"no-match"``, or None when no
        threshold applies.
    """

    probe_id: list[str]
    rank: np.ndarray
    identity: list[str | None]
    score: np.ndarray
    decision: list[str | None]

    def __len__(self) -> int:
        return len(self.probe_id)


RESULT_FIELDS = ("probe_id", "rank", "identity", "score", "decision")


def _csv_cell(s: str | None) -> str:
    if s is None:
        return ""
    if any(c in s for c in ',"\r\n') or s != s.strip():
        return '"' + s.replace('"', '""') + '"'
    return s


def _score_text(x: float) -> str:
    return "" if x != x else f"{x:.6f}"


def result_part_suffix(fmt: str) -> str:
    """File ending of a part file of a result table in format ``fmt``."""
    return {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}[fmt]


def _result_arrow(cols: ResultColumns) -> Any:
    import pyarrow as pa

    score = np.asarray(cols.score, np.float32)
    return pa.table(
        {
            "probe_id": pa.array(cols.probe_id, pa.string()),
            "rank": pa.array(np.asarray(cols.rank, np.int32), pa.int32()),
            "identity": pa.array(cols.identity, pa.string()),
            "score": pa.array(score, pa.float32(), mask=np.isnan(score)),
            "decision": pa.array(cols.decision, pa.string()),
        }
    )


def result_bytes(fmt: str, cols: ResultColumns) -> bytes:
    """CSV (no header) or JSON Lines text of result rows."""
    scores = [_score_text(float(s)) for s in np.asarray(cols.score, np.float32).tolist()]
    ranks = np.asarray(cols.rank).tolist()
    out: list[str] = []
    if fmt == "csv":
        for p, r, i, s, d in zip(cols.probe_id, ranks, cols.identity, scores, cols.decision):
            out.append(f"{_csv_cell(p)},{r},{_csv_cell(i)},{s},{d or ''}\n")
    elif fmt == "jsonl":
        dumps = json.dumps
        for p, r, i, s, d in zip(cols.probe_id, ranks, cols.identity, scores, cols.decision):
            out.append(
                f'{{"probe_id": {dumps(p)}, "rank": {r}, "identity": {dumps(i)}, '
                f'"score": {s or "null"}, "decision": {dumps(d)}}}\n'
            )
    else:
        raise InputError(f"result_bytes: text formats only, got {fmt!r}")
    return "".join(out).encode("utf-8")


def _write_file_atomic(path: Path, write: Any) -> None:
    """Call ``write(binary file)`` on a temporary file, fsync, rename onto ``path``."""
    from pyfacematch.gallery.atomic import fsync_dir

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_results_part(path: str | os.PathLike[str], fmt: str, cols: ResultColumns) -> None:
    """Write result rows to a part file atomically (written, fsync-ed, renamed)."""
    p = Path(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        tbl = _result_arrow(cols)
        _write_file_atomic(p, lambda fh: pq.write_table(tbl, fh))
    else:
        data = result_bytes(fmt, cols)
        _write_file_atomic(p, lambda fh: fh.write(data))


def _result_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("probe_id", pa.string()),
            ("rank", pa.int32()),
            ("identity", pa.string()),
            ("score", pa.float32()),
            ("decision", pa.string()),
        ]
    )


def concat_parts(
    parts: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], fmt: str
) -> None:
    """Concatenate result part files into ``out`` atomically (bounded memory).

    CSV gets one header; Parquet one row group per non-empty part.
    """

    def write(fh: BinaryIO) -> None:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(fh, _result_schema()) as w:
                for part in parts:
                    t = pq.read_table(part)
                    if t.num_rows:
                        w.write_table(t)
            return
        if fmt == "csv":
            fh.write((",".join(RESULT_FIELDS) + "\n").encode())
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)

    _write_file_atomic(Path(out), write)


REJECT_FIELDS = ("row", "line", "id", "reason")


def rejects_bytes(fmt: str, rejects: Sequence[Reject]) -> bytes:
    """Rejects as CSV (no header) or JSON Lines text."""
    out = []
    for r in rejects:
        if fmt == "jsonl":
            out.append(
                json.dumps({"row": r.row, "line": r.line, "id": r.id, "reason": r.reason}) + "\n"
            )
        else:
            line = "" if r.line is None else str(r.line)
            out.append(f"{r.row},{line},{_csv_cell(r.id)},{_csv_cell(r.reason)}\n")
    return "".join(out).encode("utf-8")


def rejects_format(path: str | os.PathLike[str]) -> str:
    """``"jsonl"`` for a .jsonl/.json/.ndjson rejects file, else ``"csv"``."""
    return "jsonl" if Path(path).suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv"


def write_rejects(
    path: str | os.PathLike[str], rejects: Sequence[Reject] | None = None, parts: Sequence[Any] = ()
) -> None:
    """Write a rejects file (CSV with header, or JSON Lines) atomically.

    ``rejects`` are written first, then the bytes of the (headerless) ``parts``.
    """
    fmt = rejects_format(path)

    def write(fh: BinaryIO) -> None:
        if fmt == "csv":
            fh.write((",".join(REJECT_FIELDS) + "\n").encode())
        if rejects:
            fh.write(rejects_bytes(fmt, rejects))
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)

    _write_file_atomic(Path(path), write)


# --------------------------------------------------------------------------- tables
def write_table(
    path: str | os.PathLike[str],
    fmt: str,
    ids: Sequence[str],
    values: np.ndarray,
    *,
    value_name: str = "template",
    masks: np.ndarray | None = None,
    extra: dict[str, Sequence[Any]] | None = None,
) -> None:
    """Write records (id, values, optional mask) in an input format, atomically.

    The file can be read back by :class:`RecordReader` (used by ``export``
    and by the demo and tests to make inputs).

    Parameters
    ----------
    path : path
    fmt : {"npy", "npz", "parquet", "csv", "jsonl"}
    ids : sequence of str, length n
    values : float array (n, d) (templates) or (n, P, D) (landmarks)
    value_name : str
        ``"template"`` or ``"landmarks"``.
    masks : uint64 (n,) or None
    extra : mapping of column name to n values, or None
    """
    v = np.asarray(values)
    n = v.shape[0]
    extra = dict(extra or {})
    p = Path(path)

    def write(fh: BinaryIO) -> None:
        if fmt == "npy":
            np.save(fh, v)
        elif fmt == "npz":
            arrs: dict[str, Any] = {
                "ids": np.asarray(list(ids), dtype=str),
                ("templates" if value_name == "template" else "landmarks"): v,
            }
            if masks is not None:
                arrs["masks"] = np.asarray(masks, np.uint64)
            for k, col in extra.items():
                arrs[k] = np.asarray(col)
            np.savez(fh, **arrs)
        elif fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            flat = v.reshape(n, -1)
            cols: dict[str, Any] = {
                "id": pa.array(list(ids), pa.string()),
                value_name: pa.FixedSizeListArray.from_arrays(
                    pa.array(flat.ravel()), flat.shape[1]
                ),
            }
            if masks is not None:
                cols["mask"] = pa.array(np.asarray(masks, np.uint64))
            for k, col in extra.items():
                cols[k] = pa.array(list(col))
            pq.write_table(pa.table(cols), fh)
        elif fmt == "csv":
            flat = v.reshape(n, -1)
            txt = _io.StringIO()
            w = csv.writer(txt, lineterminator="\n")
            names = (
                [f"f{j}" for j in range(flat.shape[1])]
                if value_name == "template"
                else [f"{'xyz'[j % v.shape[-1]]}{j // v.shape[-1]}" for j in range(flat.shape[1])]
            )
            head = ["id", *names]
            if masks is not None:
                head.append("mask")
            head += list(extra)
            w.writerow(head)
            for i in range(n):
                row = [ids[i], *(repr(float(x)) for x in flat[i].tolist())]
                if masks is not None:
                    row.append(str(int(masks[i])))
                row += [str(col[i]) for col in extra.values()]
                w.writerow(row)
            fh.write(txt.getvalue().encode("utf-8"))
        elif fmt == "jsonl":
            for i in range(n):
                rec: dict[str, Any] = {"id": ids[i], value_name: v[i].tolist()}
                if masks is not None:
                    rec["mask"] = int(masks[i])
                for k, col in extra.items():
                    rec[k] = col[i]
                fh.write((json.dumps(rec) + "\n").encode("utf-8"))
        else:
            raise InputError(f"unknown format {fmt!r}: expected one of {', '.join(INPUT_FORMATS)}")

    _write_file_atomic(p, write)


# --------------------------------------------------------------------------- images
class ImageFolderReader:
    """Face images of a folder, embedded chunk by chunk (same interface as :class:`RecordReader`).

    Layout ``folder/<identity>/<image>`` (enrollment: the identity is the
    subfolder) or any folder of probe images (the probe id is the path relative
    to the folder). Images are listed in sorted order, so chunk boundaries are
    fixed and a job over a folder can be resumed. An image without a usable face
    (unreadable, no face, several faces with the ``single`` policy …) is a
    reject whose reason is the embedder's failure reason.

    Parameters
    ----------
    folder : path
    embedder : pyfacematch.embed.Embedder
    role : {"enroll", "probe"}
        Where ids come from (subfolder name, or relative path).
    chunk_size : int
    on_error : {"stop", "skip"}
    policy : str
        Face policy of the embedder (``"largest"``).
    """

    kind = "templates"
    fmt = "images"

    def __init__(
        self,
        folder: str | os.PathLike[str],
        embedder: Any,
        *,
        role: str = "probe",
        chunk_size: int = 256,
        on_error: str = "stop",
        policy: str = "largest",
    ) -> None:
        from pyfacematch.embed import list_images

        if not os.path.isdir(folder):
            raise InputError(
                f"image folder {os.fspath(folder)!r} does not exist or is not a folder"
            )
        if on_error not in ("stop", "skip"):
            raise InputError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
        self.path = os.fspath(folder)
        self.name = self.path
        self.embedder = embedder
        self.role = role
        self.chunk_size = int(chunk_size)
        self.on_error = on_error
        self.policy = policy
        self.entries = list_images(folder)
        self.dim = int(embedder.dim)
        self.has_masks = False
        self.total = len(self.entries)

    def count_records(self) -> int:
        return len(self.entries)

    def fingerprint(self) -> dict[str, Any]:
        """Folder, and a digest of the listed files' names, sizes and modification times."""
        import hashlib

        h = hashlib.sha256()
        for ident, p in self.entries:
            st = os.stat(p)
            h.update(f"{ident}\0{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {
            "path": os.path.abspath(self.path),
            "files": len(self.entries),
            "digest": h.hexdigest(),
        }

    def where(self, row: int, line: int | None) -> str:
        return f"{self.name} image {row}"

    def fail(self, rej: Reject) -> InputError:
        return InputError(
            f"{self.where(rej.row, None)} ({rej.id}): {rej.reason}; pass --on-error skip to write "
            "images without a usable face to a rejects file and go on"
        )

    def close(self) -> None:
        pass

    def chunks(self, skip_chunks: int = 0) -> Iterator[Chunk]:
        base = Path(self.path)
        for ci in range(skip_chunks, -(-len(self.entries) // self.chunk_size)):
            a = ci * self.chunk_size
            part = self.entries[a : a + self.chunk_size]
            batch = self.embedder.embed([p for _, p in part], policy=self.policy)
            ids: list[str] = []
            rows: list[int] = []
            vals: list[np.ndarray] = []
            rejects: list[Reject] = []
            for j, ((ident, p), res) in enumerate(zip(part, batch.images)):
                rid = ident if self.role == "enroll" else Path(p).relative_to(base).as_posix()
                if res.ok and len(res.templates):
                    ids.append(rid)
                    rows.append(a + j + 1)
                    vals.append(np.asarray(res.templates[0], np.float32))
                else:
                    rej = Reject(a + j + 1, None, rid, f"{res.reason}: {res.message}".rstrip(": "))
                    if self.on_error == "stop":
                        raise self.fail(rej)
                    rejects.append(rej)
            yield Chunk(
                ci,
                a,
                len(part),
                ids,
                np.asarray(rows, np.int64),
                np.stack(vals) if vals else np.zeros((0, self.dim), np.float32),
                None,
                None,
                {},
                rejects,
            )
