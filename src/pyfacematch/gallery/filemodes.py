"""Owner-only modes for the files and folders that hold biometric data.

A gallery's database, its ``-wal`` and ``-shm`` files, its index folder and
the checkpoint files in it hold templates: they are created readable and
writable by their owner only (files ``0600``, folders ``0700``) whatever the
process umask, because a umask of ``022`` (the usual default) would otherwise
make them world-readable. The mode is given at creation *and* set again with
``chmod`` (a creation mode is only ever narrowed by the umask, never widened,
but an explicit ``chmod`` makes the result independent of it).
Existing files are never loosened; see :func:`tighten`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "create_private_file",
    "make_private_dir",
    "shared_bits",
    "sqlite_files",
    "tighten",
]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def sqlite_files(db: str | os.PathLike[str]) -> list[Path]:
    """The database file and its ``-wal`` / ``-shm`` companions (existing or not)."""
    p = Path(db)
    return [p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")]


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Create an empty file readable and writable by its owner only.

    Raises
    ------
    FileExistsError
        The path exists (it is never truncated or re-moded here).
    OSError
        The folder is missing or not writable.
    """
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def make_private_dir(path: str | os.PathLike[str]) -> None:
    """Create a folder ``0700`` (if missing); tighten it if it is ours and wider."""
    p = Path(path)
    with contextlib.suppress(FileExistsError):
        p.mkdir(mode=PRIVATE_DIR)
    tighten(p, PRIVATE_DIR)


def shared_bits(path: str | os.PathLike[str]) -> int:
    """The group/other permission bits of ``path`` (0 when missing or owner-only)."""
    try:
        return os.stat(path).st_mode & 0o077
    except OSError:
        return 0


def tighten(path: str | os.PathLike[str], mode: int = PRIVATE_FILE) -> bool:
    """Remove group/other permissions from a file or folder owned by this user.

    Never follows a symlink, never changes files owned by someone else, never
    adds permissions. Returns True when the mode was changed.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return False
    want = stat.S_IMODE(st.st_mode) & mode
    if want == stat.S_IMODE(st.st_mode):
        return False
    try:
        os.chmod(path, want)
    except OSError:  # pragma: no cover - e.g. a read-only file system
        return False
    return True
