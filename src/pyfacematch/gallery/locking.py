"""Locks of a gallery: threads inside one process, and writers across processes.

:class:`RWLock` lets any number of searches run together while enroll/remove
update memory exclusively (writer preferring, so writers are not starved).

:class:`WriterLock` makes a gallery file single-writer: an exclusive
``fcntl.flock`` on ``<db>.lock`` beside the database, taken when a writable
:class:`~pyfacematch.gallery.Gallery` opens and held until it closes. The
operating system releases it when the process dies (even by SIGKILL), so a
crash never leaves a gallery locked. A second writer — another process or a
second writable Gallery object in the same process — is refused with
:class:`~pyfacematch.errors.GalleryLockedError`; read-only galleries take no lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from pyfacematch.errors import GalleryFileError, GalleryLockedError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, single writer by convention
    fcntl = None  # type: ignore[assignment]

__all__ = ["RWLock", "WriterLock", "lock_path_for"]


def lock_path_for(db_path: str | os.PathLike[str]) -> Path:
    """The lock file of a gallery database: ``<db>.lock`` in the same folder."""
    p = Path(db_path)
    return p.with_name(p.name + ".lock")


class RWLock:
    """Readers–writer lock, writer preferring (writers are not starved)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared (searches)."""
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock exclusively (memory updates)."""
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class WriterLock:
    """Exclusive OS-level lock on a gallery's lock file (one writer per gallery file).

    Parameters
    ----------
    db_path : str or os.PathLike
        The gallery database; the lock file is ``<db>.lock``.
    """

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self.db_path = Path(db_path)
        self.path = lock_path_for(db_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now or raise; never waits.

        Raises
        ------
        GalleryLockedError
            Another writer holds it (the message names the file and the holder's pid).
        GalleryFileError
            The lock file cannot be created or is not a regular file.
        """
        if self._fd is not None or fcntl is None:
            return
        p = os.fspath(self.path)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(p, flags, 0o600)
        except OSError as exc:
            raise GalleryFileError(
                f"cannot create the lock file {p!r} of gallery {os.fspath(self.db_path)!r} "
                f"({exc.strerror or exc}): check the folder's permissions (it must not be a symlink)"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 32, 0).decode("ascii").strip()
            os.close(fd)
            who = f" (process {holder})" if holder else ""
            raise GalleryLockedError(
                f"gallery {os.fspath(self.db_path)!r} is already open for writing{who}: one "
                f"writer per gallery file (lock {p!r}). Close the other writer first, or open "
                "this one read-only: Gallery.open(path, read_only=True)"
            ) from exc
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent). The lock file stays; it holds no data."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock
