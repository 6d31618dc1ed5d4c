"""Galleries: identities and their templates, kept in SQLite and searched through an index.

``gallery.gallery`` holds :class:`Gallery`, the public class (enroll, identify, verify, remove,
thresholds), which delegates to one module per concern: ``results`` (result types),
``validation`` (input checks), ``search`` (exact scan, shortlist + re-rank, fusion), ``tuning``
(recall-target tuning), ``checkpoints`` (index checkpoint files), ``locking`` (locks);
``store`` is the SQLite store that is the source of truth; ``calibration`` thresholds calibrated
to a target FMR / FPIR (and their record type); ``atomic`` crash-safe file writes. What the store
trusts at load: ``quarantine`` (template rows checked, bad ones never searched), ``derived``
(tuning / checkpoint parameters validated, else rebuilt), ``wal`` (a crash-left write-ahead log
read before SQLite recovers it), ``filemodes`` (owner-only files and folders).
"""

from __future__ import annotations

from pyfacematch.gallery.gallery import Gallery
from pyfacematch.gallery.results import (
    Candidate,
    Decision,
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
