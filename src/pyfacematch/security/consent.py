"""Consent per purpose: records, the in-memory view searches filter with, tombstones.

GDPR art. 5(1)(b) (purpose limitation), art. 7(3) (withdrawal as easy as
giving) and art. 17 (erasure); BIPA §15(b) (written consent) and §15(a)
(retention schedule: ``expires_at``). Each identity holds one record per
purpose: when it was granted, by what source (a consent form id, an app
screen …) and an optional expiry. A search for a purpose considers only
identities whose record for it exists and has not expired *at the time of
the search*; the filter is applied inside the search (see
:meth:`ConsentView.allowed`) so the top-k are the best k among consenting
identities, not the survivors of an unfiltered top-k.

A **tombstone** is what remains after consent is withdrawn for every purpose:
the identity is erased and only ``HMAC-SHA256(salt, external id)`` and the time
are kept (no biometric data, no clear id), so the same person is not
re-enrolled from an old export unless new consent is recorded first.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pyfacematch.errors import InputError

__all__ = [
    "ConsentRecord",
    "ConsentView",
    "check_purpose",
    "tombstone_hash",
]

_PURPOSE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


def check_purpose(purpose: object) -> str:
    """A purpose name: lowercase letters, digits, ``_ . -``, 1–64 characters.

    Raises
    ------
    InputError
        Anything else (a purpose is a short label, not free text).
    """
    if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
        raise InputError(
            f"a purpose is a short lowercase label such as 'payment' or 'access' "
            f"([a-z][a-z0-9_.-]{{0,63}}), got {purpose!r}"
        )
    return purpose


@dataclass(frozen=True)
class ConsentRecord:
    """Consent of one identity for one purpose."""

    identity: str
    purpose: str
    granted_at: float
    source: str
    expires_at: float | None = None

    def active(self, now: float) -> bool:
        """Granted and not expired at ``now`` (seconds since the epoch)."""
        return self.expires_at is None or now < self.expires_at


def tombstone_hash(salt: bytes, identity: str) -> str:
    """HMAC-SHA256 of the external id under the gallery's tombstone salt (hex)."""
    return hmac.new(salt, identity.encode("utf-8"), hashlib.sha256).hexdigest()


class ConsentView:
    """Consent records of a gallery kept in memory, by purpose, for fast filtering."""

    def __init__(self, records: Iterable[ConsentRecord] = ()) -> None:
        self._by_purpose: dict[str, dict[str, float]] = {}
        self._cache: dict[str, tuple[float, float, int, np.ndarray]] = {}
        for r in records:
            self.put(r)

    def put(self, r: ConsentRecord) -> None:
        """Add or replace a record."""
        exp = math.inf if r.expires_at is None else float(r.expires_at)
        self._by_purpose.setdefault(r.purpose, {})[r.identity] = exp
        self._cache.pop(r.purpose, None)

    def drop(self, identity: str, purpose: str | None = None) -> None:
        """Forget one purpose of an identity, or all of them."""
        for p in [purpose] if purpose is not None else list(self._by_purpose):
            d = self._by_purpose.get(p)
            if d is not None and d.pop(identity, None) is not None:
                self._cache.pop(p, None)

    def purposes(self) -> list[str]:
        return sorted(p for p, d in self._by_purpose.items() if d)

    def allowed(
        self,
        purpose: str,
        slot_of: dict[str, int],
        n_slots: int,
        layout: int,
        now: float | None = None,
    ) -> np.ndarray:
        """bool (n_slots,): which identity slots may be returned for ``purpose`` at ``now``.

        Cached per purpose until the next expiry, a change of records, or a
        new ``layout`` (the caller's slot-table version).
        """
        t = time.time() if now is None else float(now)
        hit = self._cache.get(purpose)
        if hit is not None and hit[0] <= t < hit[1] and hit[2] == layout and hit[3].size == n_slots:
            return hit[3]
        out = np.zeros(n_slots, bool)
        nxt = math.inf
        for name, exp in self._by_purpose.get(purpose, {}).items():
            if t < exp:
                s = slot_of.get(name)
                if s is not None and s < n_slots:
                    out[s] = True
                nxt = min(nxt, exp)
        self._cache[purpose] = (t, nxt, layout, out)
        return out
