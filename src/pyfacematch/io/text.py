"""What the text formats (CSV, JSON Lines) share: opening a file or standard input, line numbers,
and turning each parsed line into a record or a reason.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.io.source import RawRecords, ReadOptions, RecordSource

__all__ = ["TextRecord", "TextSource"]


@dataclass
class TextRecord:
    """One parsed line (whatever could be read of it, even when the line is bad)."""

    id: str | None = None
    values: np.ndarray | None = None
    mask: Any = None
    visibility: Any = None
    fields: dict[str, str | None] = field(default_factory=dict)


class TextSource(RecordSource):
    """A text file or standard input read line by line; subclasses parse one format."""

    def __init__(self, opts: ReadOptions) -> None:
        super().__init__(opts)
        if opts.path == "-":
            self.fh: TextIO = sys.stdin
            self.own = False
        else:
            try:
                self.fh = open(opts.path, encoding="utf-8", newline="")  # noqa: SIM115
            except OSError as exc:
                raise InputError(f"cannot open {opts.name}: {exc.strerror or exc}") from exc
            self.own = True
        self.line = 0

    def close(self) -> None:
        if self.own:
            self.fh.close()

    def lines(self, n: int) -> Iterator[tuple[int, Any]]:
        """Yield up to ``n`` (line number, parsed line or the exception that stopped it)."""
        raise NotImplementedError

    def parse(self, rec: Any, out: TextRecord) -> None:
        """Fill ``out`` from a parsed line; raise ValueError with the reason when it is bad."""
        raise NotImplementedError

    def next_raw(self, n: int) -> RawRecords | None:
        fields_wanted = self.opts.fields
        lines: list[int] = []
        ids: list[str | None] = []
        values: list[np.ndarray | None] = []
        masks: list[Any] = []
        vis: list[Any] = []
        fields: dict[str, list[str | None]] = {f: [] for f in fields_wanted}
        errors: dict[int, str] = {}
        for ln, rec in self.lines(n):
            i = len(ids)
            lines.append(ln)
            out = TextRecord()
            try:
                if isinstance(rec, Exception):
                    kind = "malformed CSV" if self.opts.fmt == "csv" else "malformed JSON"
                    if isinstance(rec, UnicodeDecodeError):
                        kind = "malformed text"
                    raise ValueError(f"{kind}: {str(rec)[:80]}")
                self.parse(rec, out)
            except ValueError as exc:
                errors[i] = str(exc)
            ids.append(out.id)
            values.append(out.values)
            masks.append(out.mask)
            vis.append(out.visibility)
            for f in fields_wanted:
                fields[f].append(out.fields.get(f))
        if not ids:
            return None
        a = self.pos
        self.pos += len(ids)
        has_m = self.has_masks or any(m is not None for m in masks)
        has_v = self.has_visibility or any(v is not None for v in vis)
        return RawRecords(
            np.arange(a + 1, a + len(ids) + 1, dtype=np.int64),
            lines,
            ids,
            values,
            masks if has_m else None,
            vis if has_v else None,
            fields,
            errors,
        )
