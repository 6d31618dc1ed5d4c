"""The per-gallery secret that authenticates derived files (index checkpoints).

A checksum kept in the same database as the file's record guards only against
accidents: whoever can write the database can rewrite both. Checkpoints are
therefore authenticated with HMAC-SHA256 under a key the database does not
hold. A :class:`KeyProvider` supplies it; two are built in:

- :class:`EnvKeyProvider`: the environment variable ``PYFACEMATCH_GALLERY_KEY``
  (at least 32 characters; the same key for every gallery of the process);
- :class:`FileKeyProvider`: a key file beside the gallery, ``<db>.key``,
  created with mode 0600 (32 random bytes, hex) when the gallery is created,
  and refused when it is a symlink, not a regular file, not owned by the
  current user, or readable/writable by group or others.

:func:`key_provider_for` picks the environment variable when set, else the key
file. A key service can plug in later by implementing :class:`KeyProvider`.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Protocol

from pyfacematch.errors import KeyFileError

__all__ = [
    "ENV_VAR",
    "EnvKeyProvider",
    "FileKeyProvider",
    "KeyProvider",
    "key_provider_for",
    "new_mac",
]

#: Environment variable holding the gallery key (overrides the key file).
ENV_VAR = "PYFACEMATCH_GALLERY_KEY"
_MIN_KEY_CHARS = 32


class KeyProvider(Protocol):
    """Supplies the secret key of one gallery."""

    #: Where the key comes from, for messages (never the key itself).
    description: str

    def key(self, *, create: bool = False) -> bytes | None:
        """The key bytes; None when there is none and ``create`` is false.

        Raises
        ------
        KeyFileError
            The key exists but cannot be trusted or read.
        """
        ...


class EnvKeyProvider:
    """The key in the environment variable :data:`ENV_VAR`."""

    description = f"environment variable {ENV_VAR}"

    def key(self, *, create: bool = False) -> bytes | None:
        """The variable's value as UTF-8 bytes (at least 32 characters)."""
        value = os.environ.get(ENV_VAR)
        if value is None:
            return None
        if len(value) < _MIN_KEY_CHARS:
            raise KeyFileError(
                f"{ENV_VAR} holds {len(value)} characters, at least {_MIN_KEY_CHARS} are "
                'needed: set it to a long random value, e.g. `python -c "import secrets; '
                'print(secrets.token_hex(32))"`'
            )
        return value.encode("utf-8")


class FileKeyProvider:
    """The key in a file (mode 0600, owned by the current user).

    Parameters
    ----------
    path : Path
        The key file, usually ``<db>.key``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = f"key file {os.fspath(self.path)!r}"

    def key(self, *, create: bool = False) -> bytes | None:
        """The key in the file; created (0600, 32 random bytes) when missing and ``create``."""
        p = os.fspath(self.path)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            if not create:
                return None
            return self._create()
        except OSError as exc:
            raise KeyFileError(
                f"cannot open the gallery key file {p!r} ({exc.strerror or exc}): it must be a "
                "regular file, not a symlink; remove it to have a new key made (checkpoints "
                "are then rebuilt)"
            ) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyFileError(f"gallery key file {p!r} is not a regular file")
            if st.st_mode & 0o077:
                raise KeyFileError(
                    f"gallery key file {p!r} has mode {stat.S_IMODE(st.st_mode):o}: it must not "
                    f"be readable or writable by others; run `chmod 600 {p}`"
                )
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                raise KeyFileError(
                    f"gallery key file {p!r} belongs to user {st.st_uid}, not to you: refuse "
                    "to trust it; remove it to have a new key made"
                )
            if st.st_size > 4096:
                raise KeyFileError(f"gallery key file {p!r} is {st.st_size} bytes, not a key")
            raw = os.read(fd, 4096).strip()
        finally:
            os.close(fd)
        if len(raw) < _MIN_KEY_CHARS:
            raise KeyFileError(
                f"gallery key file {p!r} holds {len(raw)} bytes, at least {_MIN_KEY_CHARS} are "
                "needed: remove it to have a new key made"
            )
        return raw

    def _create(self) -> bytes:
        raw = secrets.token_hex(32).encode("ascii")
        p = os.fspath(self.path)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:  # created meanwhile by another process: use theirs
            got = self.key(create=False)
            if got is None:  # pragma: no cover - removed again in between
                raise KeyFileError(f"gallery key file {p!r} vanished while being created") from None
            return got
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, raw + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return raw


def key_provider_for(db_path: str | os.PathLike[str]) -> KeyProvider:
    """:class:`EnvKeyProvider` when :data:`ENV_VAR` is set, else ``<db>.key``."""
    if os.environ.get(ENV_VAR) is not None:
        return EnvKeyProvider()
    p = Path(db_path)
    return FileKeyProvider(p.with_name(p.name + ".key"))


def new_mac(key: bytes, *header: bytes) -> hmac.HMAC:
    """HMAC-SHA256 under ``key`` that has absorbed ``header`` (each part length-prefixed).

    Feed the file's bytes with ``update`` while streaming, then compare
    ``hexdigest()`` with :func:`hmac.compare_digest`.
    """
    h = hmac.new(key, digestmod="sha256")
    for part in header:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h
