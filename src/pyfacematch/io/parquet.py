"""Parquet inputs: an id column, a list column of templates or landmarks, optional extras.

Columns: a string/integer id column, a list column ``template`` or ``landmarks`` (flat ``P*D``
numbers or a list of points), optional ``mask``, ``visibility`` and extra columns. Read by row
groups, so memory is bounded by the chunk size. The value column's type is checked when the file is
opened: a scalar or non-numeric column is refused with a message, not met half-way through a job.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.io.source import RawRecords, ReadOptions, RecordSource, id_text

__all__ = ["ParquetSource", "column_values", "list_rows", "numeric_list_type"]


def _is_list(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def numeric_list_type(t: Any) -> bool:
    """True when Arrow type ``t`` is a (nested) list whose innermost values are numbers."""
    import pyarrow as pa

    if not _is_list(t):
        return False
    depth = 0
    while _is_list(t):
        t = t.value_type
        depth += 1
        if depth > 4:
            return False
    return bool(pa.types.is_floating(t) or pa.types.is_integer(t))


def list_rows(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flatten an Arrow (nested) list array: (flat float64 values, per-row lengths; -1 = null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = np.asarray(pc.list_value_length(arr).fill_null(-1), np.int64)
    flat = pc.list_flatten(arr)
    if _is_list(flat.type):
        inner, inner_len = list_rows(flat)
        starts = np.concatenate([[0], np.cumsum(np.maximum(lengths, 0))])
        cs = np.concatenate([[0], np.cumsum(np.maximum(inner_len, 0))])
        totals = cs[starts[1:]] - cs[starts[:-1]]
        return inner, np.where(lengths < 0, -1, totals)
    if not (pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)):
        raise InputError(f"expected a list of numbers, got a list of {flat.type}")
    vals = np.asarray(pc.cast(flat, pa.float64()).fill_null(float("nan")), np.float64)
    return vals, lengths


def column_values(col: Any) -> tuple[list[Any], set[int]]:
    """Python values of an Arrow column, and the rows whose text is not valid UTF-8 (as None).

    Arrow does not validate strings when it reads a file, so a crafted file can hold bytes that
    are not UTF-8; only those rows are spoilt.
    """
    try:
        return col.to_pylist(), set()
    except UnicodeDecodeError:
        pass
    values: list[Any] = []
    bad: set[int] = set()
    for i in range(len(col)):
        try:
            values.append(col[i].as_py())
        except UnicodeDecodeError:
            values.append(None)
            bad.add(i)
    return values, bad


class ParquetSource(RecordSource):
    """A Parquet file, read by row groups."""

    def __init__(self, opts: ReadOptions) -> None:
        super().__init__(opts)
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = opts.name
        try:
            if not stat.S_ISREG(os.stat(opts.path).st_mode):
                raise InputError(f"{name}: not a regular file (Parquet needs random access)")
            self.pf = pq.ParquetFile(opts.path)
            schema = self.pf.schema_arrow
            self.total = self.pf.metadata.num_rows
        except (OSError, pa.ArrowException, ValueError) as exc:  # ValueError: names not UTF-8
            raise InputError(f"{name}: not a readable Parquet file ({exc})") from exc
        names = set(schema.names)
        want = opts.value_names
        self.vcol = next((c for c in want if c in names), None)
        if self.vcol is None:
            raise InputError(
                f"{name}: expected a list column named {' or '.join(want)}, "
                f"found columns {', '.join(sorted(names))}"
            )
        vtype = schema.field(self.vcol).type
        if not numeric_list_type(vtype):
            raise InputError(
                f"{name}: column {self.vcol!r} holds {vtype}, expected one list of numbers per "
                f"record (list<float>{' or a list of points' if opts.kind == 'landmarks' else ''})"
                ": write each record's values as a list"
            )
        self.idcol = opts.id_field if opts.id_field in names else None
        if self.idcol is None:
            raise InputError(f"{name}: no id column {opts.id_field!r} (pass --id-field NAME)")
        self.mcol = "mask" if "mask" in names else ("masks" if "masks" in names else None)
        self.viscol = "visibility" if (opts.kind == "landmarks" and "visibility" in names) else None
        self.fcols = [f for f in opts.fields if f in names]
        self.cols = [c for c in (self.idcol, self.vcol, self.mcol, self.viscol) if c] + self.fcols
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
                batch_size=max(1024, self.opts.chunk_size),
                row_groups=list(range(self.rg, self.pf.num_row_groups)),
                columns=self.cols,
            )
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise InputError(f"{self.opts.name}: cannot read row {self.pos + 1}: {exc}") from exc

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

    def next_raw(self, n: int) -> RawRecords | None:
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
        try:
            tbl = pa.Table.from_batches(self.buf).combine_chunks()
        except pa.ArrowException as exc:
            raise InputError(f"{self.opts.name}: cannot read row {self.pos + 1}: {exc}") from exc
        cur, rest = tbl.slice(0, take), tbl.slice(take)
        self.buf = rest.to_batches() if rest.num_rows else []
        self.buffered = rest.num_rows
        a = self.pos
        self.pos += take
        rows = np.arange(a + 1, a + take + 1, dtype=np.int64)
        raw_ids, bad = column_values(cur.column(self.idcol))
        ids = [id_text(x) for x in raw_ids]
        errors: dict[int, str] = {i: "malformed text: the id is not UTF-8" for i in bad}
        try:
            flat, lengths = list_rows(cur.column(self.vcol).combine_chunks())
        except InputError as exc:
            raise InputError(f"{self.opts.name}: column {self.vcol!r}: {exc}") from exc
        except pa.ArrowException as exc:
            raise InputError(
                f"{self.opts.name}: column {self.vcol!r} near row {a + 1}: {exc}"
            ) from exc
        if take and (lengths == lengths[0]).all() and lengths[0] >= 0:
            values: Any = flat.reshape(take, int(lengths[0]))
        else:
            offs = np.concatenate([[0], np.cumsum(np.maximum(lengths, 0))])
            values = []
            for i in range(take):
                if lengths[i] < 0:
                    values.append(None)
                    why = f"missing {self.opts.kind[:-1]}: the {self.vcol!r} value is null"
                    errors.setdefault(i, why)
                else:
                    values.append(flat[offs[i] : offs[i + 1]])
        masks = None if self.mcol is None else column_values(cur.column(self.mcol))[0]
        vis = None if self.viscol is None else column_values(cur.column(self.viscol))[0]
        fields: dict[str, list[str | None]] = {
            f: [id_text(x) for x in column_values(cur.column(f))[0]] for f in self.fcols
        }
        for f in self.opts.fields:
            fields.setdefault(f, [None] * take)
        return RawRecords(rows, None, ids, values, masks, vis, fields, errors)
