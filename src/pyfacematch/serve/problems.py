"""Errors as RFC 9457 problem details (``application/problem+json``).

:class:`HTTPProblem` is raised by the service for the caller's mistakes that have no library
error (bad syntax, missing key, too large …); :func:`problem_for` maps any exception, library
errors included, to ``(status, slug, title)``. 4xx answers name the caller's mistake, 5xx only
faults. ``detail`` carries the library's message, which by convention never holds biometric data
(templates, landmarks).
"""

from __future__ import annotations

from typing import Any

from pyfacematch import errors as E

__all__ = ["PROBLEM_TYPE_PREFIX", "HTTPProblem", "problem_body", "problem_for"]

#: RFC 9457 §3.1.1: ``type`` is a URI reference; a URN needs no web page to exist.
PROBLEM_TYPE_PREFIX = "urn:pyfacematch:problem:"


class HTTPProblem(Exception):
    """A problem answered as is: status, slug (the end of the ``type`` URI), title, detail.

    Parameters
    ----------
    status : int
    slug : str
    title : str
    detail : str
    headers : mapping or None
        Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}


# most specific first: the first isinstance match wins
_LIBRARY: list[tuple[type[BaseException], int, str, str]] = [
    (E.DimensionError, 422, "dimension", "Wrong template dimension or shape"),
    (E.NonFiniteError, 422, "non-finite", "Template holds NaN or infinity"),
    (E.ZeroVectorError, 422, "zero-vector", "Template of norm zero"),
    (E.EmptyInputError, 422, "empty", "Empty input"),
    (E.ConsentError, 409, "consent", "Consent refuses this operation"),
    (E.DuplicateIdentityError, 409, "duplicate-identity", "Identity already enrolled"),
    (E.IndexTrainingError, 422, "index-training", "Not enough data to train the index"),
    (E.InputError, 422, "invalid-input", "Invalid input"),
    (E.DTypeError, 422, "dtype", "Unusable array type"),
    (E.NoConsentError, 404, "no-consent", "No consent for the purpose (treated as unknown)"),
    (E.UnknownIdentityError, 404, "unknown-identity", "Identity not enrolled"),
    (E.GalleryReadOnlyError, 409, "read-only", "Gallery opened read-only"),
    (E.GalleryLockedError, 503, "gallery-locked", "Gallery locked by another writer"),
    (E.GalleryFileError, 503, "gallery-file", "Gallery file fault"),
]


def problem_for(exc: BaseException) -> tuple[int, str, str, str]:
    """``(status, slug, title, detail)`` for an exception (500 ``internal`` if unknown)."""
    if isinstance(exc, HTTPProblem):
        return exc.status, exc.slug, exc.title, exc.detail
    for cls, status, slug, title in _LIBRARY:
        if isinstance(exc, cls):
            return status, slug, title, str(exc)
    # a fault: no details of internals to the caller (they go to the log)
    return 500, "internal", "Internal server error", "an internal error occurred; see server log"


def problem_body(exc: BaseException, instance: str) -> tuple[int, dict[str, Any]]:
    """The status and the RFC 9457 JSON object for ``exc`` at request path ``instance``."""
    status, slug, title, detail = problem_for(exc)
    return status, {
        "type": PROBLEM_TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
