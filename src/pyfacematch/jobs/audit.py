"""``pyfacematch audit``: verify, export and prune a gallery's audit trail."""

from __future__ import annotations

import os
import re
from typing import Any

from pyfacematch.errors import InputError
from pyfacematch.gallery.audit import export_file, verify_file
from pyfacematch.jobs.common import open_gallery
from pyfacematch.jobs.consent import parse_time

__all__ = ["audit_export", "audit_prune", "audit_verify", "parse_head"]

_HEAD = re.compile(r"([0-9]{1,19}):([0-9a-f]{64})")


def parse_head(text: str | None) -> tuple[int, str] | None:
    """``SEQ:HASH`` (as printed by ``audit verify``) → (seq, hash)."""
    if text is None:
        return None
    m = _HEAD.fullmatch(text.strip())
    if m is None:
        raise InputError(f"--expect-head takes SEQ:HASH as printed by `audit verify`, got {text!r}")
    return int(m.group(1)), m.group(2)


def _exists(gallery: str | os.PathLike[str]) -> str:
    p = os.fspath(gallery)
    if not os.path.isfile(p):
        raise InputError(f"gallery {p!r} does not exist")
    return p


def audit_verify(gallery: str | os.PathLike[str], expect_head: str | None = None) -> dict[str, Any]:
    """The chain report (see :func:`pyfacematch.security.audit.verify_chain`)."""
    return verify_file(_exists(gallery), parse_head(expect_head))


def audit_export(gallery: str | os.PathLike[str], output: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the trail as JSON Lines; a summary."""
    n = export_file(_exists(gallery), output)
    return {"records": n, "output": os.fspath(output)}


def audit_prune(gallery: str | os.PathLike[str], before: str) -> dict[str, Any]:
    """Delete records older than ``before`` (ISO date); a summary."""
    t = parse_time(before)
    assert t is not None
    g = open_gallery(_exists(gallery))
    try:
        n = g.audit_prune(t)
        return {"pruned": n, "before": before, "verify": g.audit_verify()}
    finally:
        g.close()
