"""JSON Lines inputs: one object per line.

``{"id": "p1", "template": [...], "mask": 7}`` or
``{"id": "p1", "landmarks": [[x, y], ...], "visibility": [...]}``. A line that is not JSON, nested
too deeply to parse, not an object, or whose values are not a (nested) list of numbers that fit a
float is a reject with its reason; the rest of the file is read on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from pyfacematch.io.source import id_text
from pyfacematch.io.text import TextRecord, TextSource

__all__ = ["JsonlSource"]


class JsonlSource(TextSource):
    """A JSON Lines file or standard input."""

    def lines(self, n: int) -> Iterator[tuple[int, Any]]:
        got = 0
        while got < n:
            s = self.read_line()
            if s is None:
                return
            if isinstance(s, str) and not s.strip():
                continue
            got += 1
            if isinstance(s, Exception):
                yield self.line, s
                continue
            try:
                rec = json.loads(s)
            except ValueError as exc:
                yield self.line, exc
            except RecursionError:
                yield self.line, ValueError("nested too deeply")
            else:
                yield self.line, rec

    def parse(self, rec: Any, out: TextRecord) -> None:
        o = self.opts
        if not isinstance(rec, dict):
            raise ValueError(
                f"malformed JSON: expected an object per line, got {type(rec).__name__}"
            )
        out.id = id_text(rec.get(o.id_field))
        for f in o.fields:
            out.fields[f] = id_text(rec.get(f))
        key = next((k for k in o.value_names if k in rec), None)
        if key is None:
            raise ValueError(
                f"missing {o.kind[:-1]}: no "
                f"{'template' if o.kind == 'templates' else 'landmarks'!r} field"
            )
        try:
            out.values = np.asarray(rec[key], np.float64).reshape(-1)
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise ValueError(
                f"malformed {o.kind[:-1]}: {key!r} must be a list of numbers"
            ) from None
        out.mask = rec.get("mask")
        out.visibility = rec.get("visibility")
