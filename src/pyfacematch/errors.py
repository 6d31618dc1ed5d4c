"""Typed errors of pyfacematch.

Every error is both a :class:`PyFaceMatchError` and the matching builtin
(``ValueError``, ``KeyError``, ``OSError`` …) so callers can catch either.
Messages say what was expected, what came, and what to do; they never
contain biometric data (templates, landmarks).
"""

from __future__ import annotations

__all__ = [
    "PyFaceMatchError",
    "InputError",
    "DimensionError",
    "NonFiniteError",
    "DTypeError",
    "EmptyInputError",
    "ZeroVectorError",
    "UnknownIdentityError",
    "DuplicateIdentityError",
    "SchemeError",
    "LandmarkError",
    "GalleryDamagedError",
    "GalleryFileError",
    "FormatVersionError",
    "GalleryLockedError",
    "GalleryReadOnlyError",
    "KeyFileError",
    "GalleryClosedError",
    "IndexTrainingError",
    "BackendOptionError",
    "ModelError",
    "WrongKeyError",
    "TamperedRecordError",
    "ConsentError",
    "NoConsentError",
    "ShardChecksumError",
    "ShardManifestError",
    "ClusterError",
    "UnsafePermissionsError",
]


class PyFaceMatchError(Exception):
    """Base class of every error raised by pyfacematch."""


class InputError(PyFaceMatchError, ValueError):
    """An argument has the wrong value (shape, range, option)."""


class DimensionError(InputError):
    """Two arrays that must agree on a dimension do not."""


class NonFiniteError(InputError):
    """An input holds NaN or ±Inf; the message names the row."""


class DTypeError(PyFaceMatchError, TypeError):
    """An array has a dtype or memory layout that cannot be used as is."""


class EmptyInputError(InputError):
    """A batch or gallery that must hold at least one row is empty."""


class ZeroVectorError(InputError):
    """A vector of norm zero cannot be normalised; the message names the row."""


class UnknownIdentityError(PyFaceMatchError, KeyError):
    """An identity id is not enrolled."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class DuplicateIdentityError(InputError):
    """An identity id is already enrolled and the call asked to refuse duplicates."""


class SchemeError(InputError):
    """A landmark scheme is inconsistent or unknown."""


class LandmarkError(InputError):
    """A face's landmarks cannot make a key (wrong count, NaN, collapsed, all hidden)."""


class GalleryFileError(PyFaceMatchError, OSError):
    """A gallery file is missing, corrupted, truncated or not a gallery."""


class GalleryDamagedError(GalleryFileError):
    """A read met a damaged or altered gallery database (SQLite found a corrupt page, or text
    that is not UTF-8): nothing was changed; restore the file from a backup."""


class FormatVersionError(GalleryFileError):
    """A file was written by an unknown format version."""


class GalleryLockedError(GalleryFileError):
    """Another process (or another Gallery object) has the gallery file open for writing."""


class GalleryReadOnlyError(GalleryFileError, PermissionError):
    """A write was asked of a gallery opened read-only."""


class KeyFileError(GalleryFileError):
    """The gallery's secret key (key file or environment variable) cannot be trusted or read."""


class UnsafePermissionsError(GalleryFileError, PermissionError):
    """A gallery file or folder can be written by other users: refused at open (the message
    names the ``chmod`` to run once the file is known to be untouched)."""


class GalleryClosedError(GalleryFileError):
    """A gallery (or its store) was used after ``close()``: open it again."""


class IndexTrainingError(InputError):
    """A search index needs more data to train than it was given."""


class BackendOptionError(InputError):
    """A search backend was given an option it does not know, or a value outside its range.

    Attributes
    ----------
    backend : str
        The backend's name (``"hnsw"``, ``"binary"`` …).
    option : str
        The option's name as given.
    """

    def __init__(self, message: str, *, backend: str = "", option: str = "") -> None:
        super().__init__(message)
        self.backend = backend
        self.option = option


class ModelError(PyFaceMatchError, RuntimeError):
    """A face model cannot be loaded or run."""


class WrongKeyError(KeyFileError):
    """An encrypted gallery was opened with a master key it is not encrypted under."""


class TamperedRecordError(GalleryFileError):
    """An encrypted or authenticated record fails its check: the file was altered."""


class ConsentError(InputError):
    """An operation needs consent that the person has not given (or has withdrawn)."""


class NoConsentError(UnknownIdentityError):
    """An identity has no current consent for the purpose of a request (treated as unknown)."""


class ShardChecksumError(GalleryFileError):
    """A shard file's SHA-256 differs from its manifest: the shard is refused (the file is named)."""


class ShardManifestError(GalleryFileError):
    """A shard manifest is missing, unreadable, or does not describe its shards."""


class ClusterError(PyFaceMatchError, RuntimeError):
    """A Dask cluster cannot be reached or started, or Dask is not installed."""
