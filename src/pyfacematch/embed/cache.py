"""A small on-disk cache for model files derived at run time, checked before each use.

Why: a photo job run from the command line is a new process each time, and two of its model
loads are pure derivations that cost more than the work itself on a small job: dlib's frontal
face detector is rebuilt from a string compiled into dlib (about 0.27 s, while the same detector
saved by dlib loads in about 1 ms), and dlib's face descriptor network is rebuilt as an ONNX graph
from its ``.dat`` weights (:mod:`pyfacematch.embed.dlib_onnx`, about 0.15 s). Both are
deterministic, so they are made once and kept.

Where: ``$PYFACEMATCH_CACHE_DIR`` when set (the value ``off`` disables the cache), else the user
cache folder of the XDG Base Directory specification (``$XDG_CACHE_HOME``, default
``~/.cache``; ``%LOCALAPPDATA%`` on Windows, ``~/Library/Caches`` on macOS), under
``pyfacematch/models``.

Integrity: each entry ``NAME`` has a sidecar ``NAME.sha256`` written after it; an entry is used
only when its SHA-256 matches the sidecar, else it is made again and rewritten. Both files are
written to a temporary name and moved into place (``os.replace``, atomic on POSIX and Windows),
so a crash or a concurrent job never leaves a half-written entry in use. The hash catches
truncation and corruption; against another user planting a matching pair, the rule OpenSSH's
``StrictModes`` applies (as the galleries do, :mod:`pyfacematch.gallery.filemodes`) is applied on
POSIX: the folder must be the user's own and writable by no one else (or sticky, as ``/tmp``), the
entry and its sidecar the user's own and writable by no one else; otherwise the cache is not used.
New folders are made ``0700``, entries ``0600``. A cache that cannot be written (read-only home,
full disk) or is not trusted is skipped silently: the model is then made in memory every time, as
without a cache.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["cache_dir", "cached_bytes", "cached_file"]


def cache_dir() -> Path | None:
    """The folder of the model cache, or None when it is disabled (``PYFACEMATCH_CACHE_DIR=off``)."""
    env = os.environ.get("PYFACEMATCH_CACHE_DIR")
    if env:
        return None if env.strip().lower() == "off" else Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:  # XDG Base Directory Specification 0.8: $XDG_CACHE_HOME, else $HOME/.cache
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "pyfacematch" / "models"


def _private(st: os.stat_result) -> bool:
    """Owned by this user and writable by no one else (always true where there are no uids)."""
    if not hasattr(os, "getuid"):
        return True
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _trusted_folder(folder: Path) -> bool:
    try:
        st = folder.stat()
    except OSError:
        return False
    return _private(st) or bool(st.st_mode & stat.S_ISVTX)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_checked(path: Path) -> bytes | None:
    """The entry's bytes when it exists and matches its sidecar, else None."""
    side = path.with_name(path.name + ".sha256")
    try:
        if not (_private(path.stat()) and _private(side.stat())):
            return None
        want = side.read_text("ascii").strip()
        data = path.read_bytes()
    except (OSError, UnicodeDecodeError):
        return None
    return data if _sha256(data) == want else None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _store(path: Path, data: bytes) -> bool:
    """Write an entry and then its sidecar; False when the cache cannot be written."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _trusted_folder(path.parent):
            return False
        _write_atomic(path, data)
        _write_atomic(path.with_name(path.name + ".sha256"), (_sha256(data) + "\n").encode())
    except OSError:
        return False
    return True


def cached_bytes(name: str, make: Callable[[], bytes]) -> bytes:
    """The bytes cached under ``name``, or ``make()`` (stored for next time).

    Parameters
    ----------
    name : str
        File name of the entry; it must change whenever what ``make`` returns would (put the
        versions of its inputs in it).
    make : callable
        Returns the bytes when the entry is missing or fails its check.
    """
    folder = cache_dir()
    if folder is None or (folder.exists() and not _trusted_folder(folder)):
        return make()
    path = folder / name
    data = _read_checked(path)
    if data is None:
        data = make()
        _store(path, data)
    return data


def cached_file(name: str, make: Callable[[], bytes]) -> Path | None:
    """:func:`cached_bytes` for loaders that take a path: the checked entry's path.

    Returns None when the cache is disabled or cannot be written; the caller then makes the
    model its usual way.
    """
    folder = cache_dir()
    if folder is None or (folder.exists() and not _trusted_folder(folder)):
        return None
    path = folder / name
    if _read_checked(path) is not None:
        return path
    return path if _store(path, make()) else None
