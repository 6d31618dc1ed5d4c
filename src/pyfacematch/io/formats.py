"""Which file format a path holds: from an explicit name or from the file ending."""

from __future__ import annotations

import os
from pathlib import Path

from pyfacematch.errors import InputError

__all__ = ["EXTENSIONS", "INPUT_FORMATS", "OUTPUT_FORMATS", "detect_format"]

INPUT_FORMATS: tuple[str, ...] = ("npy", "npz", "parquet", "csv", "jsonl")
OUTPUT_FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet")

#: File ending (lower case) → format.
EXTENSIONS = {
    ".npy": "npy",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


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
    found = EXTENSIONS.get(suffix)
    if found is None or found not in allowed:
        raise InputError(
            f"cannot tell the format of {p!r} from its ending {suffix or '(none)'!r}: "
            f"use one of {', '.join(sorted(k for k, v in EXTENSIONS.items() if v in allowed))} "
            "or pass the format explicitly"
        )
    return found
