"""Request bodies to validated arrays, before anything reaches the gallery.

Three encodings of templates: JSON (``{"probes": [[...], ...]}``, number lists), raw
``application/octet-stream`` (float32 little-endian rows, row count = bytes / (4 · dim)) and
``application/x-npy`` (a ``.npy`` file, read with ``allow_pickle=False``). Arrays are checked with
the library's own :func:`~pyfacematch.gallery.validation.as_templates` (dimension, finiteness,
zero norm), so a malformed body is answered 4xx here and never reaches the core.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from typing import Any

try:  # a C JSON codec: parses number lists and writes results several times faster
    import orjson
except ImportError:  # pragma: no cover - the [serve] extra installs it
    orjson = None  # type: ignore[assignment]

import numpy as np

from pyfacematch.errors import DimensionError
from pyfacematch.gallery.validation import as_templates
from pyfacematch.serve.problems import HTTPProblem

__all__ = [
    "BINARY_TYPES",
    "JSON_TYPE",
    "decode_templates",
    "dumps",
    "media_type",
    "opt_float",
    "opt_int",
    "parse_json",
    "unit_rows",
]

JSON_TYPE = "application/json"
OCTET = "application/octet-stream"
NPY = "application/x-npy"
BINARY_TYPES = (OCTET, NPY)


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` header, lower case, parameters dropped."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _bad(detail: str, slug: str = "malformed-body") -> HTTPProblem:
    return HTTPProblem(400, slug, "Malformed request body", detail)


def dumps(obj: Any) -> bytes:
    """``obj`` as compact UTF-8 JSON (orjson where installed; the same bytes as ``json``).

    Callers pass only JSON types (str keys; finite floats or None).
    """
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # a type orjson leaves out (a float subclass …): the slow path
            pass
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _const(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (RFC 8259 §6): send finite numbers")


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object body; NaN / Infinity literals refused (RFC 8259 has no such numbers).

    orjson (where installed) is a strict RFC 8259 parser: it refuses those literals and
    invalid UTF-8 itself, as the standard library path below does by hand.
    """
    try:
        if orjson is not None:
            obj = orjson.loads(body)
        else:
            obj = json.loads(body.decode("utf-8"), parse_constant=_const)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"body is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _bad(f"body must be a JSON object, got {type(obj).__name__}")
    return obj


_NUMBER_TYPES = frozenset((int, float))


def _numbers(x: Any, what: str) -> np.ndarray:
    """A JSON number list (or list of lists) as float64, refusing anything else before numpy."""
    if not isinstance(x, list) or not x:
        raise _bad(f"{what} must be a non-empty list of numbers (or of number lists)")
    rows = x if isinstance(x[0], list) else [x]
    width = None
    for r in rows:
        # exact types: a JSON parser makes int / float (bool is a subclass of int: refused)
        if type(r) is not list or not set(map(type, r)) <= _NUMBER_TYPES:
            raise _bad(f"{what} must hold only numbers, in lists of equal length")
        if width is None:
            width = len(r)
        elif len(r) != width:
            raise _bad(f"{what}: rows of unequal length ({width} and {len(r)})")
    try:
        return np.asarray(rows, dtype=np.float64)
    except OverflowError:
        raise _bad(f"{what}: a number is too large for a float") from None


