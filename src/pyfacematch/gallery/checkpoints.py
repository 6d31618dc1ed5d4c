"""Index checkpoint files: writing, finding, verifying and deleting them.

A checkpoint is a serialized FAISS index kept in the folder ``<db>.index``
beside the gallery database, so a large index need not be rebuilt at every
open. The store records which file belongs to which backend, the store
generation and template ids it reflects, and its checksum; a file that does
not match in every respect is not used (the index is rebuilt from the store,
which is always possible).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path

from pyfacematch.errors import GalleryFileError
from pyfacematch.gallery import atomic, filemodes
from pyfacematch.gallery.store import CheckpointRecord, Store, digest_tids
from pyfacematch.index import TemplateMatrix

__all__ = ["CheckpointFiles"]

log = logging.getLogger("pyfacematch.gallery")


class CheckpointFiles:
    """The checkpoint files of one gallery.

    Parameters
    ----------
    store : Store
        The gallery's store (records of the files).
    index_dir : Path or None
        Folder of the files (None: in-memory gallery, nothing is written).
    """

    def __init__(self, store: Store, index_dir: Path | None) -> None:
        self.store = store
        self.index_dir = index_dir

    def read(self, backend: str, m: TemplateMatrix) -> tuple[CheckpointRecord, bytes] | None:
        """The recorded checkpoint of ``backend`` and its verified bytes, or None.

        None (with a log line saying why) when there is no record, or it
        reflects another store state, or the file is missing or corrupted.
        """
        rec = self.store.get_checkpoint(backend)
        if rec is None or self.index_dir is None:
            return None
        why = None
        if rec.generation != self.store.generation:
            why = f"generation {rec.generation} ≠ store {self.store.generation}"
        elif rec.n_templates != m.n:
            why = f"{rec.n_templates} templates ≠ store {m.n}"
        elif rec.digest != digest_tids(m.tids[: m.n]):
            why = "template-id digest differs from the store"
        data = b""
        if why is None:
            try:
                data = atomic.read_verified(self.index_dir / rec.file, rec.sha256)
            except GalleryFileError as exc:
                why = str(exc)
        if why is not None:
            self.reject(rec.file, why)
            return None
        return rec, data

    @staticmethod
    def reject(file: str, why: str) -> None:
        """Log that a checkpoint file is not used and why."""
        log.warning("index checkpoint %s not used (%s): rebuilding from the store", file, why)

    def write(
        self, backend: str, data: bytes, generation: int, n: int, digest: str, params: dict
    ) -> None:
        """Write a new checkpoint file atomically, record it, delete every other one."""
        d = self.index_dir
        if d is None:
            return
        filemodes.make_private_dir(d)  # 0700 whatever the umask: the files hold templates
        fname = f"{backend}-g{generation}-{uuid.uuid4().hex[:8]}.faiss"
        sha = atomic.atomic_write(d / fname, data)
        old = self.store.checkpoint_files()
        self.store.delete_checkpoints()
        self.store.set_checkpoint(
            CheckpointRecord(backend, fname, sha, generation, n, digest, params)
        )
        for f in set(old) - {fname}:
            _unlink_file(d / f)
        self._clean({fname})

    def drop(self) -> None:
        """Forget every checkpoint record and delete the files they named."""
        files = self.store.delete_checkpoints()
        d = self.index_dir
        if d is None:
            return
        for f in files:  # called after a committed removal: log, never raise
            _unlink_file(d / f)
        if files:
            atomic.fsync_dir(d)

    def _clean(self, keep: set[str]) -> None:
        d = self.index_dir
        if d is None or not d.is_dir():
            return
        for f in d.iterdir():
            if f.name not in keep:
                with contextlib.suppress(OSError):
                    f.unlink()
        atomic.fsync_dir(d)


def _unlink_file(path: Path) -> None:
    """Delete a checkpoint file; log (never raise) when it is missing, not a file, or refused.

    Used after the store has forgotten the file (a committed removal or a new
    checkpoint): an error here must not be reported as a failed operation. A
    folder or other non-file where a checkpoint file is expected is left alone.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning(
            "stale checkpoint %s could not be deleted (%s): it is no longer used; "
            "delete it by hand if it is a file this gallery wrote",
            os.fspath(path),
            exc.strerror or exc,
        )
