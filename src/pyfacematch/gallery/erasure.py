"""Completing an erasure: the WAL truncation that follows a committed removal.

When ``remove()`` commits, the deleted rows are already overwritten in the
database pages (``secure_delete``), but older page images holding the erased
templates can remain in the ``-wal`` file until the WAL is checkpointed and
truncated.

``secure_delete`` is not enough on its own either: it zeroes a cell when the
cell is *deleted* (https://www.sqlite.org/pragma.html#pragma_secure_delete:
"overwrites deleted content with zeros"), but a b-tree balance that *moves*
cells to a sibling page rebuilds the source page without clearing its
unallocated area (SQLite 3.40, ``rebuildPage`` in btree.c writes the cells
from the end of the page and leaves the bytes between the cell-pointer array
and the new content start as they were). The old copy of a moved template
row stays there, in no cell and no freeblock, so deleting the row later
zeroes only its current copy. Seen by the durability harness (issue 12):
after ``remove('p167')`` 2 words of its template were found at offset 394 of
a templates leaf page whose cell-pointer array ended at 24 and whose content
started at 632. :func:`scrub_erased` therefore rebuilds the database with
``VACUUM`` (https://www.sqlite.org/lang_vacuum.html: the content is copied
into a new database and written back, so nothing deleted survives in any
page; every table here has an INTEGER PRIMARY KEY, so no row id changes),
then the WAL is truncated. A flag in ``meta`` committed with the delete says
that a scrub is owed; it is cleared only after ``VACUUM`` succeeded, so a
process killed in between leaves the flag and the next writable open scrubs. That needs every other connection to be outside a read
transaction; while one is not, the erasure is committed (nobody can search or
load the person) but not yet complete on disk.

:class:`WalEraser` truncates the WAL through a connection of its own, at once
if it can, else from a background thread that retries with backoff until it
succeeds; then it runs the gallery's sweep of temporary files and reports the
erasure complete (a log line, and :attr:`WalEraser.status`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SCRUB_PENDING_KEY", "WalEraser", "scrub_erased"]

#: ``meta`` key set in the transaction of a removal, cleared after :func:`scrub_erased`.
SCRUB_PENDING_KEY = "erasure_scrub_pending"


def scrub_erased(con: sqlite3.Connection) -> None:
    """Rebuild the database (``VACUUM``) so no stale copy of an erased row survives a page.

    The caller truncates the WAL afterwards (``VACUUM`` in WAL mode writes the
    new pages into the WAL). Raises :class:`sqlite3.Error` (e.g. busy) when it
    could not run; the pending flag then stays set and the scrub is retried.
    """
    con.execute("VACUUM")
    con.execute("DELETE FROM meta WHERE key=?", (SCRUB_PENDING_KEY,))


log = logging.getLogger("pyfacematch.gallery")


class WalEraser:
    """Truncates a gallery's WAL after erasures, retrying in the background.

    Parameters
    ----------
    db_path : Path
        The gallery database (its WAL is ``<db>-wal``).
    before_complete : callable
        Run after the WAL is truncated and before the erasure is reported
        complete (the gallery sweeps its temporary index files there).
    """

    def __init__(self, db_path: Path, before_complete: Callable[[], None]) -> None:
        self.db_path = Path(db_path)
        self._before_complete = before_complete
        self._cond = threading.Condition()
        self._pending_since: float | None = None
        self._attempts = 0
        self._last_error: str | None = None
        self._completed_at: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = False

    @property
    def pending(self) -> bool:
        """True while a committed erasure still waits for its WAL truncation."""
        with self._cond:
            return self._pending_since is not None

    @property
    def status(self) -> dict[str, Any]:
        """``pending``, ``pending_since`` (epoch s), ``attempts``, ``last_error``, ``completed_at``."""
        with self._cond:
            return {
                "pending": self._pending_since is not None,
                "pending_since": self._pending_since,
                "attempts": self._attempts,
                "last_error": self._last_error,
                "completed_at": self._completed_at,
            }

    def _try_once(self, timeout: float) -> bool:
        try:
            con = sqlite3.connect(os.fspath(self.db_path), timeout=timeout)
        except sqlite3.Error as exc:
            self._last_error = str(exc)
            return False
        try:
            con.isolation_level = None  # VACUUM cannot run inside a transaction
            row = con.execute("SELECT 1 FROM meta WHERE key=?", (SCRUB_PENDING_KEY,)).fetchone()
            if row is not None:
                scrub_erased(con)
            busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            self._last_error = str(exc)
            return False
        finally:
            con.close()
        if busy:
            self._last_error = "another connection holds a read transaction"
            return False
        return True

    def _finish(self) -> None:
        try:
            self._before_complete()
        except Exception as exc:  # the sweep logs its own problems; never lose completion
            log.warning("sweeping index files after an erasure failed: %s", exc)
        with self._cond:
            since = self._pending_since
            self._pending_since = None
            self._completed_at = time.time()
            self._last_error = None
            self._cond.notify_all()
        if since is not None and self._attempts > 1:
            log.info(
                "erasure complete: WAL of %s truncated after %d attempts (%.1f s)",
                self.db_path,
                self._attempts,
                time.time() - since,
            )

    def erase(self, timeout: float = 0.2) -> bool:
        """Truncate the WAL now, or schedule background retries; True when complete now."""
        with self._cond:
            if self._pending_since is None:
                self._pending_since = time.time()
                self._attempts = 0
            self._attempts += 1
        if self._try_once(timeout):
            self._finish()
            return True
        log.warning(
            "erasure committed but not yet complete on disk: the WAL of %s still holds old pages "
            "(%s); retrying in the background — see Gallery.info()['erasure']",
            self.db_path,
            self._last_error,
        )
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stop = False
                self._thread = threading.Thread(
                    target=self._retry, name="pyfacematch-wal-eraser", daemon=True
                )
                self._thread.start()
        return False

    def _retry(self) -> None:
        delay = 0.05
        while True:
            with self._cond:
                if self._stop or self._pending_since is None:
                    return
                self._cond.wait(delay)
                if self._stop:
                    return
                self._attempts += 1
            if self._try_once(0.0):
                self._finish()
                return
            delay = min(delay * 2, 2.0)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no erasure is pending; True if complete within ``timeout`` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending_since is not None:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self, timeout: float = 1.0) -> None:
        """Try once more, then stop retrying (the gallery is closing)."""
        if self.pending and self._try_once(timeout):
            self._finish()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            t = self._thread
        if t is not None:
            t.join(timeout=5.0)
        if self.pending:
            log.warning(
                "gallery %s closed with an erasure not complete on disk (%s): the WAL is "
                "truncated the next time the gallery is opened or checkpointed",
                self.db_path,
                self._last_error,
            )