def decode_templates(
    body: bytes,
    ctype: str,
    dim: int,
    what: str,
    *,
    field: str | None = None,
    obj: Mapping[str, Any] | None = None,
    max_rows: int | None = None,
    sent_dim: str | None = None,
) -> np.ndarray:
    """Templates of a request as float32 ``(n, dim)``, unit rows.

    Parameters
    ----------
    body : bytes
        The raw body (binary types).
    ctype : str
        Media type (see :func:`media_type`).
    dim : int
        The gallery's template dimension.
    what : str
        Name used in error messages.
    field : str or None
        JSON field holding the templates (JSON bodies).
    obj : mapping or None
        The parsed JSON object (JSON bodies).
    max_rows : int or None
        Refuse more rows than this with 413.
    sent_dim : str or None
        The ``dim`` query parameter of a raw float32 body: the row width the caller meant, so
        a wrong width is reported as the library's :class:`DimensionError` (422), not as bytes
        that do not divide into rows (400).

    Raises
    ------
    HTTPProblem
        400 malformed, 413 too many rows, 415 unsupported media type.
    DimensionError, NonFiniteError, ZeroVectorError
        From the library's checks (answered 422).
    """
    if ctype == JSON_TYPE:
        if obj is None or field is None or field not in obj:
            raise _bad(f"JSON body needs the field {field!r}")
        arr: np.ndarray = _numbers(obj[field], what)
    elif ctype == OCTET:
        if sent_dim is not None:
            w = opt_int(sent_dim, "dim", dim, 1)
            if w != dim:
                raise DimensionError(
                    f"expected {what} of dimension {dim} (this gallery), got {w}: was it made by "
                    "another key model?"
                )
        if len(body) == 0 or len(body) % (4 * dim):
            raise _bad(
                f"{what}: {len(body)} bytes is not a whole number of float32 rows of dimension "
                f"{dim} ({4 * dim} bytes each)"
            )
        arr = np.frombuffer(body, dtype="<f4").reshape(-1, dim)
    elif ctype == NPY:
        try:
            arr = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _bad(f"{what}: not a readable .npy file ({type(exc).__name__})") from None
        if arr.dtype.kind not in "fiu":
            raise _bad(f"{what}: .npy dtype {arr.dtype} is not numeric")
    else:
        raise HTTPProblem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send {JSON_TYPE}, {OCTET} (float32 little-endian rows) or {NPY}; got {ctype!r}",
        )
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if max_rows is not None and arr.shape[0] > max_rows:
        raise HTTPProblem(
            413,
            "too-many-templates",
            "Too many templates in one request",
            f"{what}: {arr.shape[0]} rows, the limit is {max_rows}: split the request",
        )
    return unit_rows(arr, dim, what)


def unit_rows(arr: np.ndarray, dim: int, what: str) -> np.ndarray:
    """:func:`~pyfacematch.gallery.validation.as_templates` in fewer numpy calls, same bytes.

    For a float (n, dim) array with n >= 1, the row sums of squares in float64 tell both checks
    at once: a NaN or infinity anywhere makes its row's sum non-finite, and a float32 value
    squared in float64 never overflows (nor does a subnormal one underflow to 0), so a finite,
    non-zero sum means a finite, non-zero row. The result is then computed exactly as
    ``as_templates`` does (``np.linalg.norm`` is ``sqrt(add.reduce(x * x))``), so the bytes are
    the same. Any other case (a failed check included) is handed to ``as_templates``, which
    raises its typed error.
    """
    if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] == 0 or arr.dtype.kind != "f":
        return as_templates(arr, dim, what)
    a64 = arr.astype(np.float64, copy=False)
    ss = np.add.reduce(a64 * a64, axis=1)
    if not (np.isfinite(ss).all() and ss.all()):
        return as_templates(arr, dim, what)  # raises NonFiniteError / ZeroVectorError
    return np.ascontiguousarray(a64 / np.sqrt(ss)[:, None], np.float32)


def opt_int(v: Any, name: str, default: int, lo: int = 1, hi: int | None = None) -> int:
    """An optional integer parameter (JSON value or query string) within ``[lo, hi]``."""
    if v is None:
        return default
    if isinstance(v, str):
        try:
            v = int(v)
        except ValueError:
            raise _bad(f"{name} must be an integer, got {v!r}", "invalid-parameter") from None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise _bad(f"{name} must be an integer {rng}, got {v!r}", "invalid-parameter")
    return v


def opt_float(v: Any, name: str) -> float | None:
    """An optional finite number parameter (JSON value or query string)."""
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise _bad(f"{name} must be a number, got {v!r}", "invalid-parameter") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(f"{name} must be a finite number, got {v!r}", "invalid-parameter")
    return float(v)
