"""Input checks of the gallery API: templates, masks, ids, metadata and options.

Each function either returns the input in the one form the gallery uses
(normalised C-contiguous float32 templates, uint64 block masks, str ids) or
raises a typed error saying what was expected and what came.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from pyfacematch.errors import (
    DimensionError,
    DTypeError,
    EmptyInputError,
    InputError,
    NonFiniteError,
    ZeroVectorError,
)

__all__ = [
    "as_masks",
    "as_templates",
    "check_backend_options",
    "check_duplicate_option",
    "check_id",
    "check_id_list",
    "check_json",
    "check_min_fraction",
    "check_tune_probes",
    "count_rows",
    "encodable",
]


def as_templates(x: Any, dim: int, what: str) -> np.ndarray:
    """Templates as float32 (n, dim), rows normalised to unit length.

    Raises
    ------
    DTypeError, DimensionError, EmptyInputError, NonFiniteError, ZeroVectorError
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise DTypeError(f"{what} must be a numeric array of shape (n, {dim}), got {x!r}")
    a = np.asarray(x)
    if a.dtype == object or not (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    ):
        raise DTypeError(f"{what} must be a float array, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise DimensionError(f"{what} must have shape (n, {dim}) or ({dim},), got {a.shape}")
    if a.shape[1] != dim:
        raise DimensionError(
            f"expected {what} of dimension {dim} (this gallery), got {a.shape[1]}: "
            "was it made by another key model?"
        )
    if a.shape[0] == 0:
        raise EmptyInputError(f"{what} is empty: give at least one row")
    a64 = a.astype(np.float64, copy=False)
    fin = np.isfinite(a64).all(axis=1)
    if not fin.all():
        raise NonFiniteError(f"{what} row {int(np.argmin(fin))} holds NaN or Inf")
    norms = np.linalg.norm(a64, axis=1)
    if (norms == 0).any():
        raise ZeroVectorError(
            f"{what} row {int(np.argmin(norms))} has norm zero and cannot be normalised"
        )
    return np.ascontiguousarray(a64 / norms[:, None], np.float32)


def as_masks(masks: Any, n: int, blocks: np.ndarray | None, what: str) -> np.ndarray | None:
    """Block masks as uint64 (n,); None for a gallery without blocks.

    ``masks=None`` means every block valid. Raises :class:`InputError` for
    masks on a gallery without blocks, a wrong shape or dtype, negative masks,
    bits beyond the gallery's blocks or an empty mask.
    """
    if blocks is None:
        if masks is not None:
            raise InputError(
                f"{what}: this gallery has no region blocks, so masks are not used; "
                "create it with blocks=… to score masked templates"
            )
        return None
    nb = blocks.size - 1
    full = np.uint64((1 << nb) - 1)
    if masks is None:
        return np.full(n, full, np.uint64)
    m = np.asarray(masks)
    if m.ndim == 0:
        m = m[None]
    if not np.issubdtype(m.dtype, np.integer) or m.shape != (n,):
        raise InputError(
            f"{what} must be {n} integer bitmasks (one per row), got {m.shape} {m.dtype}"
        )
    if np.issubdtype(m.dtype, np.signedinteger) and (m < 0).any():
        raise InputError(f"{what} must be non-negative bitmasks")
    m = m.astype(np.uint64)
    if (m & ~full).any():
        raise InputError(f"{what} set bits beyond the gallery's {nb} blocks")
    if (m == 0).any():
        raise InputError(f"{what} row {int(np.argmin(m != 0))} has no valid block")
    return m


def check_id(identity_id: Any) -> str:
    """An identity id: a non-empty str that UTF-8 can encode (else :class:`InputError`).

    A str holding a lone surrogate (e.g. from ``os.fsdecode`` of a bad file
    name) cannot be stored; it is refused here, before anything is written.
    """
    if not isinstance(identity_id, str) or not identity_id:
        raise InputError(f"identity ids are non-empty strings, got {_describe(identity_id)}")
    return encodable(identity_id, "identity id")


def _describe(value: Any) -> str:
    """A value for an error message, never the contents of an array (it may be a template:
    ``verify(probe, "p4")`` with the arguments swapped would print biometric data)."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype} (arguments swapped?)"
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"a {type(value).__name__} of {len(value)} items (arguments swapped?)"
    if isinstance(value, str):
        return "an empty string"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def encodable(text: str, what: str) -> str:
    """``text`` itself when UTF-8 can encode it, else :class:`InputError` naming the position."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} {text!r} holds a character UTF-8 cannot encode at position {exc.start} "
            "(a lone surrogate, often from a badly decoded file name): fix the id's encoding"
        ) from None
    return text


