"""Search records of read-only galleries: an append-only sidecar, chained in at the next writable open.

A read-only opener must not write the database (it may lack the permission, and a second writer
would break the one-writer rule), yet its identify and verify calls must be audited. Each
read-only :class:`~pyfacematch.gallery.Gallery` therefore appends its search records to a file of
its own beside the database, ``<db>.audit-ro-<pid>-<random>.jsonl`` (0600, created on the first
search, held under an exclusive ``flock`` while open):

- one JSON line per record, written with a single ``write()`` before the search returns, so a
  SIGKILL of the reader loses no record (an operating-system crash can lose what the kernel had
  not yet written back; the file is ``fsync``-ed at close);
- the lines are hash-chained (``prev`` → ``hash``, from a genesis bound to the gallery id and the
  file name) and each hash is signed with HMAC-SHA256 under the audit key
  (``PYFACEMATCH_AUDIT_KEY`` or ``<db>.audit.key``) when the reader can read it.

:func:`import_sidecars` (run by every writable open and by ``audit_flush()``) appends the records
of every sidecar to the main hash chain in one transaction, each with its original time and
actor, followed by an ``audit-import`` record naming the file and the number of records. A
sidecar whose reader still holds its lock is imported up to its last complete line and the
position is kept in ``meta``; a finished one is deleted after the commit (a crash in between is
recognised by the ``done`` position and never imports twice). A line that fails its chain, its
signature (the importer holds the key and the line is unsigned or signed wrongly) or its
format stops the import of that file: an ``audit-sidecar-rejected`` record names the file, the
line and why, and the file is kept as ``….rejected`` for an investigator. A sidecar owned by
another user or writable by others is not imported (logged; left in place).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import Any

from pyfacematch.errors import GalleryFileError
from pyfacematch.gallery.filemodes import PRIVATE_FILE
from pyfacematch.gallery.secret import KeyProvider

__all__ = ["SidecarWriter", "import_sidecars", "sidecar_files"]

log = logging.getLogger("pyfacematch.gallery")
_META = "audit_sidecar:"
_GENESIS = "pyfacematch-audit-sidecar-v1"


def sidecar_files(db: Path) -> list[Path]:
    """The sidecar files beside ``db`` (rejected ones excluded)."""
    return sorted(db.parent.glob(db.name + ".audit-ro-*.jsonl"))


def _genesis(uid: str, name: str) -> str:
    return hashlib.sha256(f"{_GENESIS}\0{uid}\0{name}".encode()).hexdigest()


def _hash(prev: str, n: int, ts: float, actor: Any, action: Any, detail: Any) -> str:
    body = json.dumps([prev, n, ts, actor, action, detail], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _mac(key: bytes, uid: str, name: str, h: str) -> str:
    return hmac.new(key, f"sidecar\0{uid}\0{name}\0{h}".encode(), "sha256").hexdigest()


def _key(keys: KeyProvider) -> bytes | None:
    try:
        return keys.key(create=False)
    except GalleryFileError:  # unreadable or untrustworthy key file: records stay unsigned
        return None


class SidecarWriter:
    """Appends search records of one read-only gallery object to its own sidecar file."""

    def __init__(self, db: Path, uid: str, keys: KeyProvider) -> None:
        self.db = db
        self.uid = uid
        self.keys = keys
        self.path: Path | None = None
        self.error: str | None = None
        self._fd: int | None = None
        self._n = 0
        self._prev = ""
        self._lock = threading.Lock()
        self._key: bytes | None = None

    def _open(self) -> bool:
        if self._fd is not None:
            return True
        if self.error is not None:
            return False
        name = f"{self.db.name}.audit-ro-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        path = self.db.with_name(name)
        try:
            fd = os.open(
                os.fspath(path),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW,
                PRIVATE_FILE,
            )
            os.fchmod(fd, PRIVATE_FILE)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.error = (
                f"cannot create the audit sidecar {os.fspath(path)!r} ({exc.strerror or exc}): "
                "searches of this read-only gallery are NOT audited; give this user write "
                "permission on the gallery's folder"
            )
            log.warning("%s", self.error)
            return False
        self._fd, self.path, self._prev = fd, path, _genesis(self.uid, name)
        self._key = _key(self.keys)
        return True

    def append(self, ts: float, actor: str | None, action: str, detail: str) -> None:
        """Write one record (one ``write()``; before the caller's search returns)."""
        with self._lock:
            if not self._open():
                return
            assert self._fd is not None and self.path is not None
            h = _hash(self._prev, self._n, ts, actor, action, detail)
            mac = None if self._key is None else _mac(self._key, self.uid, self.path.name, h)
            line = {"n": self._n, "ts": ts, "actor": actor, "action": action, "detail": detail}
            line.update(prev=self._prev, hash=h, mac=mac)
            data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
            try:
                os.write(self._fd, data)
            except OSError as exc:
                log.warning("audit sidecar %s: record not written (%s)", self.path, exc)
                return
            self._prev, self._n = h, self._n + 1

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)  # releases the flock: the next writable open imports it all
            self._fd = None


