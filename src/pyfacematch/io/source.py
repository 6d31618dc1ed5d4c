"""What every format reader hands to :class:`~pyfacematch.io.records.RecordReader`.

A *source* reads raw records of one format sequentially (:class:`RecordSource`); the record
reader validates them. Sources report problems of a single record as a reason for that record
(it becomes a reject) and problems of the whole file as an :class:`~pyfacematch.errors.InputError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RawRecords", "ReadOptions", "RecordSource", "id_text"]


@dataclass(frozen=True)
class ReadOptions:
    """What a source needs to know about the read.

    Attributes
    ----------
    path : str
        File, or ``"-"`` for standard input.
    name : str
        How messages name the input.
    fmt : str
        One of :data:`~pyfacematch.io.formats.INPUT_FORMATS`.
    kind : {"templates", "landmarks"}
    id_field : str
    fields : tuple of str
        Extra string fields to carry along.
    chunk_size : int
    """

    path: str
    name: str
    fmt: str
    kind: str
    id_field: str
    fields: tuple[str, ...]
    chunk_size: int

    @property
    def value_names(self) -> tuple[str, ...]:
        """Accepted names of the value column / field / array, preferred first."""
        return ("template", "templates") if self.kind == "templates" else ("landmarks",)


@dataclass
class RawRecords:
    """Records as parsed, before validation.

    Attributes
    ----------
    rows : int64 (n,)
        1-based record numbers.
    lines : list of int or None
        Line numbers (text formats).
    ids : list of str or None
    values : float64 (n, L), or a list of one flat float64 array (or None) per record
    masks, visibility : per-record raw values, or None when the input has none
    fields : dict of str to list of str or None
    errors : dict of int to str
        Reason per record index that could not be parsed.
    """

    rows: np.ndarray
    lines: list[int] | None
    ids: list[str | None]
    values: np.ndarray | list[np.ndarray | None]
    masks: list[Any] | np.ndarray | None = None
    visibility: list[Any] | np.ndarray | None = None
    fields: dict[str, list[str | None]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


def id_text(v: Any) -> str | None:
    """An id or string field as text (None when missing, empty or not a whole number)."""
    if v is None:
        return None
    if isinstance(v, (list, tuple, dict)):
        return None  # a container is not an id
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, float):
        if not math.isfinite(v) or v != int(v):
            return None
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**4000:
        return None  # too long to be an id (and beyond Python's int-to-text limit)
    s = str(v)
    return s if s else None


class RecordSource:
    """Sequential reader of raw records of one format.

    Attributes
    ----------
    total : int or None
        Number of records when known without reading them.
    has_masks, has_visibility : bool
    pos : int
        Records handed out (or skipped) so far.
    """

    total: int | None = None
    has_masks = False
    has_visibility = False

    def __init__(self, opts: ReadOptions) -> None:
        self.opts = opts
        self.pos = 0

    def next_raw(self, n: int) -> RawRecords | None:
        """Up to ``n`` more records, or None at the end."""
        raise NotImplementedError

    def skip(self, n: int) -> None:
        """Skip ``n`` records (default: read and drop them)."""
        while n > 0:
            raw = self.next_raw(min(n, 65536))
            if raw is None:
                return
            n -= len(raw.ids)

    def close(self) -> None:
        """Release the file (idempotent)."""
