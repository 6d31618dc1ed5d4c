"""Owner-only modes for the files and folders that hold biometric data.

A gallery's database, its ``-wal`` and ``-shm`` files, its index folder and
the checkpoint files in it hold templates: they are created readable and
writable by their owner only (files ``0600``, folders ``0700``) whatever the
process umask, because a umask of ``022`` (the usual default) would otherwise
make them world-readable. The mode is given at creation *and* set again with
``chmod`` (a creation mode is only ever narrowed by the umask, never widened,
but an explicit ``chmod`` makes the result independent of it).
Existing files are never loosened; see :func:`tighten`. An existing file or
folder that other users can *write* is refused instead (:func:`refuse_shared_writes`):
someone may already have altered it, so tightening it silently would hide that.
The folder that holds a gallery is checked too (:func:`refuse_unsafe_folder`):
whoever can write a folder can replace or pre-create the files in it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

from pyfacematch.errors import UnsafePermissionsError

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "create_private_file",
    "make_private_dir",
    "refuse_shared_writes",
    "refuse_unsafe_folder",
    "shared_bits",
    "sqlite_files",
    "tighten",
]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def sqlite_files(db: str | os.PathLike[str]) -> list[Path]:
    """The database file and its ``-wal`` / ``-shm`` companions (existing or not)."""
    p = Path(db)
    return [p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")]


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Create an empty file readable and writable by its owner only.

    Raises
    ------
    FileExistsError
        The path exists (it is never truncated or re-moded here).
    OSError
        The folder is missing or not writable.
    """
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def make_private_dir(path: str | os.PathLike[str]) -> None:
    """Create a folder ``0700`` (if missing); tighten it if it is ours and wider."""
    p = Path(path)
    with contextlib.suppress(FileExistsError):
        p.mkdir(mode=PRIVATE_DIR)
    tighten(p, PRIVATE_DIR)


def shared_bits(path: str | os.PathLike[str]) -> int:
    """The group/other permission bits of ``path`` (0 when missing or owner-only)."""
    try:
        return os.stat(path).st_mode & 0o077
    except OSError:
        return 0


def tighten(path: str | os.PathLike[str], mode: int = PRIVATE_FILE) -> bool:
    """Remove group/other permissions from a file or folder owned by this user.

    Never follows a symlink, never changes files owned by someone else, never
    adds permissions. Returns True when the mode was changed.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return False
    want = stat.S_IMODE(st.st_mode) & mode
    if want == stat.S_IMODE(st.st_mode):
        return False
    try:
        os.chmod(path, want)
    except OSError:  # pragma: no cover - e.g. a read-only file system
        return False
    return True


def refuse_shared_writes(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse files or folders (not followed if symlinks) that group or others can write.

    Missing paths are skipped. Raises
    :class:`~pyfacematch.errors.UnsafePermissionsError` naming the ``chmod`` to run.
    """
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o022:
            continue
        folder = stat.S_ISDIR(st.st_mode)
        p = os.fspath(path)
        raise UnsafePermissionsError(
            f"{'folder' if folder else 'file'} {p!r} of the gallery has mode "
            f"{stat.S_IMODE(st.st_mode):o}: other users can write it, so its templates, keys or "
            "audit trail may have been altered; refused (nothing was opened or changed). Check "
            f"it (`pyfacematch audit verify`), then run `chmod {'700' if folder else '600'} {p}`"
        )


def _private_group(gid: int) -> bool:
    """The group is this user's own: their primary group, with no other member listed.

    Debian/Ubuntu-style "user private groups" make folders group-writable by
    default (umask 002); such a group holds nobody else, so its write bit is safe.
    """
    if sys.platform == "win32":  # pragma: no cover - POSIX modes only
        return True
    import grp
    import pwd

    try:
        me = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    if gid != me.pw_gid:
        return False
    if any(m != me.pw_name for m in group.gr_mem):
        return False
    # No other account may have it as its primary group either.
    return all(p.pw_gid != gid or p.pw_uid == me.pw_uid for p in pwd.getpwall())


def refuse_unsafe_folder(
    file: str | os.PathLike[str], companions: Iterable[str | os.PathLike[str]] = ()
) -> None:
    """Refuse a gallery whose folder lets other users replace or plant its files.

    The rule is the one OpenSSH's ``StrictModes`` and ``sudo`` apply to the
    folders above a secret: a folder that another user can write may have had
    any file in it swapped (a write bit on a folder allows ``rename`` and
    ``unlink`` of files one does not own), so the gallery is refused when its
    folder is writable by others, or by a group that holds other users,
    unless the folder has the sticky bit (``/tmp``-like: others cannot then
    replace files they do not own). In a sticky shared folder anyone can still
    *create* a name first (a ``-wal``, a lock file, a key file), so every
    existing companion in ``companions`` must then belong to this user.
    Missing folders are left to the caller's own error. Raises
    :class:`~pyfacematch.errors.UnsafePermissionsError` saying what to run.
    """
    if sys.platform == "win32":  # pragma: no cover - POSIX modes only
        return
    folder = Path(os.path.abspath(os.fspath(file))).parent
    try:
        st = os.stat(folder)
    except OSError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o022:
        return
    if mode & stat.S_ISVTX:
        me = os.geteuid()
        for c in companions:
            try:
                cst = os.lstat(c)
            except OSError:
                continue
            if cst.st_uid != me:
                raise UnsafePermissionsError(
                    f"{os.fspath(c)!r} is in the shared folder {os.fspath(folder)!r} (mode "
                    f"{mode:o}) and belongs to another user (uid {cst.st_uid}): anyone can plant "
                    "a file there before the gallery creates it; refused (nothing was opened or "
                    "changed). Keep galleries in a folder only you can write "
                    "(`mkdir -m 700 DIR`) and move the gallery there"
                )
        return
    group_unsafe = bool(mode & 0o020) and not _private_group(st.st_gid)
    if mode & 0o002 or group_unsafe:
        who = "all users" if mode & 0o002 else f"group {st.st_gid}, which holds other users"
        fix = ("g" if group_unsafe else "") + ("o" if mode & 0o002 else "") + "-w"
        raise UnsafePermissionsError(
            f"the folder {os.fspath(folder)!r} of gallery {os.fspath(file)!r} has mode {mode:o}: "
            f"{who} can write it, so they could replace the gallery's files; refused (nothing "
            f"was opened or changed). Run `chmod {fix} {os.fspath(folder)}`, or keep the gallery "
            "in a folder only you can write"
        )
