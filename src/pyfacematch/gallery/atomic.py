"""Atomic file writes and checksummed reads (private).

An index checkpoint must never be seen half written: it is written to a
temporary file in the same folder, flushed and ``fsync``-ed, renamed over the
final name (atomic on POSIX), and the folder is ``fsync``-ed so the rename
itself survives a power loss. Its SHA-256 is returned so the caller can record
it in the store; :func:`read_verified` refuses a file whose bytes do not match,
so a corrupted or truncated file is never handed to a parser such as
``faiss.deserialize_index``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from pyfacematch.errors import GalleryFileError

__all__ = ["atomic_write", "fsync_dir", "read_verified", "sha256_bytes"]


def sha256_bytes(data: bytes | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """``fsync`` a folder so that renames and unlinks inside it are durable.

    Silently does nothing on platforms that cannot open folders (Windows).
    """
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on dirs
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | memoryview) -> str:
    """Write ``data`` to ``path`` atomically and durably; return its hex SHA-256.

    Steps: write ``<path>.tmp-<pid>``, ``fsync`` it, ``os.replace`` it onto
    ``path``, ``fsync`` the folder. A crash at any point leaves either the old
    file or the new one, never a mixture; a stray temporary file may remain and
    is ignored by readers.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    digest = sha256_bytes(data)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data).cast("B")
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return digest


def read_verified(path: str | os.PathLike[str], sha256: str) -> bytes:
    """Read ``path`` and check it against the expected hex SHA-256.

    Raises
    ------
    GalleryFileError
        The file is missing or unreadable, or its bytes do not match (corrupted
        or truncated): the caller should rebuild whatever it holds.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise GalleryFileError(
            f"cannot read checkpoint file {os.fspath(path)!r}: {exc.strerror or exc}; "
            "it will be rebuilt from the store"
        ) from exc
    got = sha256_bytes(data)
    if got != sha256:
        raise GalleryFileError(
            f"checkpoint file {os.fspath(path)!r} fails its checksum "
            f"(expected sha256 {sha256[:16]}…, got {got[:16]}…, {len(data)} bytes): "
            "it is corrupted or truncated and will be rebuilt from the store"
        )
    return data
