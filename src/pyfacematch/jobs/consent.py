"""Consent per purpose from the command line: grant, withdraw, show (one identity at a time)."""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import asdict
from typing import Any

from pyfacematch.errors import InputError
from pyfacematch.jobs.common import open_gallery

__all__ = ["consent_action", "parse_time"]


def parse_time(text: str | None) -> float | None:
    """An ISO 8601 date or date-time (UTC when no zone is given) as seconds since the epoch."""
    if text is None:
        return None
    try:
        t = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"expected an ISO 8601 date such as 2027-12-31 or 2027-12-31T18:00:00+01:00, "
            f"got {text!r}"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


def consent_action(
    gallery: str | os.PathLike[str],
    action: str,
    identity: str,
    *,
    purpose: str | None = None,
    source: str | None = None,
    expires: str | None = None,
) -> dict[str, Any]:
    """Grant, withdraw or show the consent of ``identity``; a JSON-ready summary.

    ``withdraw`` without ``purpose`` withdraws every purpose: the identity is
    erased and a tombstone refuses its re-enrollment until new consent.
    """
    if action not in ("grant", "withdraw", "show"):
        raise InputError(f"consent action must be grant, withdraw or show, got {action!r}")
    if action == "grant" and (purpose is None or source is None):
        raise InputError(
            "consent grant needs --purpose and --source (where the consent comes from)"
        )
    g = open_gallery(gallery, read_only=action == "show")
    try:
        out: dict[str, Any] = {"identity": identity, "action": action}
        if action == "grant":
            assert purpose is not None and source is not None
            g.grant_consent(identity, purpose, source=source, expires_at=parse_time(expires))
        elif action == "withdraw":
            left = g.withdraw_consent(identity, purpose)
            out["erased"] = not left
        now = time.time()
        out["enrolled"] = identity in g
        out["consent"] = [
            {
                **asdict(r),
                "granted_at": _iso(r.granted_at),
                "expires_at": _iso(r.expires_at),
                "active": r.active(now),
            }
            for r in g.consent_records(identity)
        ]
        out["default_purpose"] = g.default_purpose
        return out
    finally:
        g.close()
