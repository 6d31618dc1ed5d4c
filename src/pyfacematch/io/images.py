"""Folders of face images read like a table of templates: each image embedded by ``embed``,
or like a table of landmarks: each image's points found by a landmarker (keys are made above).

``io`` owns the listing order, ids, chunking and rejects; decoding images, finding faces and
embedding them belong to :mod:`pyfacematch.embed`, which this module only calls.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.io.records import Chunk, Reject

__all__ = ["ImageFolderReader"]


class ImageFolderReader:
    """Face images of a folder, embedded chunk by chunk (same interface as :class:`RecordReader`).

    Layout ``folder/<identity>/<image>`` (enrollment: the identity is the
    subfolder) or any folder of probe images (the probe id is the path relative
    to the folder). Images are listed in sorted order, so chunk boundaries are
    fixed and a job over a folder can be resumed. An image without a usable face
    (unreadable, no face, several faces with the ``single`` policy …) is a
    reject whose reason is the embedder's failure reason.

    Parameters
    ----------
    folder : path
    embedder : pyfacematch.embed.Embedder
    role : {"enroll", "probe"}
        Where ids come from (subfolder name, or relative path).
    chunk_size : int
    on_error : {"stop", "skip"}
    policy : str
        Face policy of the embedder (``"largest"``).
    landmarker : pyfacematch.embed.landmarks.Landmarker or None
        Read landmarks instead of templates (``embedder`` is then None): the points of the largest
        face, in the layout of ``scheme``.
    scheme : Scheme or None
        The key model's scheme (with ``landmarker``): the landmarker's own, or a subset of it.
    """

    fmt = "images"

    def __init__(
        self,
        folder: str | os.PathLike[str],
        embedder: Any,
        *,
        role: str = "probe",
        chunk_size: int = 256,
        on_error: str = "stop",
        policy: str = "largest",
        landmarker: Any = None,
        scheme: Any = None,
    ) -> None:
        from pyfacematch.embed import list_images  # lazily: embedding pulls in image libraries

        if not os.path.isdir(folder):
            raise InputError(
                f"image folder {os.fspath(folder)!r} does not exist or is not a folder"
            )
        if on_error not in ("stop", "skip"):
            raise InputError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
        self.path = os.fspath(folder)
        self.name = self.path
        if (embedder is None) == (landmarker is None):
            raise InputError("an image folder is read with an embedder or with a landmarker")
        if landmarker is not None and scheme is None:
            raise InputError("reading landmarks from images needs the key model's scheme")
        self.embedder = embedder
        self.landmarker = landmarker
        self.scheme = scheme
        self.kind = "templates" if landmarker is None else "landmarks"
        self.role = role
        self.chunk_size = int(chunk_size)
        self.on_error = on_error
        self.policy = policy
        self.entries = list_images(folder)
        self.dim = int(embedder.dim) if embedder is not None else 0
        self.has_masks = False
        self.total = len(self.entries)

    def count_records(self) -> int:
        return len(self.entries)

    def fingerprint(self) -> dict[str, Any]:
        """Folder, and a digest of the listed files' names, sizes and modification times."""
        h = hashlib.sha256()
        for ident, p in self.entries:
            st = os.stat(p)
            h.update(f"{ident}\0{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {
            "path": os.path.abspath(self.path),
            "files": len(self.entries),
            "digest": h.hexdigest(),
        }

    def where(self, row: int, line: int | None) -> str:
        return f"{self.name} image {row}"

    def fail(self, rej: Reject) -> InputError:
        return InputError(
            f"{self.where(rej.row, None)} ({rej.id}): {rej.reason}; pass --on-error skip to write "
            "images without a usable face to a rejects file and go on"
        )

    def close(self) -> None:
        pass

    def _results(self, paths: list[Any]) -> list[Any]:
        if self.landmarker is None:
            return self.embedder.embed(paths, policy=self.policy).images
        from pyfacematch.embed.landmarks import landmarks_for_scheme

        out = self.landmarker.landmarks(paths, policy=self.policy)
        for r in out:
            if r.ok:
                r.landmarks = landmarks_for_scheme(r.landmarks, self.landmarker.scheme, self.scheme)
        return out

    def _empty(self) -> np.ndarray:
        if self.landmarker is None:
            return np.zeros((0, self.dim), np.float32)
        return np.zeros((0, self.scheme.n_points, self.scheme.dims), np.float32)

    def chunks(self, skip_chunks: int = 0) -> Iterator[Chunk]:
        base = Path(self.path)
        for ci in range(skip_chunks, -(-len(self.entries) // self.chunk_size)):
            a = ci * self.chunk_size
            part = self.entries[a : a + self.chunk_size]
            batch = self._results([p for _, p in part])
            ids: list[str] = []
            rows: list[int] = []
            vals: list[np.ndarray] = []
            rejects: list[Reject] = []
            for j, ((ident, p), res) in enumerate(zip(part, batch)):
                rid = ident if self.role == "enroll" else Path(p).relative_to(base).as_posix()
                got = res.templates if self.landmarker is None else res.landmarks
                if res.ok and len(got):
                    ids.append(rid)
                    rows.append(a + j + 1)
                    vals.append(np.asarray(got[0], np.float32))
                else:
                    rej = Reject(a + j + 1, None, rid, f"{res.reason}: {res.message}".rstrip(": "))
                    if self.on_error == "stop":
                        raise self.fail(rej)
                    rejects.append(rej)
            yield Chunk(
                ci,
                a,
                len(part),
                ids,
                np.asarray(rows, np.int64),
                np.stack(vals) if vals else self._empty(),
                None,
                None,
                {},
                rejects,
            )
