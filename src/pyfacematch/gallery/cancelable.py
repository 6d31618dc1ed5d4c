"""Cancelable templates in a gallery's store: keeping the secret, revoking in place.

The transform is :mod:`pyfacematch.security.cancelable`. Its 256-bit secret is
kept wrapped: in the key ring of an encrypted gallery (wrapped under the
master key like the data key, so key rotations carry it along), otherwise
under a key derived (HKDF-SHA256) from the gallery's master key (``<db>.key`` or
``PYFACEMATCH_GALLERY_KEY``). An in-memory gallery keeps it in memory only.

Revocation (:func:`revoke`) draws a new secret and rewrites every stored
template ``x Q_old`` as ``x Q_new`` in **one** SQLite transaction together
with the new secret, so a crash leaves either the old templates and secret or
the new ones; the old secret is then gone (``secure_delete`` zeroes its page,
the WAL is truncated).
"""

from __future__ import annotations

import json
import os
import secrets

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pyfacematch.errors import InputError, KeyFileError, TamperedRecordError
from pyfacematch.gallery.secret import KeyProvider
from pyfacematch.gallery.store import Store
from pyfacematch.security.cancelable import CancelableTransform
from pyfacematch.security.envelope import META_KEY, KeyRing

__all__ = ["META_CANCELABLE", "open_transform", "revoke", "unwrap_meta_secret"]

#: ``meta`` key recording that templates are transformed (and, unencrypted, the wrapped secret).
META_CANCELABLE = "cancelable"
_CHUNK = 4096


def _kek(master: bytes) -> AESGCM:
    h = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"pyfacematch cancelable v1")
    return AESGCM(h.derive(master))


def _aad(uid: str) -> bytes:
    return b"pyfacematch-cancelable-secret-v1\0" + uid.encode()


def _master(keys: KeyProvider | None, where: str) -> bytes:
    m = None if keys is None else keys.key(create=True)
    if m is None:
        raise KeyFileError(f"gallery {where} has cancelable templates but no key was found")
    return m


def _record(store: Store, ring: KeyRing | None, keys: KeyProvider | None, secret: bytes) -> str:
    """The meta value for ``secret`` (and, encrypted, the ring updated in place)."""
    where = repr(os.fspath(store.path or ":memory:"))
    if store.path is None:
        return json.dumps({"v": 1, "in": "memory"})
    if ring is not None:
        ring.set_transform_secret(_master(keys, where), secret)
        return json.dumps({"v": 1, "in": "key-ring"})
    nonce = os.urandom(12)
    ct = _kek(_master(keys, where)).encrypt(nonce, secret, _aad(store.get_meta("uuid")))
    return json.dumps({"v": 1, "in": "meta", "wrapped": (nonce + ct).hex()})


def unwrap_meta_secret(store: Store, text: str, master: bytes) -> bytes | None:
    """The secret recorded in ``meta`` (unencrypted galleries); None when kept elsewhere.

    Raises
    ------
    TamperedRecordError
        The wrapped secret does not open under ``master``.
    """
    where = repr(os.fspath(store.path or ":memory:"))
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("in") != "meta":
        return None
    try:
        blob = bytes.fromhex(str(doc["wrapped"]))
        return _kek(master).decrypt(blob[:12], blob[12:], _aad(store.get_meta("uuid")))
    except (KeyError, ValueError, InvalidTag) as exc:
        raise TamperedRecordError(
            f"the cancelable-template secret of gallery {where} cannot be unwrapped: "
            "another key, or the file was altered"
        ) from exc


