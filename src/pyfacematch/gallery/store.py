"""SQLite store of a gallery: the source of truth.

A gallery on disk is one SQLite database. It holds the identities (with their
metadata and consent state), their templates (float32 blobs + region masks),
calibrated thresholds, the records of index checkpoint files, an audit log
(without biometric data) and a ``meta`` table with the format name and
version. Search indexes are derived from it and can always be rebuilt.

Settings and why
----------------
- ``journal_mode=WAL``: readers are never blocked by the writer and a commit is
  one sequential append.
- ``synchronous=FULL``: in WAL mode ``NORMAL`` survives a process crash but may
  lose the last commits on power loss; an acknowledged enrollment (or, more
  importantly, an acknowledged opt-out) must survive both, so every commit is
  fsync-ed. Bulk loads use :meth:`Store.insert_identities` (one transaction,
  one fsync for many identities).
- ``secure_delete=ON``: deleted rows are overwritten with zeros in the database
  pages; after an erasure the WAL is checkpointed with ``TRUNCATE`` so no old
  page image holding the erased templates stays in the ``-wal`` file.
- ``foreign_keys=ON``: templates are deleted with their identity (cascade).

One connection is shared by all threads of a gallery and serialised by a lock;
searches never touch SQLite (they run on the in-memory copy).

Trust nothing at load
---------------------
- Every template row is checked when loaded (length, finite, unit norm, mask):
  a row that fails is quarantined (kept in the file, never searched, listed in
  :attr:`Store.quarantined`, logged and warned about with
  :class:`~pyfacematch.gallery.quarantine.TemplateQuarantineWarning`).
- Derived data (tuning and checkpoint parameters) is validated and treated as
  absent when malformed (:mod:`pyfacematch.gallery.derived`): the gallery
  re-tunes or rebuilds instead of failing to open or using a NaN.
- A ``-wal`` file left by a crash is read before SQLite recovers it: commits
  that SQLite would silently drop behind a damaged frame are refused
  (:mod:`pyfacematch.gallery.wal`, which also says what cannot be detected),
  and a full ``PRAGMA integrity_check`` (not only ``quick_check``) runs then.
- ``PRAGMA quick_check`` reads every page of the file (3.4 GB at a million
  templates: most of a reopen). It runs at open unless the file is exactly as
  its last writer left it at a clean close: a writable store
  (:meth:`Store.begin_writes`) deletes the marker ``<db>.closed`` before its
  first write and writes it again at :meth:`Store.close` after the WAL was
  truncated, holding the file's size, inode and modification/change times
  (``st_ctime`` cannot be set from user space). Any later write to the file —
  a damaged page written through the file system, a crash, another program —
  changes them and the check runs again; so does a non-empty ``-wal``.
  What remains unchecked: damage that bypasses the file system (a failing
  disk, raw device writes), which SQLite still reports as
  :class:`~pyfacematch.errors.GalleryDamagedError` when a damaged page is read.
- Files are created owner-only (0600) whatever the umask, the ``-wal`` and
  ``-shm`` files too (:mod:`pyfacematch.gallery.filemodes`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.errors import (
    DimensionError,
    DuplicateIdentityError,
    FormatVersionError,
    GalleryClosedError,
    GalleryDamagedError,
    GalleryFileError,
    InputError,
    UnknownIdentityError,
)
from pyfacematch.gallery import filemodes
from pyfacematch.gallery.calibration import ThresholdRecord  # the record type is calibration's
from pyfacematch.gallery.derived import parse_params
from pyfacematch.gallery.erasure import SCRUB_PENDING_KEY, scrub_erased
from pyfacematch.gallery.quarantine import (
    QuarantinedTemplate,
    check_rows,
    check_templates,
    report_quarantine,
)
from pyfacematch.gallery.wal import check_left_wal
from pyfacematch.security.envelope import KeyRing

__all__ = [
    "clean_marker_path",
    "closed_cleanly",
    "digest_tids",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_DIM",
    "check_new_layout",
    "CheckpointRecord",
    "QuarantinedTemplate",
    "Store",
    "ThresholdRecord",
]

log = logging.getLogger("pyfacematch.gallery")

FORMAT_NAME = "pyfacematch-gallery"
FORMAT_VERSION = 1

#: Largest template dimension a gallery accepts (256 KiB per float32 template):
#: a larger ``dim`` is refused before any file is created.
MAX_DIM = 1 << 16

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE identities (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    metadata    TEXT,
    consent     TEXT NOT NULL,
    consent_at  REAL NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE templates (
    tid       INTEGER PRIMARY KEY AUTOINCREMENT,
    identity  INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    data      BLOB NOT NULL,
    mask      INTEGER
);
CREATE INDEX templates_identity ON templates(identity);
CREATE TABLE thresholds (
    name        TEXT PRIMARY KEY,
    value       REAL NOT NULL,
    target      REAL NOT NULL,
    n_scores    INTEGER NOT NULL,
    gallery_size INTEGER,
    created_at  REAL NOT NULL
);
CREATE TABLE checkpoints (
    backend     TEXT PRIMARY KEY,
    file        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    n_templates INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    params      TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        REAL NOT NULL,
    action    TEXT NOT NULL,
    identity  TEXT,
    detail    TEXT
);
"""


#: SQLite page size of new gallery files whose float32 rows exceed 1 KiB (d > 256); smaller rows
#: keep SQLite's default 4 KiB pages (three or more fit; a small transaction writes less WAL).
#: Existing files keep theirs.
PAGE_SIZE = 16384


def page_size_for(dim: int) -> int:
    """SQLite page size for a new gallery of dimension ``dim`` (see :data:`PAGE_SIZE`)."""
    return PAGE_SIZE if 4 * int(dim) > 1024 else 4096


# SQLite's result codes for a damaged file (https://www.sqlite.org/rescode.html): SQLITE_CORRUPT
# and SQLITE_NOTADB. SQLite finds damage lazily, on the page a query touches, so any read can
# meet it; it is reported as a typed GalleryFileError, never as the driver's DatabaseError.
_DAMAGED_CODES = (11, 26)


def _is_damage(exc: BaseException) -> bool:
    if isinstance(exc, UnicodeDecodeError):  # text that is not UTF-8 where SQLite returns text
        return True
    if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("Could not decode"):
        return True  # the same, raised by the sqlite3 module while it converts a row
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(
        exc, (sqlite3.OperationalError, sqlite3.IntegrityError)
    ):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    return code in _DAMAGED_CODES or (
        code is None and ("malformed" in str(exc) or "not a database" in str(exc))
    )


