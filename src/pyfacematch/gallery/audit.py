"""The gallery's audit trail in its store: chained appends, batched search records, checks.

The chain rules are :mod:`pyfacematch.security.audit`. Here:

- :func:`ensure_chain` upgrades the ``audit`` table (``actor``, ``prev``,
  ``hash`` columns; an ``audit_checkpoints`` table) and chains rows written
  before the upgrade (from then on; their earlier integrity is not known);
- :class:`AuditTrail` appends records inside the caller's transaction (enroll,
  remove, consent, calibration, key rotation are chained atomically with the
  change) and queues identify/verify records, written in batches by a
  background thread (one transaction per batch, off the search path; at most
  :attr:`AuditTrail.flush_seconds` late, flushed at close; a SIGKILL loses at
  most the search records of the last :attr:`AuditTrail.flush_seconds` plus the
  time one batch takes to commit, never a change's record); read-only galleries
  append theirs to a sidecar file instead (:mod:`.auditsidecar`);
- :func:`verify_store`, :func:`export_jsonl` and :func:`prune` back the
  ``pyfacematch audit`` commands.

The audit key (checkpoint HMACs) is separate from the data and master keys:
``PYFACEMATCH_AUDIT_KEY`` or the key file ``<db>.audit.key`` (0600).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pyfacematch.errors import KeyFileError
from pyfacematch.gallery.auditsidecar import SidecarWriter
from pyfacematch.gallery.secret import FileKeyProvider, KeyProvider
from pyfacematch.gallery.store import Store
from pyfacematch.security.audit import (
    CHECKPOINT_EVERY,
    AuditRecord,
    checkpoint_mac,
    genesis,
    record_hash,
    verify_chain,
)

__all__ = [
    "AUDIT_ENV_VAR",
    "AuditTrail",
    "audit_key_provider",
    "ensure_chain",
    "export_file",
    "export_jsonl",
    "verify_file",
    "prune",
    "read_records",
    "verify_store",
]

log = logging.getLogger("pyfacematch.gallery")

#: Environment variable holding the audit key (overrides ``<db>.audit.key``).
AUDIT_ENV_VAR = "PYFACEMATCH_AUDIT_KEY"
_ANCHOR_KEY = "audit_anchor"


class _EnvAuditKey:
    description = f"environment variable {AUDIT_ENV_VAR}"

    def key(self, *, create: bool = False) -> bytes | None:
        v = os.environ.get(AUDIT_ENV_VAR)
        if v is None:
            return None
        if len(v) < 32:
            raise KeyFileError(f"{AUDIT_ENV_VAR} holds {len(v)} characters, at least 32 are needed")
        return v.encode("utf-8")


class _MemoryKey:
    description = "a random key of this process (in-memory gallery)"

    def __init__(self) -> None:
        self._k = secrets.token_hex(32).encode()

    def key(self, *, create: bool = False) -> bytes | None:
        return self._k


def audit_key_provider(db_path: str | os.PathLike[str] | None) -> KeyProvider:
    """``PYFACEMATCH_AUDIT_KEY`` when set, else ``<db>.audit.key`` (in memory: a random key)."""
    if os.environ.get(AUDIT_ENV_VAR) is not None:
        return _EnvAuditKey()
    if db_path is None:
        return _MemoryKey()
    p = Path(db_path)
    return FileKeyProvider(p.with_name(p.name + ".audit.key"))


def _columns(c: sqlite3.Connection) -> set[str]:
    return {r[1] for r in c.execute("PRAGMA table_info(audit)")}


def chained(store: Store) -> bool:
    with store._lock:
        return "hash" in _columns(store._conn())


def ensure_chain(store: Store) -> None:
    """Add the chain columns and checkpoint table; chain rows written before (writable only)."""
    uid = store.get_meta("uuid")
    with store.transaction() as c:
        cols = _columns(c)
        for col in ("actor", "prev", "hash"):
            if col not in cols:
                c.execute(f"ALTER TABLE audit ADD COLUMN {col} TEXT")
        c.execute(
            "CREATE TABLE IF NOT EXISTS audit_checkpoints (seq INTEGER PRIMARY KEY,"
            " head TEXT NOT NULL, mac TEXT NOT NULL, ts REAL NOT NULL)"
        )
        legacy = c.execute(
            "SELECT seq, ts, actor, action, identity, detail FROM audit WHERE hash IS NULL"
            " ORDER BY seq"
        ).fetchall()
        if not legacy:
            return
        row = c.execute(
            "SELECT seq, hash FROM audit WHERE hash IS NOT NULL ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        prev_seq, prev = (int(row[0]), str(row[1])) if row else (0, _start(c, uid)[1])
        for seq, ts, actor, action, ident, detail in legacy:
            if int(seq) != prev_seq + 1:  # renumber: the chain has no gaps
                c.execute("UPDATE audit SET seq=? WHERE seq=?", (prev_seq + 1, seq))
                seq = prev_seq + 1
            h = record_hash(prev, int(seq), float(ts), actor, action, ident, detail)
            c.execute("UPDATE audit SET prev=?, hash=? WHERE seq=?", (prev, h, seq))
            prev, prev_seq = h, int(seq)


def _anchor(c: sqlite3.Connection) -> dict[str, Any] | None:
    row = c.execute("SELECT value FROM meta WHERE key=?", (_ANCHOR_KEY,)).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def _start(c: sqlite3.Connection, uid: str) -> tuple[int, str]:
    d = _anchor(c)
    if d is None:
        return 0, genesis(uid)
    return int(d["seq"]), str(d["hash"])


class AuditTrail:
    """Appends chained records to a store; queues search records for a writer thread."""

    flush_seconds = 0.5

    def __init__(
        self,
        store: Store,
        keys: KeyProvider,
        *,
        writable: bool,
        sidecar: SidecarWriter | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.writable = writable
        #: Where a read-only gallery's search records go (see :mod:`.auditsidecar`).
        self.sidecar = sidecar
        self.uid = store.get_meta("uuid")
        self._q: list[tuple[float, str | None, str, str | None, str]] = []
        self._qlock = threading.Lock()
        self._stop = False
        self._wake = threading.Event()  # set by close(): flush now instead of at the next tick
        self._thread: threading.Thread | None = None
        if writable:
            keys.key(create=True)  # created with the gallery (0600), refused if others read it

    # ------------------------------------------------------------ inside a transaction
    def append_in(
        self,
        c: sqlite3.Connection,
        action: str,
        identity: str | None,
        detail: str,
        actor: str | None = None,
        ts: float | None = None,
    ) -> int:
        """Append one chained record in the caller's transaction; its seq."""
        row = c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None or row[1] is None:
            prev_seq, prev = _start(c, self.uid)
            if row is not None:
                prev_seq = int(row[0])
        else:
            prev_seq, prev = int(row[0]), str(row[1])
        seq = prev_seq + 1
        t = time.time() if ts is None else ts
        h = record_hash(prev, seq, t, actor, action, identity, detail)
        c.execute(
            "INSERT INTO audit(seq, ts, action, identity, detail, actor, prev, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, t, action, identity, detail, actor, prev, h),
        )
        if seq % CHECKPOINT_EVERY == 0:
            self._checkpoint_in(c, seq, h)
        return seq

    def append_many_in(
        self,
        c: sqlite3.Connection,
        records: list[tuple[float, str | None, str, str | None, str]],
    ) -> int:
        """Append ``(ts, actor, action, identity, detail)`` records in the caller's transaction.

        The same rows as one :meth:`append_in` per record (each chained on the one before,
        checkpoints at the same seqs), read and written in two statements instead of two per
        record: a service audits thousands of searches a second. Returns the last seq.
        """
        row = c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None or row[1] is None:
            seq, prev = _start(c, self.uid)
            if row is not None:
                seq = int(row[0])
        else:
            seq, prev = int(row[0]), str(row[1])
        rows: list[tuple[Any, ...]] = []
        marks: list[tuple[int, str]] = []
        for ts, actor, action, identity, detail in records:
            seq += 1
            h = record_hash(prev, seq, ts, actor, action, identity, detail)
            rows.append((seq, ts, action, identity, detail, actor, prev, h))
            if seq % CHECKPOINT_EVERY == 0:
                marks.append((seq, h))
            prev = h
        c.executemany(
            "INSERT INTO audit(seq, ts, action, identity, detail, actor, prev, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for m_seq, m_head in marks:
            self._checkpoint_in(c, m_seq, m_head)
        return seq

    def _checkpoint_in(self, c: sqlite3.Connection, seq: int, head: str) -> None:
        key = self.keys.key(create=False)
        if key is None:
            log.warning("no audit key (%s): audit checkpoint not signed", self.keys.description)
            return
        c.execute(
            "INSERT OR REPLACE INTO audit_checkpoints(seq, head, mac, ts) VALUES (?, ?, ?, ?)",
            (seq, head, checkpoint_mac(key, self.uid, seq, head), time.time()),
        )

    def checkpoint(self) -> None:
        """Sign the current head (done at close)."""
        if not self.writable:
            return
        with self.store.transaction() as c:
            row = c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            if row is not None and row[1] is not None:
                have = c.execute(
                    "SELECT 1 FROM audit_checkpoints WHERE seq=?", (row[0],)
                ).fetchone()
                if have is None:
                    self._checkpoint_in(c, int(row[0]), str(row[1]))

    # ------------------------------------------------------------ search records (batched)
    def queue(self, actor: str | None, action: str, detail: dict[str, Any]) -> None:
        """Queue an identify/verify record; written within :attr:`flush_seconds`.

        Read-only trails write it to their sidecar file at once instead.
        """
        text = json.dumps(detail, sort_keys=True, separators=(",", ":"))
        if not self.writable:
            if self.sidecar is not None:
                self.sidecar.append(time.time(), actor, action, text)
            return
        with self._qlock:
            self._q.append((time.time(), actor, action, None, text))
            if self._thread is None and not self._stop:
                self._thread = threading.Thread(
                    target=self._run, name="pyfacematch-audit", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        """Flush every :attr:`flush_seconds` while records keep coming; exit when idle."""
        while True:
            self._wake.wait(self.flush_seconds)  # gather a batch (close() cuts the wait short)
            with contextlib.suppress(Exception):
                self.flush()
            with self._qlock:
                if self._stop or not self._q:
                    self._thread = None
                    return

    def flush(self) -> int:
        """Write the queued records in one transaction; how many."""
        with self._qlock:
            batch, self._q = self._q, []
        if not batch:
            return 0
        try:
            with self.store.transaction() as c:
                self.append_many_in(c, batch)
        except Exception:
            with self._qlock:
                self._q = batch + self._q
            log.exception("audit records could not be written: kept in memory, retried")
            raise
        return len(batch)

    def close(self) -> None:
        """Stop the writer thread, flush, sign the head (read-only: close the sidecar)."""
        if self.sidecar is not None:
            self.sidecar.close()
        with self._qlock:
            self._stop = True
            t = self._thread
        self._wake.set()
        if t is not None:
            t.join(timeout=10)
        if self.writable:
            with contextlib.suppress(Exception):
                self.flush()
            with contextlib.suppress(Exception):
                self.checkpoint()


def read_records(store: Store) -> list[AuditRecord]:
    """Every audit record, in seq order."""
    with store._lock:
        c = store._conn()
        cols = _columns(c)
        if "hash" not in cols:
            return [
                AuditRecord(int(s), float(t), None, a, i, d, None, None)
                for s, t, a, i, d in c.execute(
                    "SELECT seq, ts, action, identity, detail FROM audit ORDER BY seq"
                )
            ]
        return [
            AuditRecord(int(s), float(t), ac, a, i, d, p, h)
            for s, t, ac, a, i, d, p, h in c.execute(
                "SELECT seq, ts, actor, action, identity, detail, prev, hash FROM audit"
                " ORDER BY seq"
            )
        ]


def _checkpoints(store: Store) -> list[tuple[int, str, str]]:
    with store._lock:
        c = store._conn()
        has = c.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='audit_checkpoints'"
        ).fetchone()[0]
        if not has:
            return []
        return [
            (int(s), str(h), str(m))
            for s, h, m in c.execute("SELECT seq, head, mac FROM audit_checkpoints ORDER BY seq")
        ]


def verify_store(
    store: Store, keys: KeyProvider | None, expect_head: tuple[int, str] | None = None
) -> dict[str, Any]:
    """:func:`~pyfacematch.security.audit.verify_chain` over a store's trail."""
    uid = store.get_meta("uuid")
    key = None if keys is None else keys.key(create=False)
    with store._lock:
        start = _start(store._conn(), uid)
        anchor = _anchor(store._conn())
    if anchor is not None and key is not None:
        want = checkpoint_mac(key, uid + "\0prune-anchor", int(anchor["seq"]), str(anchor["hash"]))
        if not hmac.compare_digest(want, str(anchor.get("mac"))):
            return {
                "ok": False,
                "records": 0,
                "head": None,
                "checkpoints": 0,
                "first_bad": {
                    "seq": int(anchor["seq"]),
                    "reason": "the pruning anchor's HMAC is wrong: records were deleted "
                    "without `audit prune`",
                },
                "warnings": [],
            }
    rep = verify_chain(
        read_records(store),
        _checkpoints(store),
        key=key,
        gallery_id=uid,
        start=start,
        expect_head=expect_head,
    )
    if not chained(store):
        rep["warnings"].append("this gallery's trail was never chained (opened read-only only)")
    return rep


def verify_file(
    path: str | os.PathLike[str], expect_head: tuple[int, str] | None = None
) -> dict[str, Any]:
    """Verify the trail of a gallery file without loading (or decrypting) its templates."""
    store = Store(path)
    try:
        return verify_store(store, audit_key_provider(path), expect_head)
    finally:
        store.close()


def export_file(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Export the trail of a gallery file as JSON Lines (see :func:`export_jsonl`)."""
    store = Store(path)
    try:
        return export_jsonl(store, out)
    finally:
        store.close()


def export_jsonl(store: Store, path: str | os.PathLike[str]) -> int:
    """Write the trail as JSON Lines (one record a line; checkpoints as their own lines)."""
    recs = read_records(store)
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r.as_json(), sort_keys=True) + "\n")
        for s, h, m in _checkpoints(store):
            f.write(json.dumps({"checkpoint": s, "head": h, "hmac": m}, sort_keys=True) + "\n")
    return len(recs)


def prune(store: Store, trail: AuditTrail, before: float) -> int:
    """Delete records older than ``before``; a signed anchor stands for them. How many."""
    with store.transaction() as c:
        row = c.execute(
            "SELECT seq, hash FROM audit WHERE ts < ? ORDER BY seq DESC LIMIT 1", (before,)
        ).fetchone()
        if row is None:
            return 0
        seq, h = int(row[0]), str(row[1])
        n = c.execute("DELETE FROM audit WHERE seq <= ?", (seq,)).rowcount
        c.execute("DELETE FROM audit_checkpoints WHERE seq < ?", (seq,))
        key = trail.keys.key(create=False)
        if key is None:
            raise KeyFileError(
                f"pruning the audit trail needs the audit key ({trail.keys.description})"
            )
        mac = checkpoint_mac(key, trail.uid + "\0prune-anchor", seq, h)
        c.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            (_ANCHOR_KEY, json.dumps({"seq": seq, "hash": h, "mac": mac})),
        )
        trail.append_in(c, "audit-prune", None, f"records={n} through_seq={seq}")
    return int(n)
