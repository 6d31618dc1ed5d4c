"""Encryption at rest: envelope keys and authenticated encryption of records.

Scheme (AES-256-GCM, NIST SP 800-38D; the ``cryptography`` package)
------------------------------------------------------------------
- A random 256-bit **data key** (DEK) encrypts every template row and every
  index checkpoint file. Each record gets a fresh random 96-bit nonce (SP
  800-38D §8.2.2: random nonces are safe below 2^32 encryptions per key; a
  gallery of a few million rows, rotated now and then, stays far below).
- The DEK is stored only **wrapped** (AES-256-GCM again) under a key-encryption
  key derived with HKDF-SHA256 (RFC 5869) from the **master key**, which the
  gallery database never holds: it comes from a key provider (the key file
  ``<db>.key``, the environment variable ``PYFACEMATCH_GALLERY_KEY``, or an
  operator's own provider, see :mod:`pyfacematch.gallery.secret`).
- Every ciphertext is bound by its associated data (AAD) to where it belongs:
  a template row to the gallery uuid, the identity, the template id and the
  key id, so a row copied to another row, identity or gallery fails to
  authenticate; a wrapped key to the gallery uuid and its key id.

Key ring (JSON in the ``meta`` table under :data:`META_KEY`)::

    {"v": 1, "active": "<kid>",
     "wraps": {"<master fingerprint>": {"<kid>": "<hex nonce|ciphertext>", ...}, ...},
     "pending_master": "<fingerprint>" | null}

Several master fingerprints are present only while a master-key rotation is
under way; several key ids only while a data-key rotation re-encrypts rows.
Each row names its key id, so a crash at any step leaves every row readable.

What this does not protect: anyone holding the master key (or the process
memory of an open gallery) reads every template; identity names, metadata,
consent and audit records are not encrypted (they hold no biometric data);
a whole-database rollback to an older copy is not detected by per-row
authentication (the audit trail's anchored head is what detects it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pyfacematch.errors import KeyFileError, TamperedRecordError, WrongKeyError

__all__ = [
    "META_KEY",
    "check_master",
    "row_aad",
    "ROW_MAGIC",
    "KeyRing",
    "master_fingerprint",
]

#: ``meta`` key holding the key ring of an encrypted gallery.
META_KEY = "enc:keys"
#: First bytes of an encrypted template row: magic, then the 8-byte key id.
ROW_MAGIC = b"PFE1"
_BLOB_MAGIC = b"PFB1"
_KID_LEN = 8
_NONCE = 12
_TAG = 16


def _step(name: str) -> None:
    """Crash-injection point (a no-op; tests replace it in a child process to SIGKILL it)."""


def _hkdf(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


def master_fingerprint(master: bytes) -> str:
    """A public fingerprint of a master key (HMAC under an HKDF subkey; reveals nothing)."""
    sub = _hkdf(master, b"pyfacematch master fingerprint v1")
    return hmac.new(sub, b"fingerprint", hashlib.sha256).hexdigest()[:32]


def _kek(master: bytes) -> AESGCM:
    return AESGCM(_hkdf(master, b"pyfacematch key-encryption key v1"))


def _wrap_aad(gallery_id: str, kid: str) -> bytes:
    return b"pyfacematch-dek-v1\0" + gallery_id.encode() + b"\0" + kid.encode()


def row_aad(gallery_id: str, identity: str, tid: int, kid: bytes) -> bytes:
    """Associated data of a template row: binds it to gallery, identity, template id, key."""
    name = identity.encode("utf-8")
    return (
        b"pyfacematch-template-v1\0"
        + gallery_id.encode()
        + b"\0"
        + struct.pack("<Q", len(name))
        + name
        + struct.pack("<q", int(tid))
        + kid
    )


@dataclass
class KeyRing:
    """The unwrapped data keys of one gallery and how they are stored.

    Build with :meth:`create` (new gallery) or :meth:`load` (existing one);
    :meth:`to_json` is what goes to the ``meta`` table.
    """

    gallery_id: str
    active: str
    keys: dict[str, bytes]
    wraps: dict[str, dict[str, str]]
    master_fp: str
    pending_master: str | None = None
    #: Key id under which the cancelable-template secret is kept (wrapped like a data key).
    transform: str | None = None
    _aead: dict[str, AESGCM] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, master: bytes, gallery_id: str) -> KeyRing:
        """A new ring with one random data key wrapped under ``master``."""
        kid = secrets.token_hex(_KID_LEN // 2)
        dek = AESGCM.generate_key(bit_length=256)
        fp = master_fingerprint(master)
        ring = cls(gallery_id, kid, {kid: dek}, {}, fp)
        ring.wraps[fp] = {kid: ring._wrap(master, kid, dek)}
        return ring

    @classmethod
    def load(cls, text: str, master: bytes, gallery_id: str, where: str) -> KeyRing:
        """Unwrap the data keys stored in ``text`` with ``master``.

        Raises
        ------
        WrongKeyError
            ``master`` is not a key this gallery's data key is wrapped under.
        TamperedRecordError
            The key ring is malformed or a wrapped key fails authentication.
        """
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("v") != 1:
                raise ValueError("unknown key-ring version")
            active = str(doc["active"])
            wraps = {
                str(fp): {str(k): str(v) for k, v in d.items()} for fp, d in doc["wraps"].items()
            }
            pending = doc.get("pending_master")
            transform = doc.get("transform")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TamperedRecordError(
                f"the key ring of encrypted gallery {where} is malformed ({exc}): the file was "
                "altered; restore it from a backup"
            ) from exc
        fp = master_fingerprint(master)
        mine = wraps.get(fp)
        if mine is None:
            raise WrongKeyError(
                f"gallery {where} is encrypted under another master key than the one given: "
                "supply the key it was created or last rotated with (key file <db>.key or "
                "PYFACEMATCH_GALLERY_KEY); nothing was changed"
            )
        aead = _kek(master)
        keys: dict[str, bytes] = {}
        for kid, hexblob in mine.items():
            try:
                blob = bytes.fromhex(hexblob)
                keys[kid] = aead.decrypt(blob[:_NONCE], blob[_NONCE:], _wrap_aad(gallery_id, kid))
            except (ValueError, InvalidTag) as exc:
                raise TamperedRecordError(
                    f"the wrapped data key {kid!r} of gallery {where} fails authentication: the "
                    "key ring or the gallery id was altered; restore it from a backup"
                ) from exc
        if active not in keys or (transform is not None and transform not in keys):
            raise TamperedRecordError(
                f"the active data key of gallery {where} is missing from its key ring: the "
                "file was altered; restore it from a backup"
            )
        return cls(
            gallery_id,
            active,
            keys,
            wraps,
            fp,
            None if pending is None else str(pending),
            None if transform is None else str(transform),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "alg": "AES-256-GCM",
                "active": self.active,
                "wraps": self.wraps,
                "pending_master": self.pending_master,
                "transform": self.transform,
            },
            sort_keys=True,
        )

    def _wrap(self, master: bytes, kid: str, dek: bytes) -> str:
        nonce = os.urandom(_NONCE)
        return (nonce + _kek(master).encrypt(nonce, dek, _wrap_aad(self.gallery_id, kid))).hex()

    def _cipher(self, kid: str) -> AESGCM:
        c = self._aead.get(kid)
        if c is None:
            c = self._aead[kid] = AESGCM(self.keys[kid])
        return c

    # ------------------------------------------------------------ rotation steps
    def add_master(self, new_master: bytes) -> str:
        """Wrap every data key also under ``new_master``; mark it pending. Returns its fingerprint."""
        fp = master_fingerprint(new_master)
        self.wraps[fp] = {kid: self._wrap(new_master, kid, k) for kid, k in self.keys.items()}
        self.pending_master = fp
        return fp

    def retire_masters(self, keep_fp: str) -> None:
        """Drop every wrap except the one under ``keep_fp`` (rotation finished or aborted)."""
        self.wraps = {keep_fp: self.wraps[keep_fp]}
        self.pending_master = None
        self.master_fp = keep_fp

    def add_data_key(self, masters: dict[str, bytes]) -> str:
        """A new random data key, wrapped under every master in ``masters``; made active."""
        kid = secrets.token_hex(_KID_LEN // 2)
        dek = AESGCM.generate_key(bit_length=256)
        self.keys[kid] = dek
        for fp, m in masters.items():
            self.wraps.setdefault(fp, {})[kid] = self._wrap(m, kid, dek)
        self.active = kid
        return kid

    def retire_data_keys(self) -> None:
        """Forget every data key but the active one (all rows re-encrypted)."""
        keep = {self.active, self.transform}
        self.keys = {k: v for k, v in self.keys.items() if k in keep}
        self._aead = {}
        for fp in self.wraps:
            self.wraps[fp] = {k: v for k, v in self.wraps[fp].items() if k in keep}

    def set_transform_secret(self, master: bytes, secret: bytes) -> None:
        """Keep ``secret`` (cancelable templates) wrapped under ``master``; drop the old one."""
        old = self.transform
        kid = "x" + secrets.token_hex(4)[:7]
        self.keys[kid] = secret
        for fp in self.wraps:
            if old is not None:
                self.wraps[fp].pop(old, None)
        self.wraps.setdefault(self.master_fp, {})[kid] = self._wrap(master, kid, secret)
        if old is not None:
            self.keys.pop(old, None)
        self.transform = kid

    # ------------------------------------------------------------ template rows
    def seal_row(self, identity: str, tid: int, data: bytes, mask: int | None) -> bytes:
        """Encrypt one template row (float32 bytes + optional int64 mask)."""
        kid = self.active.encode("ascii")
        head = b"\0" if mask is None else b"\1" + struct.pack("<q", int(mask))
        nonce = os.urandom(_NONCE)
        ct = self._cipher(self.active).encrypt(
            nonce, head + data, row_aad(self.gallery_id, identity, tid, kid)
        )
        return ROW_MAGIC + kid + nonce + ct

    def row_kid(self, blob: Any) -> str | None:
        """The key id of an encrypted row, or None when it is not one."""
        if not isinstance(blob, bytes) or len(blob) < 4 + _KID_LEN + _NONCE + _TAG:
            return None
        if blob[:4] != ROW_MAGIC:
            return None
        try:
            return blob[4 : 4 + _KID_LEN].decode("ascii")
        except UnicodeDecodeError:
            return None

    def open_row(self, identity: str, tid: int, blob: Any, where: str) -> tuple[bytes, int | None]:
        """Decrypt one template row; (float32 bytes, mask or None).

        Raises
        ------
        TamperedRecordError
            Not an encrypted row, an unknown key id, or authentication failed
            (a flipped bit, a row moved to another id, identity or gallery).
        """
        kid = self.row_kid(blob)
        if kid is None or kid not in self.keys:
            why = "is not an encrypted row" if kid is None else f"names unknown key {kid!r}"
            raise TamperedRecordError(
                f"template {tid} of identity {identity!r} in encrypted gallery {where} {why}: "
                "the file was altered; restore it from a backup"
            )
        assert isinstance(blob, bytes)
        k = 4 + _KID_LEN
        try:
            pt = self._cipher(kid).decrypt(
                blob[k : k + _NONCE],
                blob[k + _NONCE :],
                row_aad(self.gallery_id, identity, tid, kid.encode("ascii")),
            )
        except InvalidTag as exc:
            raise TamperedRecordError(
                f"template {tid} of identity {identity!r} in encrypted gallery {where} fails "
                "authentication (AES-GCM tag): the row was altered, swapped or replayed from "
                "another row or gallery; restore the gallery from a backup"
            ) from exc
        if pt[:1] == b"\1":
            return pt[9:], struct.unpack("<q", pt[1:9])[0]
        return pt[1:], None

    # ------------------------------------------------------------ other blobs
    def seal_blob(self, data: bytes | memoryview, context: bytes) -> bytes:
        """Encrypt a file's bytes (checkpoints) under the active key, bound to ``context``."""
        kid = self.active.encode("ascii")
        nonce = os.urandom(_NONCE)
        aad = b"pyfacematch-blob-v1\0" + self.gallery_id.encode() + b"\0" + context + kid
        return _BLOB_MAGIC + kid + nonce + self._cipher(self.active).encrypt(nonce, data, aad)

    def open_blob(self, blob: bytes, context: bytes) -> bytes | None:
        """Decrypt :meth:`seal_blob` output; None when it fails (callers rebuild instead)."""
        if blob[:4] != _BLOB_MAGIC or len(blob) < 4 + _KID_LEN + _NONCE + _TAG:
            return None
        try:
            kid = blob[4 : 4 + _KID_LEN].decode("ascii")
        except UnicodeDecodeError:
            return None
        if kid not in self.keys:
            return None
        k = 4 + _KID_LEN
        aad = b"pyfacematch-blob-v1\0" + self.gallery_id.encode() + b"\0" + context + kid.encode()
        try:
            return self._cipher(kid).decrypt(blob[k : k + _NONCE], blob[k + _NONCE :], aad)
        except InvalidTag:
            return None


def check_master(master: bytes | None, where: str, description: str) -> bytes:
    """The master key, or a :class:`~pyfacematch.errors.KeyFileError` saying it is missing."""
    if master is None:
        raise KeyFileError(
            f"gallery {where} is encrypted but no key was found ({description}): supply the "
            "key file or set PYFACEMATCH_GALLERY_KEY; nothing was changed"
        )
    return master
