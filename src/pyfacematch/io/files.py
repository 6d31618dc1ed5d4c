"""Files written by ``pyfacematch.io``: atomic, owner-only, and safe to open in a spreadsheet.

Every result table, part file, rejects file and export holds biometric identifiers, so it is
created with mode ``0600`` whatever the process umask, written to a temporary
name, ``fsync``-ed and renamed into place, so a reader never sees half a file.

CSV cells that hold text from outside (probe and identity ids, reject reasons) are escaped against
spreadsheet formula injection as the OWASP "CSV Injection" guidance recommends: a cell starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed with a single quote ``'`` (and a
cell that already starts with ``'`` gets one more, so the escape can be undone exactly);
:func:`csv_unescape` removes it again when pyfacematch reads its own files back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "FILE_MODE",
    "FORMULA_PREFIXES",
    "csv_cell",
    "csv_escape",
    "csv_unescape",
    "write_file_atomic",
]

FILE_MODE = 0o600
#: First characters a spreadsheet may read as the start of a formula (OWASP), plus the escape.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_escape(s: str) -> str:
    """``s`` with a leading ``'`` when a spreadsheet could read it as a formula."""
    return "'" + s if s.startswith(FORMULA_PREFIXES) else s


def csv_unescape(s: str) -> str:
    """Undo :func:`csv_escape` (one leading ``'`` removed)."""
    return s[1:] if s.startswith("'") else s


def csv_cell(s: str | None) -> str:
    """One CSV cell: escaped against formulas, then quoted when it must be (None: empty)."""
    if s is None:
        return ""
    s = csv_escape(s)
    if any(c in s for c in ',"\r\n') or s != s.strip():
        return '"' + s.replace('"', '""') + '"'
    return s


def write_file_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(binary file)`` on an owner-only temporary file, fsync it, rename it onto ``path``.

    The file is created with mode ``0600`` independent of the umask; the folder
    is ``fsync``-ed after the rename so the new name is durable.
    """
    from pyfacematch.gallery.atomic import fsync_dir

    p = Path(path)
    tmp = p.with_name(f"{p.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        os.fchmod(
            fd, FILE_MODE
        )  # O_CREAT's mode is filtered by the umask; a stale tmp kept its own
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(p.parent)
