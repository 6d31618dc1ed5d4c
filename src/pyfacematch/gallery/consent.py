"""Consent per purpose and opt-out tombstones in a gallery's store (SQL side).

The rules and the in-memory view are :mod:`pyfacematch.security.consent`;
this module keeps the records in two tables of the gallery database, created
when a writable gallery opens (older files gain them then):

- ``consent(identity, purpose, granted_at, source, expires_at)``, one row per
  identity and purpose, keyed by the external id (consent may be recorded
  before enrollment); withdrawn rows are deleted (the audit log keeps the
  history, without biometric data);
- ``tombstones(hash, at)``: HMAC-SHA256 of the id under ``meta.consent_salt``.
"""

from __future__ import annotations

import secrets
import sqlite3
import time

from pyfacematch.errors import ConsentError
from pyfacematch.gallery.store import Store
from pyfacematch.security.consent import ConsentRecord, tombstone_hash

__all__ = [
    "DEFAULT_PURPOSE_KEY",
    "ensure_tables",
    "grant",
    "load_records",
    "load_tombstones",
    "opted_out",
    "put_tombstones",
    "refuse_tombstoned",
    "erase_in",
    "put_in",
    "withdraw",
    "withdraw_all",
]

#: ``meta`` key of the purpose identify/verify use when the caller names none.
DEFAULT_PURPOSE_KEY = "default_purpose"
_SALT_KEY = "consent_salt"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS consent (identity TEXT NOT NULL, purpose TEXT NOT NULL,"
    " granted_at REAL NOT NULL, source TEXT NOT NULL, expires_at REAL,"
    " PRIMARY KEY (identity, purpose))",
    "CREATE TABLE IF NOT EXISTS tombstones (hash TEXT PRIMARY KEY, at REAL NOT NULL)",
)


def _has_tables(c: sqlite3.Connection) -> bool:
    return (
        c.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
            "('consent', 'tombstones')"
        ).fetchone()[0]
        == 2
    )


def ensure_tables(store: Store) -> None:
    """Create the consent tables and the tombstone salt if missing (writable galleries)."""
    with store.transaction() as c:
        for stmt in _SCHEMA:
            c.execute(stmt)
        c.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
            (_SALT_KEY, secrets.token_hex(32)),
        )


def load_records(store: Store, identity: str | None = None) -> list[ConsentRecord]:
    """Every consent record, or those of one identity (none when the tables do not exist)."""
    sql = "SELECT identity, purpose, granted_at, source, expires_at FROM consent"
    with store._lock:
        c = store._conn()
        if not _has_tables(c):
            return []
        if identity is None:
            rows = c.execute(sql).fetchall()
        else:
            rows = c.execute(sql + " WHERE identity=? ORDER BY purpose", (identity,)).fetchall()
    return [ConsentRecord(str(a), str(b), float(t), str(s), e) for a, b, t, s, e in rows]


def load_tombstones(store: Store) -> tuple[str | None, list[tuple[str, float]]]:
    """The tombstones' salt (hex; None before the tables exist) and every (hash, time)."""
    with store._lock:
        c = store._conn()
        if not _has_tables(c):
            return None, []
        row = c.execute("SELECT value FROM meta WHERE key=?", (_SALT_KEY,)).fetchone()
        tombs = [(str(h), float(t)) for h, t in c.execute("SELECT hash, at FROM tombstones")]
    return (None if row is None else str(row[0])), tombs


def put_tombstones(c: sqlite3.Connection, salt: str, tombstones: list[tuple[str, float]]) -> None:
    """Inside a transaction (tables created): take ``salt`` as this store's tombstone key and
    record ``tombstones`` made under it (copying opt-outs between a gallery and its shards)."""
    c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (_SALT_KEY, salt))
    c.executemany("INSERT OR REPLACE INTO tombstones(hash, at) VALUES (?, ?)", tombstones)


def _salt(c: sqlite3.Connection) -> bytes:
    row = c.execute("SELECT value FROM meta WHERE key=?", (_SALT_KEY,)).fetchone()
    return bytes.fromhex(str(row[0]))


