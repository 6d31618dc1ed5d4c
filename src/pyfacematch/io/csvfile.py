"""CSV inputs: a header naming the id column, optional ``mask`` and extra columns, value columns.

Columns whose name starts with ``vis`` are landmark visibility flags (0/1); every other column is a
number of the template (or a landmark coordinate ``x0, y0, x1, y1 …``). Rows are numbered from 1
(the header and blank lines not counted) and messages also give the line number.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.io.source import ReadOptions, id_text
from pyfacematch.io.text import TextRecord, TextSource

__all__ = ["CsvSource"]


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class _Lines:
    """The decoded lines of a text source as an iterator for :func:`csv.reader`.

    A line that cannot be decoded raises its error from ``__next__`` and the next call goes on
    with the following line (the csv reader resets its state at every row).
    """

    def __init__(self, src: TextSource) -> None:
        self.src = src

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        s = self.src.read_line()
        if s is None:
            raise StopIteration
        if isinstance(s, Exception):
            raise s
        return s


class CsvSource(TextSource):
    """A CSV file or standard input."""

    def __init__(self, opts: ReadOptions) -> None:
        super().__init__(opts)
        self.csv = csv.reader(_Lines(self))
        try:
            first = next(self.csv, None)
        except (csv.Error, ValueError) as exc:
            self.close()
            raise InputError(f"{opts.name} line 1: unreadable CSV header ({exc})") from exc
        try:
            self._set_header([h.strip() for h in (first or [])])
        except InputError:
            self.close()
            raise

    def _set_header(self, h: list[str]) -> None:
        o = self.opts
        if o.id_field not in h:
            raise InputError(
                f"{o.name}: the CSV header has no id column {o.id_field!r} "
                f"(found {', '.join(x[:40] for x in h[:8]) or 'nothing'}"
                f"{' …' if len(h) > 8 else ''}); pass --id-field NAME or add a header"
            )
        self.header = h
        self.i_id = h.index(o.id_field)
        self.i_mask = h.index("mask") if "mask" in h else None
        self.i_fields = {f: h.index(f) for f in o.fields if f in h}
        special = {self.i_id, self.i_mask, *self.i_fields.values()}
        self.i_vis = (
            [i for i, c in enumerate(h) if c.lower().startswith("vis") and i not in special]
            if o.kind == "landmarks"
            else []
        )
        special |= set(self.i_vis)
        self.i_vals = [i for i in range(len(h)) if i not in special]
        if not self.i_vals:
            raise InputError(f"{o.name}: the CSV header has no value columns after the id")
        self.has_masks = self.i_mask is not None
        self.has_visibility = bool(self.i_vis)
        self.width = len(h)

    def lines(self, n: int) -> Iterator[tuple[int, Any]]:
        got = 0
        while got < n:
            try:
                rec = next(self.csv, None)
            except (csv.Error, ValueError) as exc:  # ValueError: a line that is not UTF-8
                got += 1
                yield self.line, exc
                continue
            if rec is None:
                return
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue  # blank line
            got += 1
            yield self.line, rec

    def parse(self, rec: Any, out: TextRecord) -> None:
        out.id = id_text(rec[self.i_id].strip()) if self.i_id < len(rec) else None
        for f, j in self.i_fields.items():
            out.fields[f] = id_text(rec[j].strip()) if j < len(rec) else None
        if len(rec) != self.width:
            raise ValueError(
                f"malformed row: expected {self.width} fields as in the header, got {len(rec)}"
            )
        try:
            out.values = np.fromiter(
                (float(rec[j]) for j in self.i_vals), np.float64, len(self.i_vals)
            )
        except ValueError:
            bad = next(j for j in self.i_vals if not _is_float(rec[j]))
            raise ValueError(
                f"malformed number: column {self.header[bad][:40]!r} is not a number"
            ) from None
        if self.i_mask is not None:
            out.mask = rec[self.i_mask].strip()
        if self.i_vis:
            out.visibility = [rec[j].strip() for j in self.i_vis]
