"""API keys: stored hashed, scoped per gallery, rate limited per key.

The keys file is TOML::

    [[keys]]
    id = "terminal-7"                 # the actor named in logs and the audit trail
    sha256 = "9f86d0…"                # hex SHA-256 of the token (the token itself is never stored)
    scopes = { shop = ["identify", "verify"], "*" = ["enroll"] }   # gallery name or "*"
    rate = 50.0                       # requests per second (token bucket); 0 = unlimited
    burst = 100                       # bucket size
    revoked = false

Tokens are made by :func:`new_api_key` (256 random bits from :mod:`secrets`). Storing their
unsalted SHA-256 is appropriate: NIST SP 800-63B §5.1.2.2 asks that secrets of at least 112 bits
of entropy be "hashed with an approved one-way function" and reserves salted, deliberately slow
key-derivation functions for lower-entropy secrets (passwords), where brute force is the
threat; a 256-bit random token cannot be guessed, and a fast hash keeps the per-request check
cheap. Keys are looked up by their hash, so no comparison of secret bytes happens in Python;
a token already seen is found in a dict of the tokens that matched a key (emptied on reload),
so a client's later requests skip the hash.

The file is re-read when its modification time changes (checked at most every
``reload_interval`` seconds), so a key revoked in the file is refused within that interval
without restarting the service.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyfacematch.errors import InputError
from pyfacematch.serve.problems import HTTPProblem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

__all__ = ["SCOPES", "ApiKey", "KeyStore", "TokenBucket", "hash_token", "new_api_key"]

SCOPES = ("identify", "verify", "enroll", "remove", "admin")


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token (UTF-8)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A new API key: ``(token, sha256_hex)``; give the token to the caller, store the hash."""
    token = "pfm_" + secrets.token_urlsafe(32)  # 32 bytes = 256 bits of entropy
    return token, hash_token(token)


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` stored; thread-safe."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._t = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token; return 0.0 if allowed, else the seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
            self._t = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


@dataclass
class ApiKey:
    """One API key as read from the keys file (its hash, never the token)."""

    id: str
    sha256: str
    scopes: dict[str, frozenset[str]]
    rate: float = 0.0
    burst: float = 0.0
    revoked: bool = False
    bucket: TokenBucket | None = field(default=None, repr=False)

    def allows(self, gallery: str, scope: str) -> bool:
        """Whether the key holds ``scope`` (or ``admin``) on ``gallery`` (or on ``"*"``)."""
        for g in (gallery, "*"):
            s = self.scopes.get(g, frozenset())
            if scope in s or "admin" in s:
                return True
        return False


def _parse_key(d: Any, n: int, where: str) -> ApiKey:
    if not isinstance(d, dict):
        raise InputError(f"{where}: keys[{n}] must be a table")
    kid, h = d.get("id"), d.get("sha256")
    if not isinstance(kid, str) or not kid:
        raise InputError(f'{where}: keys[{n}] needs id = "<name>"')
    if not isinstance(h, str) or len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise InputError(
            f"{where}: key {kid!r} needs sha256 = 64 lower-case hex digits (the SHA-256 of the "
            "token; make one with pyfacematch.serve.new_api_key())"
        )
    raw = d.get("scopes", {})
    if not isinstance(raw, dict):
        raise InputError(f"{where}: key {kid!r}: scopes must be a table gallery -> [scopes]")
    scopes: dict[str, frozenset[str]] = {}
    for g, lst in raw.items():
        if not isinstance(lst, list) or any(s not in SCOPES for s in lst):
            raise InputError(
                f"{where}: key {kid!r}: scopes[{g!r}] must be a list of {', '.join(SCOPES)}"
            )
        scopes[str(g)] = frozenset(lst)
    rate, burst = d.get("rate", 0.0), d.get("burst", None)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0:
        raise InputError(f"{where}: key {kid!r}: rate must be a number >= 0 (requests/s)")
    if burst is None:
        burst = max(1.0, float(rate))
    if isinstance(burst, bool) or not isinstance(burst, (int, float)) or burst < 1:
        raise InputError(f"{where}: key {kid!r}: burst must be a number >= 1")
    revoked = d.get("revoked", False)
    if not isinstance(revoked, bool):
        raise InputError(f"{where}: key {kid!r}: revoked must be true or false")
    return ApiKey(kid, h, scopes, float(rate), float(burst), revoked)


class KeyStore:
    """The API keys of a service, read from a TOML file (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
    reload_interval : float
        Seconds between checks of the file's modification time.

    Raises
    ------
    InputError
        The file is not valid TOML or a key is malformed (the message names it).
    """

    def __init__(self, path: str | os.PathLike[str], reload_interval: float = 0.5) -> None:
        self.path = Path(path)
        self.reload_interval = float(reload_interval)
        self._keys: dict[str, ApiKey] = {}
        #: token -> its key, for tokens seen and known (at most one entry per key: no growth
        #: from unknown tokens); emptied when the file is re-read
        self._seen: dict[str, ApiKey] = {}
        self._mtime = -1.0
        self._checked = 0.0
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        try:
            st = self.path.stat()
            data = tomllib.loads(self.path.read_text("utf-8"))
        except OSError as exc:
            raise InputError(f"cannot read the keys file {os.fspath(self.path)!r}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"keys file {os.fspath(self.path)!r} is not TOML: {exc}") from exc
        lst = data.get("keys", [])
        if not isinstance(lst, list):
            raise InputError(f"{self.path}: 'keys' must be an array of tables ([[keys]])")
        keys: dict[str, ApiKey] = {}
        ids: set[str] = set()
        for n, d in enumerate(lst):
            k = _parse_key(d, n, os.fspath(self.path))
            if k.id in ids:
                raise InputError(f"{self.path}: key id {k.id!r} appears twice")
            ids.add(k.id)
            old = self._keys.get(k.sha256)
            if k.rate > 0:  # keep the bucket's state across reloads when its limits are unchanged
                same = old is not None and old.bucket is not None and old.rate == k.rate
                k.bucket = old.bucket if same and old is not None else TokenBucket(k.rate, k.burst)
            keys[k.sha256] = k
        self._keys = keys
        self._seen = {}
        self._mtime = st.st_mtime

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.reload_interval:
            return
        with self._lock:
            self._checked = now
            try:
                mtime = self.path.stat().st_mtime
            except OSError:
                return  # keep the last good keys; the file may be being replaced
            if mtime != self._mtime:
                try:
                    self._load()
                except InputError:
                    return  # a half-written file: keep the last good keys, retry later

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, token: str | None) -> ApiKey:
        """The key of ``token``; 401 when missing, unknown or revoked."""
        self._maybe_reload()
        hdr = {"WWW-Authenticate": 'Bearer realm="pyfacematch"'}
        if not token:
            raise HTTPProblem(
                401,
                "unauthenticated",
                "API key required",
                "send the key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                hdr,
            )
        key = self._seen.get(token)
        if key is None:
            key = self._keys.get(hash_token(token))
            if key is not None and len(self._seen) < 4 * len(self._keys) + 16:
                self._seen[token] = key
        if key is None:
            raise HTTPProblem(
                401, "unauthenticated", "Unknown API key", "the key is not valid", hdr
            )
        if key.revoked:
            raise HTTPProblem(
                401, "key-revoked", "API key revoked", f"key {key.id!r} has been revoked", hdr
            )
        return key

    @staticmethod
    def authorize(key: ApiKey, gallery: str, scope: str) -> None:
        """403 unless ``key`` holds ``scope`` on ``gallery``; then 429 if over its rate."""
        if not key.allows(gallery, scope):
            raise HTTPProblem(
                403,
                "forbidden",
                "Scope missing",
                f"key {key.id!r} lacks the scope {scope!r} on gallery {gallery!r}",
            )
        if key.bucket is not None:
            wait = key.bucket.take()
            if wait > 0:
                secs = max(1, math.ceil(wait))  # RFC 9110 §10.2.3: delay-seconds, an integer
                raise HTTPProblem(
                    429,
                    "rate-limited",
                    "Too many requests",
                    f"key {key.id!r} is limited to {key.rate:g} requests/s: retry after {secs} s",
                    {"Retry-After": str(secs)},
                )
