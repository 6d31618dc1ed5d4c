"""Rejects files: the records a job did not use, each with its row, line, id and reason.

Written as CSV (with a header; the id and reason cells escaped against spreadsheet formulas, see
:mod:`pyfacematch.io.files`) or JSON Lines, chosen by the file ending, owner-only and atomically.
They never hold biometric content.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pyfacematch.io.files import csv_cell, write_file_atomic
from pyfacematch.io.records import Reject

__all__ = ["REJECT_FIELDS", "rejects_bytes", "rejects_format", "write_rejects"]

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
            out.append(f"{r.row},{line},{csv_cell(r.id)},{csv_cell(r.reason)}\n")
    return "".join(out).encode("utf-8")


def rejects_format(path: str | os.PathLike[str]) -> str:
    """``"jsonl"`` for a .jsonl/.json/.ndjson rejects file, else ``"csv"``."""
    return "jsonl" if Path(path).suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv"


def write_rejects(
    path: str | os.PathLike[str], rejects: Sequence[Reject] | None = None, parts: Sequence[Any] = ()
) -> None:
    """Write a rejects file (CSV with header, or JSON Lines) atomically and owner-only.

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

    write_file_atomic(path, write)
