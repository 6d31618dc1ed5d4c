"""Encryption at rest of a gallery's store: opening the key ring and rotating keys.

The cryptography is :mod:`pyfacematch.security.envelope`; this module ties it
to the store and the key providers of :mod:`.secret`:

- :func:`open_ring` reads the key ring at open (or makes one for a new
  encrypted gallery) and finishes or rolls back a master-key rotation that a
  crash interrupted, and finishes an interrupted data-key rotation;
- :func:`rotate_master` rewraps the data key under a new master key;
- :func:`rotate_data` re-encrypts every template row under a new data key;
- :func:`encrypt_in_place` encrypts an existing plaintext gallery (one transaction);
- :func:`seal_params` / :func:`open_params` keep derived index parameters that are
  computed from the templates (the binary backend's centre: the mean template) sealed
  like the rows when the gallery is encrypted.

Crash safety: every step is one SQLite transaction, and every key a row or a
wrapped key needs stays in the key ring until the step that made it
unnecessary has committed, so a SIGKILL at any point leaves a gallery that
opens with the old or the new master key and holds the same templates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from pyfacematch.errors import InputError, KeyFileError
from pyfacematch.gallery.cancelable import META_CANCELABLE, unwrap_meta_secret
from pyfacematch.gallery.derived import parse_params
from pyfacematch.gallery.erasure import SCRUB_PENDING_KEY
from pyfacematch.gallery.secret import FileKeyProvider, KeyProvider
from pyfacematch.gallery.store import Store
from pyfacematch.security import envelope
from pyfacematch.security.envelope import META_KEY, KeyRing, check_master

__all__ = [
    "checkpoint_context",
    "encrypt_in_place",
    "KeyRing",
    "open_params",
    "open_ring",
    "rotate_data",
    "rotate_master",
    "seal_params",
    "warn_unencrypted",
]

log = logging.getLogger("pyfacematch.gallery")
_warned: set[str] = set()
_BATCH = 512


def checkpoint_context(backend: str, generation: int) -> bytes:
    """What an encrypted checkpoint file is bound to (associated data)."""
    return f"checkpoint:{backend}:{int(generation)}".encode()


def warn_unencrypted(where: str) -> None:
    """Log once per process and file that a gallery is not encrypted at rest."""
    if where in _warned:
        return
    _warned.add(where)
    log.warning(
        "gallery %s is not encrypted at rest: anyone who can read the file reads every "
        "template; create galleries with encrypt=True (CLI: --encrypt)",
        where,
    )


def open_ring(
    store: Store,
    keys: KeyProvider,
    *,
    encrypt: bool | None,
    new_file: bool,
    writable: bool,
) -> KeyRing | None:
    """The key ring of the gallery (None when it is not encrypted), installed on ``store``.

    Raises
    ------
    KeyFileError
        The gallery is encrypted and no key is available (nothing is created).
    WrongKeyError
        The key is not the one the gallery is encrypted under.
    TamperedRecordError
        The key ring was altered.
    InputError
        ``encrypt=True`` for an existing unencrypted gallery holding templates,
        or ``encrypt=False`` for an encrypted one.
    """
    where = repr(os.fspath(store.path or ":memory:"))
    text = store.get_meta_opt(META_KEY)
    if text is None:
        if encrypt and not new_file and store.counts()[1] > 0:
            raise InputError(
                f"gallery {where} holds unencrypted templates: open it without encrypt=True "
                "and call encrypt_in_place() (CLI: `pyfacematch encrypt -g GALLERY`), which "
                "encrypts its rows and checkpoints and scrubs the plaintext"
            )
        if not encrypt:
            warn_unencrypted(where)
            return None
        master = keys.key(create=True)
        uid = store.get_meta("uuid")
        ring = KeyRing.create(check_master(master, where, keys.description), uid)
        store.set_meta(META_KEY, ring.to_json())
        store.cipher = ring
        return ring
    if encrypt is False:
        raise InputError(
            f"gallery {where} is encrypted at rest; open it without encrypt=False "
            "(it cannot be decrypted in place)"
        )
    master = check_master(keys.key(create=False), where, keys.description)
    ring = KeyRing.load(text, master, store.get_meta("uuid"), where)
    store.cipher = ring
    if writable and ring.pending_master is not None:
        finished = ring.master_fp == ring.pending_master
        ring.retire_masters(ring.master_fp)
        store.set_meta(META_KEY, ring.to_json())
        log.warning(
            "gallery %s: an interrupted master-key rotation was %s",
            where,
            "finished (the new key is in use)" if finished else "rolled back (old key in use)",
        )
    if writable and len([k for k in ring.keys if k != ring.transform]) > 1:
        log.warning("gallery %s: finishing an interrupted data-key rotation", where)
        _reencrypt(store, ring, master)
    return ring


def _write_key_file(path: Path, raw: bytes) -> None:
    """Replace a key file atomically (0600, fsync-ed, folder fsync-ed)."""
    tmp = path.with_name(path.name + f".new-{os.getpid()}")
    fd = os.open(os.fspath(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, raw + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(os.fspath(path.parent), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def rotate_master(
    store: Store, ring: KeyRing, keys: KeyProvider, new_keys: KeyProvider | None
) -> KeyProvider:
    """Rewrap the data key under a new master key; return the provider now in use.

    With ``new_keys=None`` the current provider must be a key file: a new
    random key replaces it (atomically). Otherwise ``new_keys`` supplies the
    new key and the operator switches the gallery's key source to it (e.g.
    the environment variable) before the next open.
    """
    where = repr(os.fspath(store.path or ":memory:"))
    if new_keys is None:
        if not isinstance(keys, FileKeyProvider):
            raise InputError(
                f"the master key of gallery {where} comes from {keys.description}: pass the "
                "new key's provider (new_key_provider=...) and switch to it after the rotation"
            )
        new_raw = secrets.token_hex(32).encode("ascii")
    else:
        got = new_keys.key(create=True)
        if got is None:
            raise KeyFileError(f"no new master key from {new_keys.description}")
        new_raw = got
    new_fp = ring.add_master(new_raw)
    if new_fp == ring.master_fp:
        ring.pending_master = None
        raise InputError("the new master key is the current one: nothing to rotate")
    with store.transaction() as c:  # 1: the data key is wrapped under both masters
        c.execute("UPDATE meta SET value=? WHERE key=?", (ring.to_json(), META_KEY))
    envelope._step("master:wrapped")
    if new_keys is None:
        assert isinstance(keys, FileKeyProvider)
        _write_key_file(keys.path, new_raw)  # 2: the key file now holds the new master
        envelope._step("master:keyfile")
        new_keys = keys
    ring.retire_masters(new_fp)
    with store.transaction() as c:  # 3: the old master unwraps nothing any more
        c.execute("UPDATE meta SET value=? WHERE key=?", (ring.to_json(), META_KEY))
        store._audit(c, "rotate-master-key", None, f"fingerprint={new_fp[:12]}")
    envelope._step("master:retired")
    store.wal_checkpoint()  # no page image of the old key ring stays in the WAL
    return new_keys


def rotate_data(store: Store, ring: KeyRing, keys: KeyProvider) -> int:
    """Re-encrypt every template row under a new data key; return how many rows."""
    where = repr(os.fspath(store.path or ":memory:"))
    master = check_master(keys.key(create=False), where, keys.description)
    ring.add_data_key({ring.master_fp: master})
    with store.transaction() as c:  # 1: new key active, old ones kept for unmoved rows
        c.execute("UPDATE meta SET value=? WHERE key=?", (ring.to_json(), META_KEY))
    envelope._step("data:added")
    return _reencrypt(store, ring, master)


def _reencrypt(store: Store, ring: KeyRing, master: bytes) -> int:
    where = repr(os.fspath(store.path or ":memory:"))
    active = ring.active.encode("ascii")
    done = 0
    while True:
        with store.transaction() as c:  # 2: one batch of rows moves to the new key
            rows = c.execute(
                "SELECT t.tid, i.name, t.data FROM templates t JOIN identities i"
                " ON i.id = t.identity WHERE substr(t.data, 5, 8) != ? LIMIT ?",
                (active, _BATCH),
            ).fetchall()
            for tid, name, blob in rows:
                data, mask = ring.open_row(str(name), int(tid), blob, where)
                c.execute(
                    "UPDATE templates SET data=? WHERE tid=?",
                    (ring.seal_row(str(name), int(tid), data, mask), tid),
                )
        done += len(rows)
        if not rows:
            break
        envelope._step("data:batch")
    with store.transaction() as c:  # sealed index parameters move to the new key too
        _reseal_meta_params(c, ring)
    ring.retire_data_keys()
    with store.transaction() as c:  # 3: the old data keys are gone
        c.execute("UPDATE meta SET value=? WHERE key=?", (ring.to_json(), META_KEY))
        store._audit(c, "rotate-data-key", None, f"rows={done}")
    envelope._step("data:retired")
    with contextlib.suppress(Exception):
        store.wal_checkpoint()  # old ciphertexts leave the WAL (secure_delete zeroes pages)
    return done


# --------------------------------------------------------------------------- derived parameters
_SEALED = "center_sealed"


def _params_context(context: str) -> bytes:
    return b"params:" + context.encode()


def seal_params(ring: KeyRing | None, context: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with its ``center`` (a mean of templates) sealed when the gallery is encrypted.

    The centre is the mean of the gallery's templates: biometric-derived data that an
    encrypted gallery must not keep in clear (ISO/IEC 24745 confidentiality of references).
    ``context`` binds it to where it is stored (e.g. the meta key), so it cannot be moved.
    """
    if ring is None or params.get("center") is None:
        return params
    out = {k: v for k, v in params.items() if k != "center"}
    raw = json.dumps(params["center"], separators=(",", ":")).encode()
    out[_SEALED] = ring.seal_blob(raw, _params_context(context)).hex()
    return out