def check_id_list(identity_ids: Any) -> list[str]:
    """A sequence of identity ids, one per template row, each checked by :func:`check_id`.

    A single str (or bytes) is refused: ``"xyz"`` would otherwise be read as
    the three ids ``x``, ``y``, ``z``.
    """
    if isinstance(identity_ids, (str, bytes, bytearray)):
        raise InputError(
            f"identity_ids must be a sequence of ids (one per template row), got the single "
            f"{type(identity_ids).__name__} {identity_ids!r}: pass [{identity_ids!r}] or use "
            "enroll() for one identity"
        )
    try:
        ids = list(identity_ids)
    except TypeError:
        raise InputError(
            f"identity_ids must be a sequence of str, got {type(identity_ids).__name__}"
        ) from None
    return [check_id(i) for i in ids]


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputError(f"{what} must be a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise NonFiniteError(f"{what} must be finite, got {v!r}")
    return f


def check_min_fraction(v: Any) -> float:
    """``min_fraction`` of masked scoring: a finite number in [0, 1]."""
    f = _number(v, "min_fraction")
    if not 0.0 <= f <= 1.0:
        raise InputError(
            f"min_fraction is the minimum share of dimensions two masked templates must share, "
            f"within [0, 1]; got {v!r}"
        )
    return f


def check_tune_probes(v: Any) -> int:
    """``tune_probes``: a positive integer (the size of the tuning sample)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise InputError(
            f"tune_probes is the number of tuning probes, a positive integer; got {v!r} "
            "(1000 is the default)"
        )
    return int(v)


def check_backend_options(opts: Any) -> dict[str, Any]:
    """Backend options: a mapping of str names to values.

    Names, types and ranges (finite numbers, ``safety`` of the binary backend
    in [1, 64], …) are checked by the backend itself
    (:func:`pyfacematch.index.make_backend`, :class:`~pyfacematch.errors.BackendOptionError`),
    which the gallery calls before any file is created.
    """
    if opts is None:
        return {}
    if not isinstance(opts, Mapping):
        raise InputError(
            f"backend_options must be a mapping of option names to values, got {opts!r}"
        )
    out: dict[str, Any] = {}
    for k, v in opts.items():
        if not isinstance(k, str):
            raise InputError(f"backend option names are str, got {k!r}")
        out[k] = v
    return out


def check_duplicate_option(v: Any) -> None:
    """``on_duplicate`` is ``"refuse"`` or ``"append"`` (else :class:`InputError`)."""
    if v not in ("refuse", "append"):
        raise InputError(f"on_duplicate must be 'refuse' or 'append', got {v!r}")


def check_json(meta: Any) -> None:
    """Identity metadata is a JSON-serialisable mapping (else :class:`InputError`)."""
    if not isinstance(meta, Mapping):
        raise InputError(f"metadata must be a mapping (JSON object), got {type(meta).__name__}")
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise InputError(f"metadata must be JSON-serialisable: {exc}") from exc


def count_rows(templates: Any) -> int:
    """Rows of a template argument: 1 for a single (d,) template, else its length."""
    a = np.asarray(templates) if not isinstance(templates, (str, bytes)) else None
    if a is None or a.ndim == 0:
        return 1
    return 1 if a.ndim == 1 else int(a.shape[0])