def _read_lines(path: Path) -> tuple[list[bytes], bool, bool]:
    """(complete lines, whether the writer is alive, whether the file may be imported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        log.warning("audit sidecar %s cannot be opened (%s): not imported", path, exc)
        return [], True, False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            log.warning(
                "audit sidecar %s is not a regular file of yours that only you can write: "
                "not imported (check it, then chmod 600 it)",
                path,
            )
            return [], True, False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            alive = False
        except OSError:
            alive = True  # its reader still has it open
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    finally:
        os.close(fd)
    lines = data.split(b"\n")
    torn = lines.pop()  # empty when the file ends with a newline
    if torn and not alive:
        lines.append(torn)  # a torn last line of a dead writer: checked (and rejected) below
    return lines, alive, True


def _check(
    raw: bytes, n: int, prev: str, key: bytes | None, uid: str, name: str
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        d = json.loads(raw)
        ok = isinstance(d, dict) and d.get("n") == n and d.get("prev") == prev
    except ValueError:
        return None, "not a JSON line (torn or edited)"
    if not ok:
        return None, "out of sequence or its link to the previous line is wrong"
    ts = d.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return None, "its time is not a number"
    if not all(isinstance(d.get(k), (str, type(None))) for k in ("actor", "action", "detail")):
        return None, "a field has the wrong type"
    h = _hash(prev, n, float(ts), d.get("actor"), d.get("action"), d.get("detail"))
    if d.get("hash") != h:
        return None, "its content does not match its hash (edited)"
    if key is not None and not hmac.compare_digest(str(d.get("mac")), _mac(key, uid, name, h)):
        return None, "its HMAC is missing or wrong (not written by a reader holding the audit key)"
    if not isinstance(d.get("action"), str) or d["action"] not in ("identify", "verify"):
        return None, "not a search record"
    return d, None


def import_sidecars(store: Any, trail: Any, db: Path) -> int:
    """Chain every sidecar's new records into the main trail; how many were imported.

    ``store`` is the writable :class:`~pyfacematch.gallery.store.Store`, ``trail`` its
    :class:`~pyfacematch.gallery.audit.AuditTrail`.
    """
    uid = store.get_meta("uuid")
    key = _key(trail.keys)
    total = 0
    files = {p.name: p for p in sidecar_files(db)}
    with store._lock:
        known = {
            str(k)[len(_META) :]: json.loads(v)
            for k, v in store._conn().execute(
                "SELECT key, value FROM meta WHERE key LIKE ?", (_META + "%",)
            )
        }
    for name in sorted(set(known) - set(files)):  # imported and deleted: forget the position
        with store.transaction() as c:
            c.execute("DELETE FROM meta WHERE key=?", (_META + name,))
    for name, path in files.items():
        state = known.get(name, {"lines": 0, "prev": _genesis(uid, name)})
        if state.get("done"):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        lines, alive, usable = _read_lines(path)
        if not usable:
            continue
        n, prev = int(state["lines"]), str(state["prev"])
        good: list[dict[str, Any]] = []
        bad: tuple[int, str] | None = None
        for raw in lines[n:]:
            d, why = _check(raw, n + len(good), prev, key, uid, name)
            if d is None:
                bad = (n + len(good) + 1, str(why))
                break
            good.append(d)
            prev = d["hash"]
        finished = not alive or bad is not None
        if not good and bad is None and alive:
            continue
        with store.transaction() as c:
            for d in good:
                trail.append_in(
                    c, d["action"], None, d["detail"], actor=d.get("actor"), ts=float(d["ts"])
                )
            if bad is not None:
                trail.append_in(
                    c,
                    "audit-sidecar-rejected",
                    None,
                    json.dumps({"file": name, "line": bad[0], "reason": bad[1]}, sort_keys=True),
                )
            trail.append_in(
                c,
                "audit-import",
                None,
                json.dumps(
                    {"file": name, "records": len(good), "from_line": n + 1}, sort_keys=True
                ),
            )
            new = {"lines": n + len(good), "prev": prev, "done": finished}
            c.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                (_META + name, json.dumps(new)),
            )
        total += len(good)
        if finished:
            if bad is not None:
                with contextlib.suppress(OSError):
                    path.rename(path.with_name(path.name + ".rejected"))
                log.warning("audit sidecar %s: line %d rejected (%s)", path, bad[0], bad[1])
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
    return total