def _damaged(exc: BaseException) -> GalleryDamagedError:
    return GalleryDamagedError(
        f"the gallery file is damaged or was altered ({type(exc).__name__}: {exc}); "
        "nothing was changed: restore it from a backup"
    )


class _Cursor(sqlite3.Cursor):
    """A cursor whose fetches report file damage as :class:`GalleryDamagedError`."""

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if _is_damage(exc):
                raise _damaged(exc) from exc
            raise

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if _is_damage(exc):
                raise _damaged(exc) from exc
            raise

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        try:
            return super().fetchmany(size)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if _is_damage(exc):
                raise _damaged(exc) from exc
            raise

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if _is_damage(exc):
                raise _damaged(exc) from exc
            raise


class _Connection(sqlite3.Connection):
    """The store's connection: statements and fetches report file damage as a typed error."""

    def cursor(self, factory: Any = _Cursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        # through our own cursor: Connection.execute would make a plain one, whose fetches
        # would not translate damage
        try:
            return self.cursor().execute(sql, parameters)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if _is_damage(exc):
                raise _damaged(exc) from exc
            raise

    def executemany(self, sql: str, parameters: Any, /) -> Any:  # type: ignore[override]
        try:
            return self.cursor().executemany(sql, parameters)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if _is_damage(exc):
                raise _damaged(exc) from exc
            raise


def _columns(con: sqlite3.Connection) -> dict[str, list[tuple[str, str]]]:
    """Each table's (column, declared type), from the file's own catalogue."""
    names = [
        r[0]
        for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {
        n: [(str(r[1]), str(r[2]).upper()) for r in con.execute(f"PRAGMA table_info({n!r})")]
        for n in names
    }


@functools.cache
def _expected_columns() -> dict[str, list[tuple[str, str]]]:
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(_SCHEMA)
        return _columns(con)
    finally:
        con.close()


@dataclass(frozen=True)
class CheckpointRecord:
    """Where an index checkpoint lives and what store state it reflects."""

    backend: str
    file: str
    sha256: str
    generation: int
    n_templates: int
    digest: str
    params: dict[str, Any]


def check_new_layout(dim: Any, blocks: Any) -> list[int] | None:
    """Check the dimension and block offsets of a new store; return the offsets as a list.

    Raises
    ------
    InputError
        ``dim`` missing, not an integer in [1, MAX_DIM], or ``blocks`` not
        strictly increasing from 0 to ``dim`` (at most 64 blocks).
    """
    if dim is None:
        raise InputError("creating a new gallery needs the template dimension: pass dim=<int>")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 0 < dim <= MAX_DIM:
        raise InputError(
            f"dim must be a positive integer of at most {MAX_DIM}, got {dim!r}: "
            "pass the dimension of your templates"
        )
    if blocks is None:
        return None
    b = np.asarray(blocks)
    if b.ndim != 1 or b.size < 2 or not np.issubdtype(b.dtype, np.integer):
        raise InputError(
            "blocks must be a 1-D integer array of offsets 0 … dim (length B+1, B ≥ 1)"
        )
    if b[0] != 0 or b[-1] != int(dim) or np.any(np.diff(b) <= 0) or b.size - 1 > 64:
        raise InputError(
            f"blocks must increase strictly from 0 to dim={int(dim)} with at most 64 "
            f"blocks; got {b.size - 1} blocks from {int(b[0])} to {int(b[-1])}"
        )
    return [int(v) for v in b]


def _on_read_only_fs(path: Any) -> bool:
    """True when the folder holding ``path`` is on a file system mounted read-only."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(os.fspath(path))) or ".")
    except (OSError, AttributeError, TypeError):  # no statvfs (Windows) or no path
        return False
    return bool(st.f_flag & os.ST_RDONLY)


def _u64_to_i64(mask: int) -> int:
    return mask - (1 << 64) if mask >= (1 << 63) else mask


class Store:
    """SQLite store of identities, templates, thresholds and checkpoints.

    Parameters
    ----------
    path : str or os.PathLike or None
        Database file; ``None`` keeps everything in memory (no files).
    dim : int or None
        Template dimension. Required to create a store; checked against the
        stored one when opening (``DimensionError`` naming both).
    blocks : array_like of int64, shape (B+1,), or None
        Region-block offsets of masked templates (0 … dim), or ``None`` for
        templates without masks. Fixed at creation.
    integrity_check : bool
        When opening an existing file: run ``PRAGMA quick_check`` (a full
        ``integrity_check`` when a ``-wal`` file was left by a crash) and
        refuse a ``-wal`` file whose later commits SQLite would drop behind a
        damaged frame. ``False`` skips both (and accepts that loss). The
        quick_check is skipped when the file is unchanged since a clean close
        (see the module notes); :attr:`integrity` says what ran.

    Attributes
    ----------
    quarantined : list of QuarantinedTemplate
        Template rows that failed their checks in the last :meth:`load_all`
        (never returned by it); rows of removed identities are dropped.
    integrity : str
        The check that ran at open: ``"quick_check"``, ``"integrity_check"``
        (a WAL was left), ``"closed cleanly"`` (skipped: unchanged since a
        clean close), ``"off"`` (``integrity_check=False``) or ``"new"``.

    Raises
    ------
    GalleryFileError
        The file is not a SQLite database, not a gallery, empty, or corrupted,
        or its WAL lost commits behind a damaged frame.
    FormatVersionError
        The file was written by an unknown format version.
    InputError
        Creating a store with a missing or invalid ``dim`` or ``blocks``
        (nothing is written then).

    Notes
    -----
    A new database file is created ``0600`` (and its ``-wal`` / ``-shm`` files
    are set to ``0600`` as soon as SQLite creates them), whatever the umask. An
    existing file owned by this user that is readable by others is tightened
    to owner-only, with a log line.
    """

    def _where(self) -> str:
        """The database file for messages (``":memory:"`` for an in-memory store)."""
        return ":memory:" if self.path is None else os.fspath(self.path)

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        dim: int | None = None,
        blocks: np.ndarray | Sequence[int] | None = None,
        integrity_check: bool = True,
    ) -> None:
        self.path: Path | None = None if path is None else Path(path)
        self._lock = threading.RLock()
        self.quarantined: list[QuarantinedTemplate] = []
        self._quarantined_tids: set[int] = set()
        #: Set by :meth:`load_index_rows`: every identity has exactly one template.
        self.one_template_each = False
        #: Key ring of an encrypted gallery (set by the Gallery after opening), else None.
        self.cipher: KeyRing | None = None
        #: Appends a chained audit record in the caller's transaction (set by the Gallery):
        #: ``hook(conn, action, identity, detail)``; None: plain rows.
        self.audit_hook: Callable[[sqlite3.Connection, str, str | None, str], None] | None = None
        #: The same for many records at once (a bulk enroll): ``hook(conn, [(action, identity,
        #: detail), …])``, the same chained rows as one :attr:`audit_hook` call each, written
        #: in one statement; None: one :attr:`audit_hook` call per record.
        self.audit_many_hook: (
            Callable[[sqlite3.Connection, list[tuple[str, str | None, str]]], None] | None
        ) = None
        exists = self.path is not None and self.path.exists()
        if self.path is not None and exists and self.path.is_dir():
            raise GalleryFileError(f"{self._where()!r} is a folder, not a gallery file")
        if self.path is not None and exists and self.path.stat().st_size == 0:
            raise GalleryFileError(
                f"{self._where()!r} is an empty file, not a gallery: "
                "remove it or choose another path to create a new gallery"
            )
        if self.path is not None:  # before any file is read or created
            filemodes.refuse_unsafe_folder(self.path, filemodes.sqlite_files(self.path))
        new_blocks = None if exists else check_new_layout(dim, blocks)  # before any file exists
        wal_left = False
        clean = False
        self._owner = False
        self.integrity = "new" if not exists else "off"
        if self.path is not None and exists:
            files = [*filemodes.sqlite_files(self.path), clean_marker_path(self.path)]
            filemodes.refuse_shared_writes(files)  # before any read
            wal_left = self._check_wal(integrity_check)
            clean = integrity_check and not wal_left and closed_cleanly(self.path)
        created = False
        if self.path is not None and not exists:
            try:
                filemodes.create_private_file(self.path)
            except OSError as exc:
                raise GalleryFileError(
                    f"cannot create gallery file {self._where()!r}: "
                    f"{exc.strerror or exc}; check that the folder exists and is writable"
                ) from exc
            created = True
        try:
            self._con = sqlite3.connect(
                ":memory:" if self.path is None else self._where(),
                isolation_level=None,
                check_same_thread=False,
                factory=_Connection,
            )
        except sqlite3.Error as exc:
            self._discard(created)
            raise GalleryFileError(f"cannot open gallery file {str(path)!r}: {exc}") from exc
        try:
            if not exists and dim is not None:
                # before WAL mode and the first table (fixed from then on): a 512-d float32 row
                # (2 KiB + a few bytes) does not fit twice in SQLite's default 4 KiB page, so
                # every template took a whole page (4.1 KB per template on disk, every byte
                # written twice through the WAL); in 16 KiB pages seven fit (2.4 KB, and ~40%
                # less insert CPU). https://www.sqlite.org/pragma.html#pragma_page_size
                self._con.execute(f"PRAGMA page_size={page_size_for(int(dim))}")
            self._configure()
            if exists:
                self._check_existing(integrity_check and not clean, wal_left)
                if integrity_check:
                    self.integrity = (
                        "closed cleanly"
                        if clean
                        else ("integrity_check" if wal_left else "quick_check")
                    )
            else:
                self._create(int(dim), new_blocks)  # type: ignore[arg-type]
            self.dim, self.blocks = self._read_shape()
        except (sqlite3.DatabaseError, UnicodeDecodeError, GalleryDamagedError) as exc:
            # a crafted file can hold text that is not UTF-8 where SQLite returns text
            self._con.close()
            self._discard(created)
            if _on_read_only_fs(self.path):
                raise GalleryFileError(
                    f"cannot open gallery {self._where()!r}: its file system is mounted "
                    "read-only (SQLite needs to write its -wal/-shm files beside it); remount it "
                    "read-write or copy the gallery to a writable folder"
                ) from exc
            raise GalleryFileError(
                f"{self._where()!r} is not a readable gallery ({exc}): "
                "it is not a SQLite database or it is corrupted"
            ) from exc
        except BaseException:
            self._con.close()
            self._discard(created)
            raise
        self._make_private()
        if exists and dim is not None and int(dim) != self.dim:
            self._con.close()
            raise DimensionError(
                f"gallery {self._where()!r} holds templates of dimension {self.dim}, "
                f"but dim={int(dim)} was requested: open it without dim or with dim={self.dim}"
            )

    # ------------------------------------------------------------------ setup
    def _configure(self) -> None:
        c = self._con
        if self.path is not None:
            mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # pragma: no cover - e.g. network filesystems
                raise GalleryFileError(
                    f"cannot use WAL journaling on {self._where()!r} (got {mode!r})"
                )
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA secure_delete=ON")
        c.execute("PRAGMA foreign_keys=ON")

    def _discard(self, created: bool) -> None:
        """Delete the files of a store whose creation failed (never an existing gallery)."""
        if not created or self.path is None:
            return
        for f in filemodes.sqlite_files(self.path):
            with contextlib.suppress(OSError):
                f.unlink()

    def _make_private(self) -> None:
        """Owner-only modes on the database and its ``-wal`` / ``-shm`` files."""
        if self.path is None:
            return
        for f in filemodes.sqlite_files(self.path):
            if filemodes.tighten(f):
                log.warning(
                    "gallery file %s was readable by other users: made owner-only (0600)",
                    os.fspath(f),
                )

    def _check_wal(self, integrity_check: bool) -> bool:
        """A crash-left ``-wal`` is scanned before SQLite recovers it; True when one was left."""
        assert self.path is not None
        return check_left_wal(self.path, refuse_loss=integrity_check)

    def _read_shape(self) -> tuple[int, np.ndarray | None]:
        """The stored dimension and block offsets, checked (a crafted file could hold anything)."""
        where = repr(self._where()) if self.path is not None else "memory"
        raw_dim, raw_blocks = self.get_meta("dim"), self.get_meta("blocks")
        try:
            dim = int(raw_dim)
            blk = json.loads(raw_blocks)
            blocks = check_new_layout(dim, blk)
        except (ValueError, TypeError, InputError) as exc:
            raise GalleryFileError(
                f"gallery {where} records an invalid template dimension or block layout "
                f"({str(exc)[:120]}): the file is damaged; restore it from a backup"
            ) from exc
        return dim, None if blocks is None else np.asarray(blocks, np.int64)

    def _create(self, dim: int, blk: list[int] | None) -> None:
        now = time.time()
        with self.transaction():
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._con.execute(stmt)
            for k, v in (
                ("format", FORMAT_NAME),
                ("format_version", str(FORMAT_VERSION)),
                ("dim", str(int(dim))),
                ("blocks", json.dumps(blk)),
                ("generation", "0"),
                ("uuid", uuid.uuid4().hex),
                ("created_at", repr(now)),
            ):
                self._con.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (k, v))

    def _check_existing(self, integrity_check: bool, wal_left: bool = False) -> None:
        c = self._con
        has_meta = c.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()[0]
        fmt = None
        if has_meta:
            row = c.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            fmt = None if row is None else row[0]
        if fmt != FORMAT_NAME:
            raise GalleryFileError(
                f"{self._where()!r} is a SQLite database but not a pyfacematch gallery "
                "(no format record): choose a gallery file or a new path"
            )
        row = c.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()
        try:
            version = int(row[0]) if row is not None else None
        except (ValueError, TypeError, OverflowError):  # NULL, text, a blob, inf: not a version
            version = None
        if version != FORMAT_VERSION:
            raise FormatVersionError(
                f"gallery {self._where()!r} has format version "
                f"{row[0] if row else 'missing'!s}, this pyfacematch reads version "
                f"{FORMAT_VERSION}: open it with the pyfacematch release that wrote it"
            )
        # A crafted file can carry the format record over other tables: every table of the
        # base schema must begin with exactly its columns (later columns are migrations that
        # add to a table, such as the audit chain's), or queries fail later in odd places.
        have = _columns(c)
        for table, cols in _expected_columns().items():
            if have.get(table, [])[: len(cols)] != cols:
                got = "missing" if table not in have else [n for n, _ in have[table]]
                raise GalleryFileError(
                    f"gallery {self._where()!r} has the format record of version "
                    f"{FORMAT_VERSION} but its table {table!r} is not that version's "
                    f"(columns {got}, expected {[n for n, _ in cols]}): the file was altered or "
                    "corrupted; restore it from a backup"
                )
        if integrity_check:
            # after a crash (a WAL was left) check everything, indexes included
            check = "integrity_check" if wal_left else "quick_check"
            res = c.execute(f"PRAGMA {check}").fetchall()
            if res != [("ok",)]:
                raise GalleryFileError(
                    f"gallery {self._where()!r} is corrupted (SQLite {check}: "
                    f"{res[0][0] if res else 'no answer'}); restore it from a backup"
                )

    # ------------------------------------------------------------ primitives
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error)."""
        where = "memory" if self.path is None else repr(self._where())
        with self._lock:
            try:
                self._conn().execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise GalleryFileError(
                    f"cannot start a write on gallery {where} ({exc}): another process may be "
                    "writing to it, or the disk is read-only; retry or close the other writer"
                ) from exc
            try:
                yield self._conn()
                self._conn().execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn().execute("ROLLBACK")
                raise GalleryFileError(
                    f"write to gallery {where} failed and was rolled back ({exc}): nothing of "
                    "this call was stored; check free disk space and permissions"
                ) from exc
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn().execute("ROLLBACK")
                raise

    def _conn(self) -> sqlite3.Connection:
        """The open connection; :class:`GalleryClosedError` after :meth:`close`."""
        con = self._con
        if con is None:
            where = "memory" if self.path is None else repr(self._where())
            raise GalleryClosedError(
                f"gallery {where} is closed: nothing was written; open it again to use it"
            )
        return con

    def begin_writes(self) -> None:
        """Declare this store the file's writer: its clean-close marker is deleted now (before
        any write) and written again by :meth:`close` when the WAL could be truncated."""
        if self.path is None:
            return
        drop_clean_marker(self.path)
        self._owner = True

    def close(self) -> None:
        """Checkpoint the WAL and close the connection (idempotent).

        A writer (:meth:`begin_writes`) whose WAL was truncated then records the clean-close
        marker, so the next open can skip ``quick_check`` while the file stays unchanged."""
        with self._lock:
            if self._con is None:
                return
            truncated = False
            with contextlib.suppress(sqlite3.Error, GalleryFileError):
                self.wal_checkpoint()
                truncated = True
            self._con.close()
            self._con = None  # type: ignore[assignment]
            if self._owner and truncated and self.path is not None:
                with contextlib.suppress(OSError):
                    write_clean_marker(self.path)

    def wal_checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it to zero bytes."""
        if self.path is None:
            return
        with self._lock:
            busy, _, _ = self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:  # pragma: no cover - only with foreign readers on the file
                raise GalleryFileError(
                    f"could not truncate the WAL of {self._where()!r}: another process "
                    "holds a read transaction; close it and call remove() or checkpoint() again"
                )

    def get_meta(self, key: str) -> str:
        with self._lock:
            row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            raise GalleryFileError(f"gallery has no {key!r} record: the file is damaged")
        return self._meta_text(key, row[0])

    def _meta_text(self, key: str, value: Any) -> str:
        # every meta value is written as text or an integer; NULL or bytes mean an altered file
        if value is None or isinstance(value, bytes):
            raise GalleryDamagedError(
                f"gallery {self._where()!r} has a {'NULL' if value is None else 'binary'} "
                f"{key!r} record: the file is damaged or was altered; restore it from a backup"
            )
        return str(value)

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        """Counter bumped by every committed enroll or removal."""
        raw = self.get_meta("generation")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise GalleryDamagedError(
                f"gallery {self._where()!r} records generation {raw!r}, not an integer: the file "
                "was altered or corrupted; nothing was changed: restore it from a backup"
            ) from None

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes when another connection commits."""
        with self._lock:
            return int(self._con.execute("PRAGMA data_version").fetchone()[0])

    def _bump(self, c: sqlite3.Connection) -> int:
        c.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
        return int(c.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def _audit(self, c: sqlite3.Connection, action: str, identity: str | None, detail: str) -> None:
        if self.audit_hook is not None:
            self.audit_hook(c, action, identity, detail)
            return
        c.execute(
            "INSERT INTO audit(ts, action, identity, detail) VALUES (?, ?, ?, ?)",
            (time.time(), action, identity, detail),
        )

    def _audit_many(
        self, c: sqlite3.Connection, records: list[tuple[str, str | None, str]]
    ) -> None:
        if not records:
            return
        if self.audit_many_hook is not None and self.audit_hook is not None:
            self.audit_many_hook(c, records)
        else:
            for action, identity, detail in records:
                self._audit(c, action, identity, detail)

    # ------------------------------------------------------------ identities
    def insert_identities(
        self,
        items: Sequence[tuple[str, np.ndarray, np.ndarray | None, Mapping[str, Any] | None]],
        *,
        on_duplicate: str,
        consent: str = "granted",
        in_txn: Callable[[sqlite3.Connection], None] | None = None,
        tids: Sequence[np.ndarray] | None = None,
    ) -> tuple[list[np.ndarray], int]:
        """Insert identities and their templates in one transaction.

        Parameters
        ----------
        items : sequence of (name, templates (T,d) float32, masks (T,) uint64 or None, metadata)
        on_duplicate : {"refuse", "append"}
            What to do with a name already enrolled (or repeated in ``items``).

        tids : sequence of int64 arrays, or None
            Template ids to give each item's rows (one array per item; used when a gallery is
            split into shards, so each shard keeps the source's ids and so its row order and
            tie-breaks); None: new ids from the table's sequence.

        Returns
        -------
        tids : list of int64 arrays
            The new template ids of each item, in order.
        generation : int
            The store generation after the commit.

        Raises
        ------
        DuplicateIdentityError
        DTypeError, DimensionError, NonFiniteError, ZeroVectorError, InputError
            A template is not a finite unit-norm float32 row of length ``dim``
            (nothing is written).
        """
        checked = self._check_items(items)  # refused before anything is written
        if tids is not None and (
            len(tids) != len(checked) or any(len(t) != c[1].shape[0] for t, c in zip(tids, checked))
        ):
            raise InputError("tids must give one id per template row of each item")
        now = time.time()
        out: list[np.ndarray] = []
        with self.transaction() as c:
            if in_txn is not None:  # e.g. consent checks and records, committed with the rows
                in_txn(c)
            next_tid: int | None = None
            ring = self.cipher
            # names already enrolled: one query per 500 names, not one per identity; names
            # enrolled by this call are added as they go (a repeated name appends or is refused)
            known = self._known_names(c, [it[0] for it in checked])
            pending: list[tuple[int, int, bytes, int | None]] = []
            new_idents: list[tuple[Any, ...]] = []
            next_ident: int | None = None
            # one chained audit record per identity, as before, written in one statement at
            # the end of the transaction (the records' order is the items' order)
            records: list[tuple[str, str | None, str]] = []

            def flush() -> None:  # identities first: the templates reference them
                if new_idents:
                    c.executemany(
                        "INSERT INTO identities(id, name, metadata, consent, consent_at,"
                        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        new_idents,
                    )
                    new_idents.clear()
                self._insert_templates(c, pending)

            for item_no, (name, tmpl, masks, metadata) in enumerate(checked):
                got = known.get(name)
                row = None if got is None else (got,)
                meta_json = None if metadata is None else json.dumps(metadata, sort_keys=True)
                if row is not None:
                    flush()  # the row may still be pending (a name repeated in this call)
                    if on_duplicate != "append":
                        raise DuplicateIdentityError(
                            f"identity {name!r} is already enrolled: pass on_duplicate='append' "
                            "to add templates to it, or remove() it first"
                        )
                    ident = int(row[0])
                    if meta_json is not None:
                        c.execute(
                            "UPDATE identities SET metadata=?, updated_at=? WHERE id=?",
                            (meta_json, now, ident),
                        )
                    else:
                        c.execute("UPDATE identities SET updated_at=? WHERE id=?", (now, ident))
                    action = "append"
                else:
                    if next_ident is None:  # the id SQLite would give (max + 1), once
                        top = c.execute("SELECT max(id) FROM identities").fetchone()[0]
                        next_ident = int(top or 0) + 1
                    ident, next_ident = next_ident, next_ident + 1
                    new_idents.append((ident, name, meta_json, consent, now, now, now))
                    known[name] = ident
                    action = "enroll"
                new_tids = np.empty(tmpl.shape[0], np.int64)
                for j in range(tmpl.shape[0]):
                    m = None if masks is None else _u64_to_i64(int(masks[j]))
                    # ids chosen here, as AUTOINCREMENT would (the only writer, inside the
                    # transaction): the rows then go in by executemany, many per statement
                    if tids is not None:
                        tid = int(tids[item_no][j])
                    else:
                        if next_tid is None:  # once per transaction
                            next_tid = self._next_tid(c)
                        tid, next_tid = next_tid, next_tid + 1
                    if ring is None:
                        pending.append((tid, ident, tmpl[j].tobytes(), m))
                    else:  # the template id is bound into the ciphertext
                        blob = ring.seal_row(name, tid, tmpl[j].tobytes(), m)
                        pending.append((tid, ident, blob, None))
                    new_tids[j] = tid
                if len(pending) >= 4096:  # bounded: a few MB of blobs at a time
                    flush()
                records.append((action, name, f"templates={tmpl.shape[0]}"))
                out.append(new_tids)
            flush()
            self._audit_many(c, records)
            gen = self._bump(c)
        return out, gen

    def _check_items(
        self, items: Sequence[tuple[str, np.ndarray, np.ndarray | None, Mapping[str, Any] | None]]
    ) -> list[tuple[str, np.ndarray, np.ndarray | None, Mapping[str, Any] | None]]:
        """Every item's templates checked (:func:`check_templates`): all rows at once when
        they are plain float32 (one pass, not one per identity), item by item when that fails
        (the error then names the identity)."""
        arrs = [it[1] for it in items]
        plain = len(arrs) > 1 and all(
            isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 2 for a in arrs
        )
        if plain:
            try:
                check_templates(np.concatenate(arrs), self.dim, "templates")
                return [(n, np.ascontiguousarray(t), m, md) for n, t, m, md in items]
            except (InputError, ValueError):
                pass  # named below
        return [
            (name, check_templates(tmpl, self.dim, f"templates of {name!r}"), masks, metadata)
            for name, tmpl, masks, metadata in items
        ]

    @staticmethod
    def _known_names(c: sqlite3.Connection, names: list[str]) -> dict[str, int]:
        """``name → identity id`` of those of ``names`` already in the table."""
        out: dict[str, int] = {}
        uniq = list(dict.fromkeys(names))
        for k in range(0, len(uniq), 500):
            part = uniq[k : k + 500]
            q = f"SELECT name, id FROM identities WHERE name IN ({','.join('?' * len(part))})"
            out.update((str(n), int(i)) for n, i in c.execute(q, part).fetchall())
        return out

    @staticmethod
    def _insert_templates(
        c: sqlite3.Connection, pending: list[tuple[int, int, bytes, int | None]]
    ) -> None:
        if pending:
            c.executemany(
                "INSERT INTO templates(tid, identity, data, mask) VALUES (?, ?, ?, ?)", pending
            )
            pending.clear()

    @staticmethod
    def _next_tid(c: sqlite3.Connection) -> int:
        """The id AUTOINCREMENT would give the next template (inside the write transaction)."""
        row = c.execute("SELECT seq FROM sqlite_sequence WHERE name='templates'").fetchone()
        top = c.execute("SELECT max(tid) FROM templates").fetchone()[0]
        return max(int(row[0]) if row else 0, int(top or 0)) + 1

    def get_meta_opt(self, key: str) -> str | None:
        """The ``meta`` value under ``key``, or None when absent."""
        with self._lock:
            row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else self._meta_text(key, row[0])

    def decrypt_rows(self, chunk: list[Any], where: str) -> list[Any]:
        """(tid, name, blob, mask) rows of an encrypted gallery, decrypted (plain when not)."""
        ring = self.cipher
        if ring is None:
            return chunk
        out = []
        for tid, name, blob, _mask in chunk:
            data, mask = ring.open_row(str(name), int(tid), blob, where)
            out.append((tid, name, data, mask))
        return out

    def delete_identity(
        self,
        name: str,
        *,
        truncate_wal: bool = True,
        in_txn: Callable[[sqlite3.Connection], None] | None = None,
    ) -> tuple[np.ndarray, int]:
        """Delete an identity and its templates; checkpoint the WAL (TRUNCATE).

        Returns the deleted template ids that were live (quarantined rows are
        deleted too, and dropped from :attr:`quarantined`, but not returned:
        they were never loaded) and the new generation. With
        ``truncate_wal=False`` the caller truncates the WAL itself (the delete
        is committed either way when this returns).
        """
        with self.transaction() as c:
            row = c.execute("SELECT id FROM identities WHERE name=?", (name,)).fetchone()
            if row is None:
                raise UnknownIdentityError(
                    f"identity {name!r} is not enrolled: nothing to remove "
                    "(list enrolled ids with gallery.identities())"
                )
            tids = np.array(
                [r[0] for r in c.execute("SELECT tid FROM templates WHERE identity=?", (row[0],))],
                np.int64,
            )
            c.execute("DELETE FROM identities WHERE id=?", (row[0],))
            if in_txn is not None:  # e.g. consent rows and an opt-out tombstone
                in_txn(c)
            self._audit(c, "remove", name, f"templates={tids.size}")
            # a scrub is owed until VACUUM ran (stale copies of moved cells: gallery.erasure)
            c.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, '1')", (SCRUB_PENDING_KEY,)
            )
            gen = self._bump(c)
        gone = {int(t) for t in tids.tolist()} & self._quarantined_tids
        if gone:
            self._quarantined_tids -= gone
            self.quarantined = [q for q in self.quarantined if q.tid not in gone]
            tids = tids[~np.isin(tids, np.fromiter(gone, np.int64))]
        if truncate_wal:
            self.scrub_erased()
        return tids, gen

    def scrub_erased(self) -> None:
        """``VACUUM`` when a removal still owes a scrub, then truncate the WAL.

        See :mod:`pyfacematch.gallery.erasure` for why ``secure_delete`` alone
        leaves stale copies of erased rows in the database file.
        """
        if self.path is None:
            return
        with self._lock:
            try:
                self.vacuum_if_owed()
            except sqlite3.Error as exc:
                raise GalleryFileError(
                    f"the removal is committed but could not be scrubbed from "
                    f"{self._where()!r} ({exc}): call checkpoint() again when no other "
                    "process writes to the gallery"
                ) from exc
            self.wal_checkpoint()

    def vacuum_if_owed(self) -> None:
        """``VACUUM`` (under the store's lock) when a removal still owes its scrub.

        The WAL truncation that must follow is the caller's (the gallery's
        eraser retries it while other processes read). Raises
        :class:`sqlite3.Error` when ``VACUUM`` could not run; the flag stays.
        """
        if self.path is None:
            return
        with self._lock:
            c = self._conn()
            if c.execute("SELECT 1 FROM meta WHERE key=?", (SCRUB_PENDING_KEY,)).fetchone():
                scrub_erased(c)

    def has_identity(self, name: str) -> bool:
        with self._lock:
            return (
                self._conn().execute("SELECT 1 FROM identities WHERE name=?", (name,)).fetchone()
                is not None
            )

    def identity_names(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn().execute("SELECT name FROM identities ORDER BY id")]

    def identity_record(self, name: str) -> dict[str, Any]:
        """Metadata, consent state and timestamps of one identity."""
        with self._lock:
            row = (
                self._conn()
                .execute(
                    "SELECT i.metadata, i.consent, i.consent_at, i.created_at, i.updated_at,"
                    " (SELECT count(*) FROM templates t WHERE t.identity = i.id)"
                    " FROM identities i WHERE name=?",
                    (name,),
                )
                .fetchone()
            )
        if row is None:
            raise UnknownIdentityError(f"identity {name!r} is not enrolled")
        return {
            "metadata": None if row[0] is None else json.loads(row[0]),
            "consent": row[1],
            "consent_at": row[2],
            "created_at": row[3],
            "updated_at": row[4],
            "n_templates": int(row[5]),
        }

    def counts(self) -> tuple[int, int]:
        """(identities, templates) that are live: quarantined templates, and identities
        left with none but quarantined ones, are not counted."""
        with self._lock:
            n_t = self._conn().execute("SELECT count(*) FROM templates").fetchone()[0]
            if not self._quarantined_tids:
                n_id = self._conn().execute("SELECT count(*) FROM identities").fetchone()[0]
                return int(n_id), int(n_t)
            live = [
                r[0]
                for r in self._conn().execute("SELECT identity, tid FROM templates")
                if int(r[1]) not in self._quarantined_tids
            ]
        return len(set(live)), len(live)

    def load_all(self) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray | None]:
        """Every template that passes its checks, ordered by template id.

        Each row is checked (blob of ``dim`` float32 values, finite, unit norm
        within :data:`~pyfacematch.gallery.quarantine.NORM_TOLERANCE`, a
        non-zero mask of the gallery's blocks, a text identity). Rows that fail
        are quarantined: not returned, listed in :attr:`quarantined`, logged,
        and reported in one
        :class:`~pyfacematch.gallery.quarantine.TemplateQuarantineWarning`.

        Returns
        -------
        tids : int64 (N,)
        names : list of str, length N (the identity of each template)
        matrix : float32 (N, dim)
        masks : uint64 (N,) or None when the gallery has no blocks

        Raises
        ------
        GalleryFileError
            SQLite cannot read the table (the file is corrupted).
        """
        where = "memory" if self.path is None else repr(self._where())
        n_blocks = None if self.blocks is None else int(self.blocks.size - 1)
        bad: list[QuarantinedTemplate] = []
        try:
            with self._lock:
                n = int(self._conn().execute("SELECT count(*) FROM templates").fetchone()[0])
                tids = np.empty(n, np.int64)
                masks = np.zeros(n, np.int64)
                matrix = np.empty((n, self.dim), np.float32)
                names: list[str] = []
                cur = self._conn().execute(
                    "SELECT t.tid, i.name, t.data, t.mask FROM templates t"
                    " JOIN identities i ON i.id = t.identity ORDER BY t.tid"
                )
                i = seen = 0
                while True:
                    chunk = cur.fetchmany(8192)  # bounded memory: no list of every blob
                    if not chunk:
                        break
                    seen += len(chunk)
                    if seen > n:
                        raise GalleryFileError(
                            f"the template table of gallery {where} changed size while it was "
                            "read: the file is damaged or being rewritten; open it again"
                        )
                    chunk = self.decrypt_rows(chunk, where)
                    good, mat, q = check_rows(chunk, self.dim, n_blocks)
                    bad.extend(q)
                    j = i + good.size
                    tids[i:j] = [chunk[g][0] for g in good.tolist()]
                    names.extend(chunk[g][1] for g in good.tolist())
                    matrix[i:j] = mat
                    masks[i:j] = [0 if chunk[g][3] is None else chunk[g][3] for g in good.tolist()]
                    i = j
        except sqlite3.DatabaseError as exc:
            raise GalleryFileError(
                f"cannot read the templates of gallery {where} ({exc}): "
                "the file is corrupted; restore it from a backup"
            ) from exc
        if seen != n:
            raise GalleryFileError(
                f"gallery {where} lists {n} templates but {seen} could be read: the file is damaged"
            )
        self.quarantined = bad
        self._quarantined_tids = {q.tid for q in bad}
        report_quarantine(bad, where)
        masks_out = None if self.blocks is None else masks[:i].view(np.uint64)
        return tids[:i], names, matrix[:i], masks_out

    def load_index_rows(self) -> tuple[np.ndarray, list[str], np.ndarray | None]:
        """Template ids, identities and masks ordered by template id — no template blobs.

        What a gallery needs beside the rows of a serving folder (which hold the templates): the
        (identity, template id) pairs come from the ``templates_identity`` index alone, so the
        table's pages (every blob) are not read; masks (galleries with region blocks) do need
        the table.

        Returns
        -------
        tids : int64 (N,), names : list of str (N), masks : uint64 (N,) or None
        """
        where = "memory" if self.path is None else repr(self._where())
        try:
            with self._lock:
                con = self._conn()
                ident = con.execute("SELECT id, name FROM identities ORDER BY id").fetchall()
                if self.blocks is None:
                    sql = "SELECT identity, tid, 0 FROM templates INDEXED BY templates_identity"
                else:
                    sql = "SELECT identity, tid, IFNULL(mask, 0) FROM templates"
                cur = con.execute(sql)
                parts: list[np.ndarray] = []
                while True:
                    chunk = cur.fetchmany(65536)  # bounded memory: no list of every row
                    if not chunk:
                        break
                    # one C loop per chunk (no per-row Python tuple): ~1 s less per million
                    flat = itertools.chain.from_iterable(chunk)
                    parts.append(np.fromiter(flat, np.int64, 3 * len(chunk)).reshape(-1, 3))
        except sqlite3.DatabaseError as exc:
            raise GalleryFileError(
                f"cannot read the templates of gallery {where} ({exc}): "
                "the file is corrupted; restore it from a backup"
            ) from exc
        except (TypeError, ValueError, OverflowError) as exc:  # a crafted id or mask
            raise GalleryFileError(
                f"gallery {where} holds a template id or mask that is not an integer ({exc}): "
                "the file is damaged"
            ) from exc
        rows = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
        rows = rows[np.argsort(rows[:, 1], kind="stable")]
        ids = np.fromiter((r[0] for r in ident), np.int64, len(ident))
        pos = np.searchsorted(ids, rows[:, 0])
        if rows.shape[0] and (pos.max() >= ids.size or (ids[pos] != rows[:, 0]).any()):
            raise GalleryFileError(
                f"gallery {where} holds a template of no identity: the file is damaged"
            )
        names_by_id = np.empty(len(ident), object)
        names_by_id[:] = [r[1] for r in ident]
        names = names_by_id[pos].tolist()
        self.quarantined = []
        self._quarantined_tids = set()
        masks = None if self.blocks is None else rows[:, 2].copy().view(np.uint64)
        # one template per identity: the templates' identity ids are all distinct (names are
        # distinct by the schema's UNIQUE constraint)
        sp = np.sort(pos)
        self.one_template_each = bool(sp.size == 0 or (np.diff(sp) > 0).all())
        return np.ascontiguousarray(rows[:, 1]), names, masks

    def row_facts(self) -> dict[str, int]:
        """Template and identity counts and the largest template id, from the indexes alone
        (no row of the tables is read): what a serving folder must record to be used."""
        where = "memory" if self.path is None else repr(self._where())
        try:
            with self._lock:
                con = self._conn()
                n_t, n_i = con.execute(
                    "SELECT count(*), count(DISTINCT identity) FROM templates"
                    " INDEXED BY templates_identity"
                ).fetchone()
                top = con.execute("SELECT IFNULL(max(tid), -1) FROM templates").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise GalleryFileError(
                f"cannot read the templates of gallery {where} ({exc}): "
                "the file is corrupted; restore it from a backup"
            ) from exc
        return {"templates": int(n_t), "identities": int(n_i), "max_tid": int(top)}

    def tid_digest(self) -> str:
        """SHA-256 of the sorted live template ids (identifies the index content)."""
        with self._lock:
            tids = np.array(
                [
                    r[0]
                    for r in self._conn().execute("SELECT tid FROM templates ORDER BY tid")
                    if r[0] not in self._quarantined_tids
                ],
                np.int64,
            )
        return digest_tids(tids)

    # ------------------------------------------------------------ thresholds
    def set_threshold(self, rec: ThresholdRecord) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO thresholds(name, value, target, n_scores, gallery_size,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (rec.name, rec.value, rec.target, rec.n_scores, rec.gallery_size, rec.created_at),
            )
            self._audit(c, "calibrate", None, f"{rec.name}={rec.target} n={rec.n_scores}")

    def get_threshold(self, name: str) -> ThresholdRecord | None:
        with self._lock:
            row = (
                self._conn()
                .execute(
                    "SELECT name, value, target, n_scores, gallery_size, created_at FROM thresholds"
                    " WHERE name=?",
                    (name,),
                )
                .fetchone()
            )
        return None if row is None else ThresholdRecord(*row)

    # ----------------------------------------------------------- checkpoints
    def get_checkpoint(self, backend: str) -> CheckpointRecord | None:
        """The checkpoint record of ``backend``, or None when absent or unusable.

        A record whose fields have the wrong types or whose parameters are not
        valid (:func:`~pyfacematch.gallery.derived.parse_params`) is treated as
        absent, with a log line: the index is derived data and is rebuilt from
        the templates. (Whether the file it names may be trusted is the
        caller's business: names, sizes and authentication are checked there.)
        """
        with self._lock:
            row = (
                self._conn()
                .execute(
                    "SELECT backend, file, sha256, generation, n_templates, digest, params"
                    " FROM checkpoints WHERE backend=?",
                    (backend,),
                )
                .fetchone()
            )
        if row is None:
            return None
        b, file, sha, gen, n_t, digest, text = row
        why = None
        if not all(isinstance(v, str) for v in (b, file, sha, digest)):
            why = "a name or checksum field is not text"
        elif any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (gen, n_t)):
            why = "its generation or template count is not a non-negative integer"
        else:
            params, why = parse_params(text if isinstance(text, str) else None, self.dim)
            if params is None and why is None:
                why = "its parameters are not text"
        if why is not None:
            log.warning(
                "checkpoint record of backend %r not used (%s): the index is rebuilt", b, why
            )
            return None
        return CheckpointRecord(b, file, sha, gen, n_t, digest, params=params)  # type: ignore[arg-type]

    def get_params(self, key: str) -> dict[str, Any] | None:
        """Index parameters stored under meta ``key`` (e.g. ``"tuning:binary"``), validated.

        Returns None when absent, and when malformed (not JSON, NaN or
        infinite values, a centre of the wrong length …; see
        :func:`~pyfacematch.gallery.derived.parse_params`), with a log line:
        they are derived data, so the caller re-tunes instead of failing to
        open or using them.
        """
        with self._lock:
            row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        params, why = parse_params(None if row is None else str(row[0]), self.dim)
        if why is not None:
            log.warning("stored %s parameters not used (%s): they are rebuilt", key, why)
        return params

    def set_params(self, key: str, params: dict[str, Any]) -> None:
        """Store index parameters under meta ``key`` as JSON.

        Raises
        ------
        InputError
            ``params`` holds NaN or infinite values, or is not JSON-serialisable
            (nothing is written: such values would be refused when read back).
        """
        try:
            text = json.dumps(params, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"index parameters {key!r} cannot be stored ({exc}): they hold a non-finite "
                "or non-JSON value; re-tune the index (rebuild_index())"
            ) from exc
        self.set_meta(key, text)

    def set_checkpoint(self, rec: CheckpointRecord) -> None:
        """Record a checkpoint file.

        Raises
        ------
        InputError
            Its parameters hold NaN or infinite values (nothing is written).
        """
        try:
            params = json.dumps(rec.params, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"checkpoint parameters of backend {rec.backend!r} cannot be stored ({exc})"
            ) from exc
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO checkpoints(backend, file, sha256, generation,"
                " n_templates, digest, params, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.backend,
                    rec.file,
                    rec.sha256,
                    rec.generation,
                    rec.n_templates,
                    rec.digest,
                    params,
                    time.time(),
                ),
            )

    def delete_checkpoints(self) -> list[str]:
        """Forget every checkpoint record; return the files they named."""
        with self.transaction() as c:
            files = [r[0] for r in c.execute("SELECT file FROM checkpoints")]
            c.execute("DELETE FROM checkpoints")
        return files

    def checkpoint_files(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn().execute("SELECT file FROM checkpoints")]

    def audit_log(self) -> list[tuple[float, str, str | None, str]]:
        """(timestamp, action, identity, detail) rows, oldest first."""
        with self._lock:
            return [
                tuple(r)  # type: ignore[misc]
                for r in self._conn().execute(
                    "SELECT ts, action, identity, detail FROM audit ORDER BY seq"
                )
            ]


