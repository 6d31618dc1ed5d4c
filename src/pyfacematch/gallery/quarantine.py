"""Checks on template rows read from a gallery file, and the quarantine of bad rows.

The SQLite store is the source of truth, but a file can be damaged or crafted:
a blob of the wrong length, a NaN, a vector of norm 1e30 (which would win every
search) or of norm zero. Every row is checked when the gallery loads
(:func:`check_rows`); a row that fails is *quarantined*: it is left in the
file, never searched, and named (template id, identity, reason) in a
:class:`QuarantinedTemplate` record, a log line and one
:class:`TemplateQuarantineWarning`. Removing the identity deletes its
quarantined rows too.

What this does not do: authenticate rows. A crafted row that *is* a finite
unit vector of the right length (someone else's template copied under your
name) passes these checks; detecting that needs a keyed checksum or
encryption with associated data per row (the security issue).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyfacematch.errors import (
    DimensionError,
    DTypeError,
    InputError,
    NonFiniteError,
    PyFaceMatchError,
    ZeroVectorError,
)

__all__ = [
    "NORM_TOLERANCE",
    "QuarantinedTemplate",
    "TemplateQuarantineWarning",
    "check_rows",
    "check_templates",
    "report_quarantine",
]

log = logging.getLogger("pyfacematch.gallery")

#: Largest deviation of a stored template's norm from 1 that is accepted. Stored
#: templates are normalised in float64 then rounded to float32, so their norm
#: is 1 within about 1e-6 even at d = 4096; 1e-3 leaves ample room for that and
#: still refuses anything that would distort a cosine by more than 0.1 %.
NORM_TOLERANCE = 1e-3


class TemplateQuarantineWarning(PyFaceMatchError, UserWarning):
    """Template rows of a gallery file failed their checks and are not searched."""


@dataclass(frozen=True)
class QuarantinedTemplate:
    """A template row that failed its checks at load and is never searched.

    Attributes
    ----------
    tid : int
        Template id (row of the ``templates`` table).
    identity : str
        Identity the row belongs to (``repr`` of the stored value when it is
        not text).
    reason : str
        What failed: ``"length"``, ``"type"``, ``"non-finite"``, ``"zero"``,
        ``"norm"``, ``"mask"`` or ``"identity"``, followed by details that
        never include template values.
    """

    tid: int
    identity: str
    reason: str


def check_rows(
    rows: Sequence[tuple[Any, Any, Any, Any]],
    dim: int,
    n_blocks: int | None,
) -> tuple[np.ndarray, np.ndarray, list[QuarantinedTemplate]]:
    """Check raw ``(tid, identity, blob, mask)`` rows read from the store.

    Parameters
    ----------
    rows : sequence of (tid, identity, blob, mask)
        As stored: ``blob`` should be ``dim`` little-endian float32 values,
        ``identity`` a non-empty str, ``mask`` an int64 bit pattern (or None
        when the gallery has no blocks).
    dim : int
        Template dimension of the gallery.
    n_blocks : int or None
        Region blocks of the gallery (None: masks are not used).

    Returns
    -------
    good : int64 (G,)
        Indices into ``rows`` of the rows that passed, in order.
    matrix : float32 (G, dim)
        Their templates.
    bad : list of QuarantinedTemplate
        The rows that failed, in order.
    """
    nbytes = dim * 4
    bad: list[QuarantinedTemplate] = []
    shaped: list[int] = []
    for i, (tid, name, blob, mask) in enumerate(rows):
        who = name if isinstance(name, str) else repr(name)
        if not isinstance(name, str) or not name:
            bad.append(QuarantinedTemplate(int(tid), who, "identity: the stored id is not text"))
        elif not isinstance(blob, bytes):
            bad.append(
                QuarantinedTemplate(
                    int(tid), who, f"type: stored as {type(blob).__name__}, not a blob"
                )
            )
        elif len(blob) != nbytes:
            bad.append(
                QuarantinedTemplate(
                    int(tid), who, f"length: {len(blob)} bytes, expected {nbytes} (dim={dim})"
                )
            )
        elif n_blocks is not None and not _mask_ok(mask, n_blocks):
            bad.append(
                QuarantinedTemplate(
                    int(tid), who, f"mask: not a non-zero bitmask of the {n_blocks} blocks"
                )
            )
        else:
            shaped.append(i)
    idx = np.asarray(shaped, np.int64)
    mat = np.frombuffer(b"".join(rows[i][2] for i in shaped), np.float32).reshape(-1, dim)
    a64 = mat.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        finite: np.ndarray = np.asarray(np.isfinite(a64).all(axis=1))
        norms: np.ndarray = np.sqrt(np.einsum("ij,ij->i", a64, a64))
    ok = finite & (np.abs(norms - 1.0) <= NORM_TOLERANCE)
    for j in np.flatnonzero(~ok).tolist():
        tid, name = rows[int(idx[j])][0], rows[int(idx[j])][1]
        if not finite[j]:
            why = "non-finite: holds NaN or Inf"
        elif norms[j] == 0.0:
            why = "zero: the template has norm zero"
        else:
            why = f"norm: {norms[j]:.6g}, expected 1 ± {NORM_TOLERANCE:g}"
        bad.append(QuarantinedTemplate(int(tid), name, why))
    bad.sort(key=lambda q: q.tid)
    return idx[ok], np.ascontiguousarray(mat[ok], np.float32), bad


def _mask_ok(mask: Any, n_blocks: int) -> bool:
    if isinstance(mask, bool) or not isinstance(mask, int):
        return False
    m = mask + (1 << 64) if mask < 0 else mask
    return 0 < m < (1 << n_blocks) if n_blocks < 64 else m != 0


def check_templates(tmpl: Any, dim: int, what: str = "templates") -> np.ndarray:
    """Refuse templates that :func:`check_rows` would quarantine, before they are written.

    Parameters
    ----------
    tmpl : ndarray, float32 (T, dim)
        Unit-norm templates.

    Returns
    -------
    ndarray
        ``tmpl`` as a C-contiguous float32 array (no copy when it already is).

    Raises
    ------
    DTypeError, DimensionError, NonFiniteError, ZeroVectorError, InputError
    """
    if not isinstance(tmpl, np.ndarray) or tmpl.dtype != np.float32:
        raise DTypeError(
            f"{what} must be a float32 numpy array, got {getattr(tmpl, 'dtype', type(tmpl))}"
        )
    if tmpl.ndim != 2 or tmpl.shape[1] != dim:
        raise DimensionError(f"{what} must have shape (T, {dim}), got {tmpl.shape}")
    fin = np.isfinite(tmpl).all(axis=1)
    if not fin.all():
        raise NonFiniteError(f"{what} row {int(np.argmin(fin))} holds NaN or Inf")
    # float64 accumulation without a float64 copy of the whole batch (bulk enrollment)
    norms = np.sqrt(np.einsum("ij,ij->i", tmpl, tmpl, dtype=np.float64))
    if (norms == 0).any():
        raise ZeroVectorError(f"{what} row {int(np.argmin(norms))} has norm zero")
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        r = int(np.argmax(off))
        raise InputError(
            f"{what} row {r} has norm {norms[r]:.6g}: the store keeps unit-norm templates only "
            "(normalise them, or enroll through Gallery, which does)"
        )
    return np.ascontiguousarray(tmpl)


def report_quarantine(bad: Sequence[QuarantinedTemplate], where: str) -> None:
    """Log every quarantined row and emit one :class:`TemplateQuarantineWarning`."""
    if not bad:
        return
    for q in bad:
        log.warning(
            "gallery %s: template %d of identity %r quarantined (%s): it is not searched",
            where,
            q.tid,
            q.identity,
            q.reason,
        )
    shown = ", ".join(f"{q.tid} ({q.identity!r}: {q.reason.split(':')[0]})" for q in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    warnings.warn(
        TemplateQuarantineWarning(
            f"gallery {where}: {len(bad)} template(s) failed their checks at load and are "
            f"quarantined (never searched): {shown}{more}. Re-enroll those identities from "
            "their source images (remove() then enroll()), or restore the file from a backup"
        ),
        stacklevel=3,
    )
