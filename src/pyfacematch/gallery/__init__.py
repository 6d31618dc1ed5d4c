"""Galleries: identities and their templates, kept in SQLite and searched through an index.

``gallery.gallery`` holds :class:`Gallery` (enroll, identify, verify, remove, thresholds);
``gallery.store`` the SQLite store that is the source of truth; ``gallery.calibration`` thresholds
calibrated to a target FMR / FPIR; ``gallery.atomic`` crash-safe file writes.
"""

from __future__ import annotations

from pyfacematch.gallery.gallery import (
    Candidate,
    Decision,
    Gallery,
    IdentifyArrays,
    IdentifyResult,
    VerifyResult,
)

__all__ = [
    "Candidate",
    "Decision",
    "Gallery",
    "IdentifyArrays",
    "IdentifyResult",
    "VerifyResult",
]
