"""Array files read without trusting them: ``.npy`` headers and ``.npz`` archives.

``numpy.load`` believes what a file says: a ``.npy`` header claiming ``(2, 10**12)`` makes it
allocate terabytes, and an ``.npz`` member is decompressed whole, so a 1 MB zip bomb becomes
gigabytes of memory. The functions here read the header first, check the shape and dtype against
the bytes that are really there (the file size, or the zip member's declared size) and against a
cap, and only then allocate. Object dtypes are refused, so no pickle is ever loaded.

Used by every reader of array files in the package (``pyfacematch.io`` inputs, key models), so
the checks exist once.
"""

from __future__ import annotations

import ast
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from pyfacematch.errors import InputError, PyFaceMatchError

__all__ = [
    "DEFAULT_NPZ_MAX_BYTES",
    "MAX_HEADER_BYTES",
    "NPY_MAGIC",
    "NpyHeader",
    "SafeNpz",
    "npz_max_bytes",
    "read_npy_header",
]

NPY_MAGIC = b"\x93NUMPY"
#: Largest ``.npy`` header accepted (numpy's own default limit).
MAX_HEADER_BYTES = 10_000
#: Cap on the total uncompressed bytes loaded from one ``.npz`` (``PYFACEMATCH_NPZ_MAX_BYTES``).
DEFAULT_NPZ_MAX_BYTES = 1 << 30
#: A member bigger than this must not be compressed more than :data:`MAX_RATIO` times.
RATIO_FLOOR_BYTES = 64 << 20
MAX_RATIO = 200

ErrorType = type[PyFaceMatchError]


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares, checked to be self-consistent.

    Attributes
    ----------
    shape : tuple of int
        Non-negative dimensions.
    dtype : numpy.dtype
        Never an object (pickled) dtype.
    fortran_order : bool
    offset : int
        Bytes from the start of the array file to its data.
    nbytes : int
        Bytes of data the header implies (``prod(shape) * itemsize``).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int
    nbytes: int


def _read_exact(fh: IO[bytes], n: int, name: str, error: ErrorType) -> bytes:
    data = fh.read(n)
    if data is None or len(data) != n:
        raise error(f"{name}: not a .npy array (the file ends inside its header)")
    return bytes(data)


