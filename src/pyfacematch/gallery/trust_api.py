"""Consent, audit-trail and key-management methods of :class:`~pyfacematch.gallery.Gallery`.

A mixin, so the Gallery class file holds loading, enrollment, search and persistence, and the
issue-13 trust features (purpose-bound consent, the tamper-evident trail, encryption keys,
revocable templates, the leak audit) read in one place. Every method here is a public Gallery
method (or its private helper) and runs on a Gallery instance (``self``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pyfacematch.errors import (
    InputError,
)
from pyfacematch.gallery import audit as audit_store
from pyfacematch.gallery import cancelable as cancel_store
from pyfacematch.gallery import consent as consent_store
from pyfacematch.gallery import encryption
from pyfacematch.gallery.auditsidecar import import_sidecars
from pyfacematch.gallery.secret import KeyProvider
from pyfacematch.gallery.validation import (
    check_id,
    encodable,
)
from pyfacematch.security import envelope
from pyfacematch.security.consent import ConsentRecord, check_purpose

__all__ = ["TrustMethods"]

log = logging.getLogger("pyfacematch.gallery")


def _check_time(t: Any, what: str) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)):
        raise InputError(f"{what} must be seconds since the epoch (a number), got {t!r}")
    if not np.isfinite(t) or t < 0:
        raise InputError(f"{what} must be a finite, non-negative time, got {t!r}")
    return float(t)


def _check_expiry(t: Any) -> float | None:
    return None if t is None else _check_time(t, "consent expiry")


def _check_source(source: Any) -> str:
    if not isinstance(source, str) or not source.strip() or len(source) > 200:
        raise InputError(
            f"a consent source must be a non-empty string of at most 200 characters "
            f"(a form id, an app screen …), got {source!r}"
        )
    encodable(source, "consent source")
    return source


class TrustMethods:
    """Consent, audit and key-management methods mixed into :class:`Gallery`."""

    if TYPE_CHECKING:  # provided by Gallery
        _audit: Any
        _backend: Any
        _check_open: Any
        _check_writable: Any
        _ckpt: Any
        _ckpt_file: Any
        _consent: Any
        _drop_checkpoints: Any
        _keys: Any
        _load: Any
        _m: Any
        _name_to_slot: Any
        _remove: Any
        _ring: Any
        _rw: Any
        _slot_layout: Any
        _slot_names: Any
        _store: Any
        _wmutex: Any
        _acting: Any
        _xf: Any
        _xf_secret: Any
        actor: Any
        checkpoint: Any
        default_purpose: Any
        path: Any
        read_only: Any

    # ------------------------------------------------------------------ consent
    def _purposes(self, purpose: str | Sequence[str] | None) -> list[str]:
        if purpose is None:
            return [] if self.default_purpose is None else [self.default_purpose]
        if isinstance(purpose, str):
            return [check_purpose(purpose)]
        return [check_purpose(p) for p in purpose]

    def _enroll_grants(
        self,
        names: list[str],
        purpose: str | Sequence[str] | None,
        source: str,
        expires: float | None,
    ) -> list[ConsentRecord]:
        purposes = self._purposes(purpose)
        if not purposes:
            return []
        src, exp = _check_source(source), _check_expiry(expires)
        now = time.time()
        return [ConsentRecord(n, p, now, src, exp) for n in names for p in purposes]

    def grant_consent(
        self,
        identity_id: str,
        purpose: str,
        *,
        source: str,
        expires_at: float | None = None,
        granted_at: float | None = None,
    ) -> ConsentRecord:
        """Record (or renew) consent of ``identity_id`` for ``purpose``.

        The identity need not be enrolled yet. New consent lifts an opt-out
        tombstone, so the person can be enrolled again. Audited.

        Parameters
        ----------
        identity_id : str
        purpose : str
            e.g. ``"payment"``, ``"access"``, ``"marketing"``.
        source : str
            Where the consent comes from (form id, app screen, …); required.
        expires_at : float or None
            Seconds since the epoch after which the consent no longer counts.
        granted_at : float or None
            When it was given (default: now).
        """
        self._check_writable("grant_consent")
        rec = ConsentRecord(
            check_id(identity_id),
            check_purpose(purpose),
            time.time() if granted_at is None else _check_time(granted_at, "granted_at"),
            _check_source(source),
            _check_expiry(expires_at),
        )
        with self._wmutex:
            self._check_open()
            consent_store.grant(self._store, rec)
            self._consent.put(rec)
        return rec

    def withdraw_consent(self, identity_id: str, purpose: str | None = None) -> list[str]:
        """Withdraw consent for ``purpose``, or for every purpose (``None``).

        When no purpose is left, this is an opt-out: the identity is erased
        as by :meth:`remove` and a tombstone (a salted hash of the id and the
        time; no biometric data) refuses re-enrollment until new consent is
        granted. Erasure, consent rows and tombstone are one transaction.
        Returns the purposes still consented to (empty after an opt-out).
        """
        self._check_writable("withdraw_consent")
        name = check_id(identity_id)
        p = None if purpose is None else check_purpose(purpose)
        with self._wmutex:
            self._check_open()
            left = [
                r.purpose for r in self.consent_records(name) if p is not None and r.purpose != p
            ]
            if left:
                left = consent_store.withdraw(self._store, name, p)
                self._consent.drop(name, p)
                return left
            if name in self._name_to_slot or self._store.has_identity(name):
                self._remove(name, tombstone=True)
            else:  # consent given before any enrollment: withdrawn, tombstoned
                consent_store.withdraw_all(self._store, name)
                self._consent.drop(name)
            return []

    @contextlib.contextmanager
    def acting_as(self, actor: str | None) -> Iterator[None]:
        """Record the writes made inside the block (enroll, remove, consent, calibrate) under ``actor``.

        The actor is set for the calling thread only (a thread-local, not the shared ``actor``
        attribute), so what other threads do meanwhile — a request of another API key, a
        calibration, an actor-less search, a background erasure — is never recorded under this
        actor, and blocks of different threads run concurrently. Blocks nest; ``None`` keeps the
        current actor. A service passes each request's API key id.
        """
        if actor is None:
            yield
            return
        before = getattr(self._acting, "actor", None)
        self._acting.actor = actor
        try:
            yield
        finally:
            self._acting.actor = before

    def opted_out(self, identity_id: str) -> bool:
        """True when the identity opted out (withdrew every purpose) and has not consented since."""
        return consent_store.opted_out(self._store, check_id(identity_id))

    def consent_records(self, identity_id: str) -> list[ConsentRecord]:
        """Consent records of an identity (expired ones included; see ``active()``)."""
        name = check_id(identity_id)
        return [r for r in consent_store.load_records(self._store, name)]

    def _allowed(self, purpose: str | None) -> np.ndarray | None:
        """bool per identity slot for the request's purpose; None: no filtering."""
        p = self.default_purpose if purpose is None else check_purpose(purpose)
        if p is None:
            return None
        return self._consent.allowed(
            p, self._name_to_slot, len(self._slot_names), self._slot_layout
        )

    # ------------------------------------------------------------------ audit trail
    def audit_flush(self) -> int:
        """Write queued identify/verify audit records now (normally within 0.5 s); how many.

        A writable gallery also chains in the records read-only galleries left in their
        sidecar files (:mod:`.auditsidecar`), counted in the result.
        """
        self._check_open()
        n = self._audit.flush()
        if not self.read_only and self.path is not None:
            with self._wmutex:
                n += import_sidecars(self._store, self._audit, self.path)
        return n

    def audit_checkpoint(self) -> int:
        """Write queued audit records and sign the trail's head now, as :meth:`close` does.

        Idempotent: after it (and :meth:`checkpoint`), closing the gallery changes no byte of
        the file until something new is written, so a file checksum taken here (a shard's in its
        manifest) still holds after close. Returns the records written.
        """
        self._check_open()
        n = self._audit.flush()
        self._audit.checkpoint()
        return n

    def audit_verify(self, expect_head: tuple[int, str] | None = None) -> dict[str, Any]:
        """Check the hash chain and signed checkpoints of the audit trail.

        Returns a report: ``ok``, ``records``, ``head``, ``first_bad`` (the
        first bad record's seq and why), ``warnings``. See
        :mod:`pyfacematch.security.audit` for what it can and cannot detect.
        """
        self._check_open()
        if not self.read_only:
            self._audit.flush()
        return audit_store.verify_store(self._store, self._audit.keys, expect_head)

    def audit_prune(self, before: float) -> int:
        """Delete audit records older than ``before`` (seconds since the epoch).

        A signed anchor (HMAC under the audit key) stands for the pruned
        records, so the rest of the chain stays verifiable. Returns how many
        were deleted; the pruning itself is recorded.
        """
        self._check_writable("audit_prune")
        with self._wmutex:
            self._audit.flush()
            return audit_store.prune(self._store, self._audit, float(before))

    def leak_audit(self, extra: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Any]:
        """Examine every file of this gallery (and ``extra`` job outputs, rejects, logs) for leaks.

        Returns the report (``clean``, ``findings`` …); see
        :mod:`pyfacematch.gallery.leaks`. File galleries only.
        """
        self._check_open()
        if self.path is None:
            raise InputError("leak_audit: an in-memory gallery has no files to examine")
        from pyfacematch.gallery import leaks

        with self._rw.read():
            mat = np.array(self._m.data[: self._m.n], np.float32)
            center = getattr(self._backend, "center", None)
            center = None if center is None else np.array(center, np.float32)
        live = {hash(r.tobytes()) for r in mat}
        return leaks.leak_audit(
            self._store,
            self._ring,
            self._keys,
            live,
            cancelable=self._xf is not None,
            extra=list(extra),
            templates=mat,
            center=center,
        )

    @property
    def encrypted(self) -> bool:
        """Whether templates, masks and index checkpoints are encrypted at rest."""
        return self._ring is not None

    @property
    def cancelable(self) -> bool:
        """Whether templates are stored and searched through a keyed transform."""
        return self._xf is not None

    def revoke_templates(self) -> int:
        """Revocation: re-key the cancelable templates in place under a new secret.

        Every stored template ``x Q_old`` becomes ``x Q_new`` (no photos
        needed) in one transaction with the new secret; the old secret is
        deleted, so templates leaked before cannot be linked to the new ones.
        Searches answer exactly as before (scores to float rounding). Returns
        the number of templates rewritten.
        """
        self._check_writable("revoke_templates")
        if self._xf is None:
            raise InputError(
                "revoke_templates: this gallery's templates are not cancelable; create it "
                "with cancelable=True"
            )
        with self._wmutex:
            self._check_open()
            new, secret, n = cancel_store.revoke(self._store, self._ring, self._keys, self._xf)
            with self._rw.write():
                self._xf = new
                self._xf_secret = secret if self.path is None else None
                self._load()
            self._ckpt_file = None
            self._drop_checkpoints()
            if self.path is not None:
                self._store.wal_checkpoint()
                self.checkpoint()
        return n

    def encrypt_in_place(self, key_provider: KeyProvider | None = None) -> int:
        """Encrypt this unencrypted file gallery at rest, in place; the number of templates.

        One SQLite transaction seals every template row (AES-256-GCM, as a gallery made
        with ``encrypt=True``), moves a cancelable secret into the key ring and seals the
        index parameters derived from templates; then the plaintext checkpoint files are
        deleted, the database is rebuilt (``VACUUM``: no stale plaintext copy survives in
        a free page or the WAL) and the checkpoint is written again, encrypted. A SIGKILL
        at any point leaves a gallery that reopens either fully plaintext (before the
        commit) or fully encrypted (after it; the next writable open finishes the scrub
        and deletes the old files), answering exactly as before.

        Parameters
        ----------
        key_provider : KeyProvider or None
            The master key (default: the gallery's, ``PYFACEMATCH_GALLERY_KEY`` or
            ``<db>.key``). Open the gallery with the same provider afterwards.

        Raises
        ------
        InputError
            In-memory or already encrypted gallery.
        GalleryReadOnlyError
            Opened read-only.
        """
        self._check_writable("encrypt_in_place")
        if self.path is None:
            raise InputError("encrypt_in_place: an in-memory gallery has nothing at rest")
        if self._ring is not None:
            raise InputError(
                f"encrypt_in_place: gallery {os.fspath(self.path)!r} is already encrypted"
            )
        keys = key_provider or self._keys
        with self._wmutex:
            self._check_open()
            self._audit.flush()  # queued search records land in the trail first
            ring, n = encryption.encrypt_in_place(self._store, keys)
            self._keys = keys
            self._ckpt.keys = keys
            with self._rw.write():
                self._ring = ring
                self._load()  # reads the sealed rows back: they all open
            self._drop_checkpoints()  # the old files hold plaintext templates
            envelope._step("encrypt:dropped")
            self._store.scrub_erased()  # VACUUM + WAL truncation (flag set in the commit)
            envelope._step("encrypt:scrubbed")
            self.checkpoint()
        log.info("gallery %s encrypted in place (%d templates)", os.fspath(self.path), n)
        return n

    def _check_encrypted(self, what: str) -> encryption.KeyRing:
        self._check_writable(what)
        if self._ring is None or self._keys is None:
            raise InputError(
                f"{what}: gallery {os.fspath(self.path or ':memory:')!r} is not encrypted "
                "at rest; create it with encrypt=True"
            )
        return self._ring

    def rotate_master_key(self, new_key_provider: KeyProvider | None = None) -> None:
        """Rewrap the data key under a new master key (templates are not rewritten).

        Parameters
        ----------
        new_key_provider : KeyProvider or None
            Supplies the new master key. None: the gallery's key file is
            replaced by a new random key (atomically). With another provider
            (e.g. a key service) switch the gallery to it before the next open.

        A crash at any step leaves the gallery openable with the old or the
        new key (the next writable open finishes or rolls back the rotation).
        Index checkpoints are re-authenticated under the new key.
        """
        ring = self._check_encrypted("rotate_master_key")
        with self._wmutex:
            assert self._keys is not None
            self._keys = encryption.rotate_master(self._store, ring, self._keys, new_key_provider)
            self._ckpt.keys = self._keys
            self._ckpt_file = None
            self._drop_checkpoints()
            self.checkpoint()

    def rotate_data_key(self) -> int:
        """Re-encrypt every template row and checkpoint under a new random data key.

        Rows move in batches, each batch one transaction; both keys stay in
        the key ring until every row has moved, so a crash at any point leaves
        a gallery that opens and answers exactly as before (the next writable
        open finishes the rotation). Returns the number of rows re-encrypted.
        """
        ring = self._check_encrypted("rotate_data_key")
        with self._wmutex:
            assert self._keys is not None
            n = encryption.rotate_data(self._store, ring, self._keys)
            self._ckpt_file = None
            self._drop_checkpoints()
            self.checkpoint()
        return n
