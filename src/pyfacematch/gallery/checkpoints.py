"""Index checkpoint files: writing, finding, authenticating and deleting them.

A checkpoint is a serialized FAISS index kept in the folder ``<db>.index``
beside the gallery database, so a large index need not be rebuilt at every
open. Everything about these files is distrusted, because the database that
records them may have been crafted:

- **Names only.** The gallery writes files named ``<backend>-g<generation>-<8 hex>.faiss``
  (temporary files: that name plus ``.tmp-<pid>``) and touches nothing else. A
  name read from the store is used only if it matches that pattern exactly; it
  is then resolved inside the index folder through a descriptor of the folder,
  without following symlinks. A folder that is itself a symlink is not used.
- **Authenticated.** Each file carries an HMAC-SHA256 (recorded in the store)
  under the gallery's secret key (:mod:`pyfacematch.gallery.secret`), which the
  database does not hold; the MAC also covers the record (gallery uuid,
  backend, generation, template count and digest, parameters, size).
- **Bounded.** Before reading, the file must be a regular file (opened with
  ``O_NONBLOCK``, so a FIFO cannot hang the open) of exactly the recorded size,
  and that size must be plausible for the number of templates in the store; it
  is hashed while it is read.
- **Swept.** Stray checkpoint files and temporary files (a crash during a
  write leaves ``*.faiss.tmp-<pid>`` holding every template) are deleted when a
  writable gallery opens and before an erasure is reported complete.

Any mismatch means the file is not used: the index is rebuilt from the store
(always possible) and the reason is logged.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import logging
import os
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from pyfacematch.errors import GalleryFileError
from pyfacematch.gallery.secret import KeyProvider, new_mac
from pyfacematch.gallery.store import CheckpointRecord, Store, digest_tids
from pyfacematch.index import TemplateMatrix

__all__ = ["CHECKPOINT_NAME", "TEMP_NAME", "CheckpointFiles", "max_checkpoint_bytes"]

log = logging.getLogger("pyfacematch.gallery")

#: Names of the checkpoint files a gallery writes (nothing else is ever deleted).
CHECKPOINT_NAME = re.compile(r"[a-z0-9]{1,16}-g[0-9]{1,19}-[0-9a-f]{8}\.faiss")
#: Names of their temporary files while being written.
TEMP_NAME = re.compile(CHECKPOINT_NAME.pattern + r"\.tmp-[0-9]{1,10}")
_MAC_FIELD = re.compile(r"hmac-sha256:([0-9]{1,19}):([0-9a-f]{64})")
_CHUNK = 1 << 20
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def max_checkpoint_bytes(n_templates: int, dim: int) -> int:
    """Largest plausible checkpoint of ``n_templates`` templates of ``dim`` floats.

    Generous for every FAISS backend (vectors, ids, graph links, centroids):
    64 MiB plus 4·dim + 2 KiB per template.
    """
    return (64 << 20) + int(n_templates) * (4 * int(dim) + 2048)


def _write_error(folder: Path | None, exc: OSError) -> GalleryFileError:
    """A typed error for a checkpoint that could not be written (nothing committed is lost)."""
    where = os.fspath(folder) if folder is not None else "the index folder"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = "the disk is full (or over quota / file-size limit): free disk space"
    elif exc.errno == errno.EROFS:
        what = "the file system is read-only: remount it read-write"
    else:
        what = "check the folder's permissions and free disk space"
    return GalleryFileError(
        f"could not write an index checkpoint in {where} ({exc.strerror or exc}): {what}. "
        "Nothing enrolled was lost: the store is intact and the index is rebuilt from it at "
        "the next open"
    )


class CheckpointFiles:
    """The checkpoint files of one gallery.

    Parameters
    ----------
    store : Store
        The gallery's store (records of the files).
    index_dir : Path or None
        Folder of the files (None: in-memory gallery, nothing is written).
    keys : KeyProvider or None
        The gallery's secret key (None: in-memory gallery).
    writable : bool
        False for read-only galleries: nothing is written or deleted.
    """

    def __init__(
        self,
        store: Store,
        index_dir: Path | None,
        keys: KeyProvider | None,
        *,
        writable: bool = True,
    ) -> None:
        self.store = store
        self.index_dir = index_dir
        self.keys = keys
        self.writable = writable
        #: Why the last :meth:`read` returned None (None when a file was used).
        self.last_rejection: str | None = None

    # ------------------------------------------------------------------ folder
    @contextlib.contextmanager
    def _folder(self, create: bool = False) -> Iterator[int | None]:
        """A descriptor of the index folder, or None when it is missing or not trustworthy."""
        d = self.index_dir
        if d is None:
            yield None
            return
        p = os.fspath(d)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            if not create:
                yield None
                return
            with contextlib.suppress(FileExistsError):
                os.mkdir(p, 0o700)
            st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            log.warning(
                "index folder %s is a symlink or not a folder: it is not used and nothing in it "
                "is read or deleted; move it away to let the gallery write checkpoints again",
                p,
            )
            yield None
            return
        fd = os.open(p, _O_DIR)
        try:
            yield fd
        finally:
            os.close(fd)

    def _unlink(self, dfd: int, name: str) -> bool:
        """Delete ``name`` in the folder if it is one of ours and a regular file."""
        if not (CHECKPOINT_NAME.fullmatch(name) or TEMP_NAME.fullmatch(name)):
            log.warning("not deleting %r: not a file name the gallery writes", name)
            return False
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            log.warning("not deleting %r in the index folder: not a regular file", name)
            return False
        try:
            os.unlink(name, dir_fd=dfd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("could not delete index file %r: %s", name, exc.strerror or exc)
            return False
        return True

    # ------------------------------------------------------------------ read
    def read(
        self, backend: str, m: TemplateMatrix, dim: int
    ) -> tuple[CheckpointRecord, bytes] | None:
        """The recorded checkpoint of ``backend`` and its authenticated bytes, or None.

        None (reason in :attr:`last_rejection` and the log) when there is no
        record, or it reflects another store state, or its name, type, size or
        MAC is wrong, or there is no key.
        """
        self.last_rejection = None
        rec = self.store.get_checkpoint(backend)
        if rec is None or self.index_dir is None or self.keys is None:
            self.last_rejection = "no checkpoint recorded"
            return None
        why, data = self._check(rec, backend, m, dim)
        if why is not None:
            self.reject(rec.file, why)
            return None
        return rec, data

    def _check(
        self, rec: CheckpointRecord, backend: str, m: TemplateMatrix, dim: int
    ) -> tuple[str | None, bytes]:
        gen = self.store.generation
        if not isinstance(rec.file, str) or not CHECKPOINT_NAME.fullmatch(rec.file):
            return f"recorded name {rec.file!r} is not a file name the gallery writes", b""
        if not rec.file.startswith(backend + "-"):
            return f"recorded name {rec.file!r} belongs to another backend", b""
        if rec.generation != gen:
            return f"generation {rec.generation} ≠ store {gen}", b""
        if rec.n_templates != m.n:
            return f"{rec.n_templates} templates ≠ store {m.n}", b""
        if rec.digest != digest_tids(m.tids[: m.n]):
            return "template-id digest differs from the store", b""
        f = _MAC_FIELD.fullmatch(str(rec.sha256))
        if f is None:
            return "no MAC recorded (written by an older version, or tampered with)", b""
        size, mac = int(f.group(1)), f.group(2)
        limit = max_checkpoint_bytes(m.n, dim)
        if size > limit:
            return f"recorded size {size} bytes exceeds {limit} for {m.n} templates", b""
        try:
            key = self.keys.key(create=False)  # type: ignore[union-attr]
        except GalleryFileError as exc:
            return f"gallery key unusable: {exc}", b""
        if key is None:
            return f"no gallery key ({self.keys.description})", b""  # type: ignore[union-attr]
        h = new_mac(
            key,
            *self._header(
                rec.backend, rec.file, gen, rec.n_templates, rec.digest, rec.params, size
            ),
        )
        with self._folder() as dfd:
            if dfd is None:
                return "index folder missing, a symlink or not a folder", b""
            try:
                fd = os.open(rec.file, os.O_RDONLY | os.O_NONBLOCK | _O_NOFOLLOW, dir_fd=dfd)
            except OSError as exc:
                return f"cannot open it ({exc.strerror or exc}; symlinks are refused)", b""
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return "not a regular file", b""
                if st.st_size != size:
                    return f"{st.st_size} bytes on disk, {size} recorded", b""
                buf = bytearray(size)
                view = memoryview(buf)
                got = 0
                while got < size:
                    k = os.readv(fd, [view[got : got + _CHUNK]])
                    if k <= 0:
                        return f"file ended after {got} of {size} bytes", b""
                    h.update(view[got : got + k])
                    got += k
            except OSError as exc:
                return f"cannot read it ({exc.strerror or exc})", b""
            finally:
                os.close(fd)
        if not hmac.compare_digest(h.hexdigest(), mac):
            return (
                "it fails its checksum: the HMAC-SHA256 does not match (altered, or another key)",
                b"",
            )
        return None, bytes(buf)

    def reject(self, file: str, why: str) -> None:
        """Log that a checkpoint file is not used and why."""
        self.last_rejection = why
        log.warning("index checkpoint %r not used (%s): rebuilding from the store", file, why)

    def _header(
        self,
        backend: str,
        fname: str,
        generation: int,
        n: int,
        digest: str,
        params: dict,
        size: int,
    ) -> tuple[bytes, ...]:
        return (
            b"pyfacematch-checkpoint-v1",
            self.store.get_meta("uuid").encode(),
            backend.encode(),
            fname.encode(),
            str(int(generation)).encode(),
            str(int(n)).encode(),
            digest.encode(),
            json.dumps(params, sort_keys=True).encode(),
            str(int(size)).encode(),
        )

    # ------------------------------------------------------------------ write
    def write(
        self, backend: str, data: bytes, generation: int, n: int, digest: str, params: dict
    ) -> str | None:
        """Write a new checkpoint atomically, record it with its MAC, delete every other one.

        Returns the file name, or None when no checkpoint can be written (no
        trustworthy index folder; logged).
        """
        if self.index_dir is None or self.keys is None or not self.writable:
            return None
        key = self.keys.key(create=True)
        if key is None:  # pragma: no cover - create=True always gives a key
            return None
        view = memoryview(data).cast("B")
        fname = f"{backend}-g{int(generation)}-{uuid.uuid4().hex[:8]}.faiss"
        mac = new_mac(key, *self._header(backend, fname, generation, n, digest, params, len(view)))
        mac.update(view)
        with self._folder(create=True) as dfd:
            if dfd is None:
                return None
            tmp = f"{fname}.tmp-{os.getpid()}"
            try:
                fd = os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600, dir_fd=dfd
                )
                try:
                    written = 0
                    while written < len(view):
                        written += os.write(fd, view[written:])
                    os.fsync(fd)
                except BaseException:
                    os.close(fd)
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=dfd)
                    raise
                os.close(fd)
                os.replace(tmp, fname, src_dir_fd=dfd, dst_dir_fd=dfd)
                os.fsync(dfd)
            except OSError as exc:
                raise _write_error(self.index_dir, exc) from exc
            self.store.delete_checkpoints()
            self.store.set_checkpoint(
                CheckpointRecord(
                    backend,
                    fname,
                    f"hmac-sha256:{len(view)}:{mac.hexdigest()}",
                    generation,
                    n,
                    digest,
                    params,
                )
            )
            self._sweep(dfd, keep={fname})
        return fname

    # ------------------------------------------------------------------ delete
    def drop(self) -> None:
        """Forget every checkpoint record and delete every checkpoint and temporary file.

        Used after an erasure (the files may hold erased templates). Never
        raises for a file: problems are logged.
        """
        if not self.writable:
            return
        self.sweep(keep=set())  # files first: they may hold erased templates
        self.store.delete_checkpoints()

    def sweep(self, keep: set[str]) -> int:
        """Delete the gallery's checkpoint and temporary files except ``keep``; return how many."""
        if not self.writable:
            return 0
        with self._folder() as dfd:
            if dfd is None:
                return 0
            return self._sweep(dfd, keep)

    def _sweep(self, dfd: int, keep: set[str]) -> int:
        gone = 0
        for name in os.listdir(dfd):
            if name in keep or not (CHECKPOINT_NAME.fullmatch(name) or TEMP_NAME.fullmatch(name)):
                continue
            gone += self._unlink(dfd, name)
        if gone:
            os.fsync(dfd)
        return gone