def read_npy_header(fh: IO[bytes], name: str, *, error: ErrorType = InputError) -> NpyHeader:
    """Read and check the header of a ``.npy`` array at the current position of ``fh``.

    Parameters
    ----------
    fh : binary file
        Positioned at the magic string; left at the first data byte.
    name : str
        How to name the file in messages.
    error : PyFaceMatchError subclass
        Raised for anything wrong (default :class:`~pyfacematch.errors.InputError`).

    Raises
    ------
    error
        Not a ``.npy`` header, an unknown version, a header over
        :data:`MAX_HEADER_BYTES`, an invalid shape or dtype, or an object dtype.
    """
    magic = _read_exact(fh, 8, name, error)
    if magic[:6] != NPY_MAGIC:
        raise error(f"{name}: not a .npy array (no NUMPY magic string)")
    major = magic[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", _read_exact(fh, 2, name, error))
        start = 10
    elif major in (2, 3):
        (hlen,) = struct.unpack("<I", _read_exact(fh, 4, name, error))
        start = 12
    else:
        raise error(f"{name}: .npy format version {major}.{magic[7]} is not supported")
    if hlen > MAX_HEADER_BYTES:
        raise error(
            f"{name}: .npy header of {hlen} bytes exceeds {MAX_HEADER_BYTES}: not an array "
            "written by numpy; re-save it with numpy.save"
        )
    raw = _read_exact(fh, hlen, name, error)
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
        d = ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError, UnicodeError):
        raise error(f"{name}: unreadable .npy header; re-save it with numpy.save") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise error(f"{name}: a .npy header needs exactly descr, fortran_order and shape")
    shape = d["shape"]
    if (
        not isinstance(shape, tuple)
        or len(shape) > 64
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise error(f"{name}: invalid .npy shape {str(shape)[:60]}")
    if not isinstance(d["fortran_order"], bool):
        raise error(f"{name}: invalid .npy fortran_order {str(d['fortran_order'])[:20]}")
    try:
        dtype = np.lib.format.descr_to_dtype(d["descr"])
    except Exception:  # numpy parses dtype strings itself (SyntaxError for '<,4' …)
        raise error(f"{name}: invalid .npy dtype {str(d['descr'])[:60]}") from None
    if dtype.hasobject:
        raise error(
            f"{name}: holds Python objects (dtype {dtype}); only numeric, boolean and string "
            "arrays are read, pickles never are: save plain arrays"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    return NpyHeader(tuple(shape), dtype, d["fortran_order"], start + hlen, nbytes)


def npz_max_bytes(default: int = DEFAULT_NPZ_MAX_BYTES) -> int:
    """The ``.npz`` cap: ``PYFACEMATCH_NPZ_MAX_BYTES`` when set to a positive integer."""
    env = os.environ.get("PYFACEMATCH_NPZ_MAX_BYTES", "").strip()
    if env:
        try:
            v = int(env)
        except ValueError:
            v = 0
        if v <= 0:
            raise InputError(
                f"PYFACEMATCH_NPZ_MAX_BYTES must be a positive number of bytes, got {env!r}"
            )
        return v
    return default


class SafeNpz:
    """An ``.npz`` archive whose members are checked before they are loaded.

    Each member's declared uncompressed size must match its ``.npy`` header
    (shape × itemsize); the total of loaded members must stay under
    ``max_bytes``; a big member compressed more than :data:`MAX_RATIO` times is
    refused as a likely zip bomb; object dtypes are refused. Members are read
    through a bounded stream, so a member that lies about its size still cannot
    grow memory past what was checked.

    Parameters
    ----------
    path : path
        A regular file.
    name : str or None
        How to name it in messages (default: the path).
    max_bytes : int or None
        Cap on the total uncompressed bytes loaded (None: :func:`npz_max_bytes`).
    error : PyFaceMatchError subclass
        Raised for anything wrong (default :class:`~pyfacematch.errors.InputError`).

    Examples
    --------
    >>> with SafeNpz(path) as z:  # doctest: +SKIP
    ...     a = z["templates"]
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        max_bytes: int | None = None,
        error: ErrorType = InputError,
    ) -> None:
        self.path = os.fspath(path)
        self.name = name or self.path
        self.max_bytes = npz_max_bytes() if max_bytes is None else int(max_bytes)
        self.error = error
        self.loaded = 0
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise error(f"cannot open {self.name}: {exc.strerror or exc}") from exc
        import stat as _stat

        if not _stat.S_ISREG(st.st_mode):
            raise error(f"{self.name}: not a regular file (an .npz archive needs random access)")
        try:
            self.zf = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise error(f"{self.name}: not a readable .npz archive ({exc})") from exc
        except (NotImplementedError, RuntimeError, struct.error) as exc:
            raise error(f"{self.name}: not a readable .npz archive ({exc})") from exc
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in self.zf.infolist():
            if info.filename.endswith(".npy"):
                self.members.setdefault(info.filename[:-4], info)

    @property
    def files(self) -> list[str]:
        """Names of the arrays (members without their ``.npy`` ending)."""
        return list(self.members)

    def __contains__(self, key: object) -> bool:
        return key in self.members

    def __enter__(self) -> SafeNpz:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.zf.close()

    def header(self, key: str) -> NpyHeader:
        """The checked ``.npy`` header of member ``key`` (nothing else is read)."""
        info = self._info(key)
        try:
            with self.zf.open(info) as fh:
                return self._check(key, info, fh)
        except PyFaceMatchError:
            raise
        except Exception as exc:  # zipfile raises many types for corrupt members
            raise self.error(f"{self.name}: array {key!r} is unreadable ({exc})") from exc

    def __getitem__(self, key: str) -> np.ndarray:
        info = self._info(key)
        try:
            with self.zf.open(info) as fh:
                h = self._check(key, info, fh)
                if self.loaded + h.nbytes > self.max_bytes:
                    raise self.error(
                        f"{self.name}: array {key!r} holds {h.nbytes} bytes uncompressed, over "
                        f"the cap of {self.max_bytes} bytes for .npz archives (loaded whole): "
                        "save large inputs as .npy or Parquet (read in chunks), or raise "
                        "PYFACEMATCH_NPZ_MAX_BYTES if you trust the file"
                    )
                out = np.empty(h.shape, h.dtype, order="F" if h.fortran_order else "C")
                view = (
                    memoryview(out.reshape(-1, order="A").view(np.uint8).data) if out.size else None
                )
                got = 0
                while view is not None and got < h.nbytes:
                    block = fh.read(min(h.nbytes - got, 1 << 24))
                    if not block:
                        break
                    view[got : got + len(block)] = block
                    got += len(block)
                if got != h.nbytes:
                    raise self.error(f"{self.name}: array {key!r} is truncated")
                self.loaded += h.nbytes
                return out
        except PyFaceMatchError:
            raise
        except MemoryError as exc:
            raise self.error(f"{self.name}: array {key!r} does not fit in memory") from exc
        except Exception as exc:  # zlib.error, BadZipFile (CRC), EOFError, OSError ...
            raise self.error(f"{self.name}: array {key!r} is unreadable ({exc})") from exc

    def _info(self, key: str) -> zipfile.ZipInfo:
        info = self.members.get(key)
        if info is None:
            raise self.error(f"{self.name}: has no array {key!r}")
        return info

    def _check(self, key: str, info: zipfile.ZipInfo, fh: IO[bytes]) -> NpyHeader:
        if info.flag_bits & 0x1:
            raise self.error(f"{self.name}: array {key!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.error(
                f"{self.name}: array {key!r} uses zip compression method {info.compress_type}; "
                "write it with numpy.savez or numpy.savez_compressed"
            )
        size = info.file_size
        if size > self.max_bytes + MAX_HEADER_BYTES + 16:
            raise self.error(
                f"{self.name}: array {key!r} declares {size} bytes uncompressed, over the cap "
                f"of {self.max_bytes} bytes: save large inputs as .npy or Parquet, or raise "
                "PYFACEMATCH_NPZ_MAX_BYTES if you trust the file"
            )
        if size > RATIO_FLOOR_BYTES and size > MAX_RATIO * max(info.compress_size, 1):
            raise self.error(
                f"{self.name}: array {key!r} expands {size // max(info.compress_size, 1)} times "
                f"({info.compress_size} to {size} bytes): refused as a likely zip bomb; save it "
                "as .npy if it is genuine"
            )
        h = read_npy_header(fh, f"{self.name} array {key!r}", error=self.error)
        if h.offset + h.nbytes != size:
            raise self.error(
                f"{self.name}: array {key!r} declares shape {h.shape} of {h.dtype} "
                f"({h.nbytes} bytes) but the archive holds {max(size - h.offset, 0)} data bytes: "
                "the file is corrupted or crafted; re-save it with numpy.savez"
            )
        return h

    def load_all(self) -> dict[str, Any]:
        """Every array of the archive, each checked as by ``z[key]``."""
        return {k: self[k] for k in self.members}