CLEAN_MARKER_SUFFIX = ".closed"
_CLEAN_FORMAT = "pyfacematch-clean-close-v1"


def clean_marker_path(db: str | os.PathLike[str]) -> Path:
    """``<db>.closed``: the fingerprint of the file as its last writer left it at close."""
    p = Path(db)
    return p.with_name(p.name + CLEAN_MARKER_SUFFIX)


def _fingerprint(db: Path) -> dict[str, int]:
    st = os.stat(db)
    return {
        "size": st.st_size,
        "ino": st.st_ino,
        "dev": st.st_dev,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(os.fspath(d), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_clean_marker(db: str | os.PathLike[str]) -> None:
    """Record the file's fingerprint after a clean close (the WAL truncated, nothing pending)."""
    p = Path(db)
    wal = p.with_name(p.name + "-wal")
    with contextlib.suppress(FileNotFoundError):
        if wal.stat().st_size > 0:
            return  # another connection wrote after the truncation: not clean
    body = json.dumps({"format": _CLEAN_FORMAT, **_fingerprint(p)}).encode()
    m = clean_marker_path(p)
    tmp = m.with_name(m.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(os.fspath(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, filemodes.PRIVATE_FILE)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, m)
    _fsync_dir(p.parent)


def drop_clean_marker(db: str | os.PathLike[str]) -> None:
    """Delete the marker durably before the first write of a writer."""
    m = clean_marker_path(db)
    try:
        m.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(m.parent)


def closed_cleanly(db: str | os.PathLike[str]) -> bool:
    """True when ``db`` is byte-for-byte where its last writer's clean close left it, as far as
    the file system can tell: same size, inode, modification and change times, and no
    non-empty ``-wal``. A missing, unreadable or mismatching marker means False (check)."""
    p = Path(db)
    wal = p.with_name(p.name + "-wal")
    try:
        if wal.exists() and wal.stat().st_size > 0:
            return False
        raw = clean_marker_path(p).read_bytes()
        if len(raw) > 4096:
            return False
        rec = json.loads(raw)
        if not isinstance(rec, dict) or rec.get("format") != _CLEAN_FORMAT:
            return False
        return all(rec.get(k) == v for k, v in _fingerprint(p).items())
    except (OSError, ValueError, RecursionError):
        return False


def digest_tids(tids: np.ndarray) -> str:
    """SHA-256 of a sorted int64 array of template ids."""
    return hashlib.sha256(np.sort(np.asarray(tids, np.int64)).astype("<i8").tobytes()).hexdigest()
