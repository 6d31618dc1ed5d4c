"""What the text formats (CSV, JSON Lines) share: opening a file or standard input, line numbers,
and turning each parsed line into a record or a reason.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.io.source import RawRecords, ReadOptions, RecordSource

__all__ = ["MAX_LINE_BYTES", "TextRecord", "TextSource"]

#: Longest line read (a template line is a few kilobytes).
MAX_LINE_BYTES = 64 << 20


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
            self.fh: BinaryIO = sys.stdin.buffer
            self.own = False
        else:
            try:
                self.fh = open(opts.path, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise InputError(f"cannot open {opts.name}: {exc.strerror or exc}") from exc
            self.own = True
        self.line = 0  # lines read so far (the number of the last one)
        self._pending: list[bytes] = []

    def close(self) -> None:
        if self.own:
            self.fh.close()

    def read_line(self) -> str | ValueError | None:
        """The next line as text (with its line ending), the error that spoils it, or None at the end.

        Lines are decoded one at a time, so a byte that is not UTF-8 spoils only its own line
        (it used to spoil a whole 8 KB block, or make a reader retry the same block forever). A
        line over :data:`MAX_LINE_BYTES` is skipped and reported. ``\\r`` alone ends a line too.
        """
        if self._pending:
            raw = self._pending.pop(0)
        else:
            raw = self.fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return None
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while True:  # drop the rest of the line
                    more = self.fh.readline(1 << 20)
                    if not more or more.endswith(b"\n"):
                        break
                self.line += 1
                return ValueError(f"line longer than {MAX_LINE_BYTES} bytes")
            if b"\r" in raw[:-2]:
                parts = raw.split(b"\r")
                pieces = [p + b"\r" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
                merged: list[bytes] = []
                for p in pieces:  # keep "\r\n" together
                    if p == b"\n" and merged:
                        merged[-1] += p
                    elif p.startswith(b"\n") and merged:
                        merged[-1] += b"\n"
                        merged.append(p[1:])
                    else:
                        merged.append(p)
                raw, self._pending = merged[0], merged[1:]
        self.line += 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return exc

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