def open_params(
    ring: KeyRing | None, context: str, params: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The inverse of :func:`seal_params`; None when a sealed centre cannot be opened."""
    if params is None or _SEALED not in params:
        return params
    if ring is None:
        log.warning("sealed index parameters %s in an unencrypted gallery: re-tuned", context)
        return None
    try:
        plain = ring.open_blob(bytes.fromhex(str(params[_SEALED])), _params_context(context))
    except ValueError:
        plain = None
    if plain is None:
        log.warning("sealed index parameters %s cannot be opened: re-tuned", context)
        return None
    out = {k: v for k, v in params.items() if k != _SEALED}
    out["center"] = json.loads(plain)
    checked, why = parse_params(json.dumps(out), len(out["center"]))
    if why is not None:
        log.warning("sealed index parameters %s not used (%s): re-tuned", context, why)
    return checked


def _reseal_meta_params(c: Any, ring: KeyRing) -> None:
    """Seal (again, under the active data key) every stored tuning parameter set."""
    rows = c.execute("SELECT key, value FROM meta WHERE key LIKE 'tuning:%'").fetchall()
    for key, value in rows:
        try:
            params = json.loads(value)
        except (TypeError, ValueError):
            continue  # malformed: get_params ignores it and the gallery re-tunes
        if not isinstance(params, dict):
            continue
        params = open_params(ring, str(key), params)
        if params is None:
            c.execute("DELETE FROM meta WHERE key=?", (key,))  # re-tuned at the next load
            continue
        sealed = seal_params(ring, str(key), params)
        c.execute("UPDATE meta SET value=? WHERE key=?", (json.dumps(sealed, sort_keys=True), key))


def encrypt_in_place(store: Store, keys: KeyProvider) -> tuple[KeyRing, int]:
    """Encrypt the rows of an unencrypted gallery in **one** transaction; the ring and row count.

    In the same transaction: every template row is sealed (AES-256-GCM, bound to gallery,
    identity and template id; the mask moves inside the ciphertext), the cancelable-template
    secret moves into the key ring, sealed index parameters replace clear ones, every
    checkpoint record is forgotten (their files hold plaintext: the caller deletes them), the
    key ring is stored, a scrub is flagged owed (``VACUUM``: SQLite keeps stale copies of
    rewritten rows in free page space, see :mod:`.erasure`) and the change is audited. A crash
    before the commit leaves the plaintext gallery exactly as it was; after it, an encrypted
    gallery whose next writable open finishes the scrub and deletes the old checkpoint files.

    Raises
    ------
    InputError
        The gallery is already encrypted.
    KeyFileError
        No master key can be had from ``keys``.
    """
    where = repr(os.fspath(store.path or ":memory:"))
    if store.get_meta_opt(META_KEY) is not None:
        raise InputError(f"gallery {where} is already encrypted at rest: nothing to do")
    master = check_master(keys.key(create=True), where, keys.description)
    ring = KeyRing.create(master, store.get_meta("uuid"))
    n = 0
    with store.transaction() as c:
        last = -1
        while True:
            rows = c.execute(
                "SELECT t.tid, i.name, t.data, t.mask FROM templates t JOIN identities i"
                " ON i.id = t.identity WHERE t.tid > ? ORDER BY t.tid LIMIT ?",
                (last, _BATCH),
            ).fetchall()
            if not rows:
                break
            for tid, name, data, mask in rows:
                raw = bytes(data) if isinstance(data, (bytes, memoryview)) else b""
                m = mask if isinstance(mask, int) and not isinstance(mask, bool) else None
                blob = ring.seal_row(str(name), int(tid), raw, m)
                c.execute("UPDATE templates SET data=?, mask=NULL WHERE tid=?", (blob, tid))
            n += len(rows)
            last = int(rows[-1][0])
            envelope._step("encrypt:batch")
        row = c.execute("SELECT value FROM meta WHERE key=?", (META_CANCELABLE,)).fetchone()
        if row is not None:
            secret = unwrap_meta_secret(store, str(row[0]), master)
            if secret is not None:  # the secret moves into the ring (wrapped by the master)
                ring.set_transform_secret(master, secret)
                c.execute(
                    "UPDATE meta SET value=? WHERE key=?",
                    (json.dumps({"v": 1, "in": "key-ring"}), META_CANCELABLE),
                )
        _reseal_meta_params(c, ring)
        c.execute("DELETE FROM checkpoints")
        c.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (META_KEY, ring.to_json())
        )
        c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, '1')", (SCRUB_PENDING_KEY,))
        store._audit(c, "encrypt-in-place", None, f"templates={n}")
        store._bump(c)
        envelope._step("encrypt:before-commit")
    store.cipher = ring
    envelope._step("encrypt:committed")
    return ring, n