def open_transform(
    store: Store,
    ring: KeyRing | None,
    keys: KeyProvider | None,
    *,
    cancelable: bool | None,
    new_file: bool,
    writable: bool,
    memory_secret: bytes | None = None,
) -> tuple[CancelableTransform | None, bytes | None]:
    """The gallery's transform (None when templates are not cancelable) and, in memory, its secret."""
    where = repr(os.fspath(store.path or ":memory:"))
    text = store.get_meta_opt(META_CANCELABLE)
    if text is None:
        if not cancelable:
            return None, None
        if not new_file and store.counts()[1] > 0:
            raise InputError(
                f"gallery {where} holds templates that are not cancelable: this is chosen "
                "when a gallery is created; enroll into a new gallery made with cancelable=True"
            )
        if not writable:
            raise InputError(f"gallery {where} is read-only: cannot make its templates cancelable")
        secret = secrets.token_bytes(32)
        value = _record(store, ring, keys, secret)
        with store.transaction() as c:
            if ring is not None:
                c.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                    (META_KEY, ring.to_json()),
                )
            c.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (META_CANCELABLE, value)
            )
        return CancelableTransform(secret, store.dim, store.blocks), (
            secret if store.path is None else None
        )
    if cancelable is False:
        raise InputError(
            f"gallery {where} has cancelable templates; open it without cancelable=False"
        )
    doc = json.loads(text)
    if doc.get("in") == "memory":
        if memory_secret is None:  # pragma: no cover - in-memory stores are never reopened
            raise KeyFileError("the in-memory cancelable secret is gone")
        secret = memory_secret
    elif doc.get("in") == "key-ring":
        if ring is None or ring.transform is None:
            raise TamperedRecordError(
                f"gallery {where} records cancelable templates whose secret is not in its key "
                "ring: the file was altered; restore it from a backup"
            )
        secret = ring.keys[ring.transform]
    else:
        got = unwrap_meta_secret(store, text, _master(keys, where))
        if got is None:
            raise TamperedRecordError(
                f"gallery {where} records cancelable templates without their secret: the "
                "file was altered; restore it from a backup"
            )
        secret = got
    return CancelableTransform(secret, store.dim, store.blocks), (
        secret if store.path is None else None
    )


def revoke(
    store: Store,
    ring: KeyRing | None,
    keys: KeyProvider | None,
    old: CancelableTransform,
) -> tuple[CancelableTransform, bytes, int]:
    """Re-key every stored template under a new secret, in one transaction.

    Returns the new transform, its secret and how many rows were rewritten.
    """
    where = repr(os.fspath(store.path or ":memory:"))
    secret = secrets.token_bytes(32)
    new = CancelableTransform(secret, store.dim, store.blocks)
    r = old.change_to(new)
    saved = None if ring is None else ring.to_json()
    n = 0
    try:
        value = _record(store, ring, keys, secret)
        with store.transaction() as c:
            last = -1
            while True:
                rows = c.execute(
                    "SELECT t.tid, i.name, t.data, t.mask FROM templates t JOIN identities i"
                    " ON i.id = t.identity WHERE t.tid > ? ORDER BY t.tid LIMIT ?",
                    (last, _CHUNK),
                ).fetchall()
                if not rows:
                    break
                rows = store.decrypt_rows(rows, where)
                x = np.frombuffer(b"".join(b[2] for b in rows), np.float32).reshape(-1, store.dim)
                y = x.astype(np.float64) @ r
                y /= np.linalg.norm(y, axis=1, keepdims=True)
                y32 = y.astype(np.float32)
                for (tid, name, _, mask), v in zip(rows, y32):
                    if ring is None:
                        c.execute("UPDATE templates SET data=? WHERE tid=?", (v.tobytes(), tid))
                    else:
                        blob = ring.seal_row(str(name), int(tid), v.tobytes(), mask)
                        c.execute("UPDATE templates SET data=? WHERE tid=?", (blob, tid))
                n += len(rows)
                last = int(rows[-1][0])
            if ring is not None:
                c.execute("UPDATE meta SET value=? WHERE key=?", (ring.to_json(), META_KEY))
            c.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (META_CANCELABLE, value)
            )
            store._audit(c, "revoke-templates", None, f"templates={n} transform={new.fingerprint}")
    except BaseException:
        if ring is not None and saved is not None:  # nothing committed: the ring as it was
            back = KeyRing.load(saved, _master(keys, where), ring.gallery_id, where)
            ring.keys, ring.wraps, ring.transform = back.keys, back.wraps, back.transform
            ring._aead = {}
        raise
    return new, secret, n