def opted_out(store: Store, identity: str) -> bool:
    """True when ``identity`` opted out (a tombstone) and has not consented again since."""
    with store._lock:
        c = store._conn()
        if not _has_tables(c):
            return False
        h = tombstone_hash(_salt(c), identity)
        return c.execute("SELECT 1 FROM tombstones WHERE hash=?", (h,)).fetchone() is not None


def refuse_tombstoned(c: sqlite3.Connection, names: list[str]) -> None:
    """Inside an enroll transaction: refuse ids that opted out and have no new consent."""
    if not _has_tables(c):
        return
    if c.execute("SELECT 1 FROM tombstones LIMIT 1").fetchone() is None:
        return  # nobody opted out: nothing to hash or look up (a bulk enroll's usual case)
    salt = _salt(c)
    hashes = {tombstone_hash(salt, name): name for name in names}
    hs = list(hashes)
    for k in range(0, len(hs), 500):  # one query per 500 names, not one per name
        part = hs[k : k + 500]
        row = c.execute(
            f"SELECT at, hash FROM tombstones WHERE hash IN ({','.join('?' * len(part))})"
            " ORDER BY at LIMIT 1",
            part,
        ).fetchone()
        if row is not None:
            name = hashes[str(row[1])]
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(row[0])))
            raise ConsentError(
                f"identity {name!r} withdrew consent for every purpose on {when} and was "
                "erased: record new consent first (gallery.grant_consent(id, purpose, "
                "source=...) or `pyfacematch consent grant`), then enroll"
            )


def put_in(c: sqlite3.Connection, rec: ConsentRecord) -> None:
    """Inside a transaction: record (or replace) one consent record."""
    c.execute(
        "INSERT OR REPLACE INTO consent(identity, purpose, granted_at, source, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (rec.identity, rec.purpose, rec.granted_at, rec.source, rec.expires_at),
    )


def grant(store: Store, rec: ConsentRecord) -> None:
    """Record (or renew) consent; new consent lifts an opt-out tombstone."""
    with store.transaction() as c:
        put_in(c, rec)
        gone = c.execute(
            "DELETE FROM tombstones WHERE hash=?", (tombstone_hash(_salt(c), rec.identity),)
        ).rowcount
        exp = "never" if rec.expires_at is None else f"{rec.expires_at:.0f}"
        store._audit(
            c,
            "consent-grant",
            rec.identity,
            f"purpose={rec.purpose} source={rec.source} expires={exp}"
            + (" tombstone-lifted" if gone else ""),
        )


def withdraw(store: Store, identity: str, purpose: str | None) -> list[str]:
    """Delete consent for ``purpose`` (None: every purpose); return the purposes left."""
    with store.transaction() as c:
        if purpose is None:
            c.execute("DELETE FROM consent WHERE identity=?", (identity,))
        else:
            c.execute("DELETE FROM consent WHERE identity=? AND purpose=?", (identity, purpose))
        store._audit(c, "consent-withdraw", identity, f"purpose={purpose or '*'}")
        return [
            r[0]
            for r in c.execute(
                "SELECT purpose FROM consent WHERE identity=? ORDER BY purpose", (identity,)
            )
        ]


def erase_in(c: sqlite3.Connection, identity: str, *, tombstone: bool) -> None:
    """Inside the erasure transaction: consent rows gone, and a tombstone when asked."""
    if not _has_tables(c):
        return
    c.execute("DELETE FROM consent WHERE identity=?", (identity,))
    if tombstone:
        c.execute(
            "INSERT OR REPLACE INTO tombstones(hash, at) VALUES (?, ?)",
            (tombstone_hash(_salt(c), identity), time.time()),
        )


def withdraw_all(store: Store, identity: str) -> None:
    """Opt-out of an id that is not enrolled: consent rows gone, tombstone written."""
    with store.transaction() as c:
        erase_in(c, identity, tombstone=True)
        store._audit(c, "consent-withdraw", identity, "purpose=* tombstone")
