"""Records to templates: the readers of a job's input, landmarks → keys, images → embeddings.

A job reads its input through a reader (:class:`~pyfacematch.io.RecordReader` for files of
templates or landmarks, :class:`~pyfacematch.io.ImageFolderReader` for folders of face images,
embedded on the fly) chosen by :func:`open_reader` from a :class:`Source`. Landmarks become keys
with a :class:`~pyfacematch.keys.KeyModel` (:func:`encode_chunk`); a face that cannot make a key
becomes a reject, or stops the job naming its row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.gallery import Gallery
from pyfacematch.io import Chunk, ImageFolderReader, RecordReader, Reject
from pyfacematch.keys import KeyModel

__all__ = [
    "Source",
    "check_key_model",
    "default_threshold",
    "encode_chunk",
    "input_fingerprint",
    "load_key_model",
    "open_reader",
    "reject",
    "templates_of",
]

#: Largest chunk of images embedded at once (embedding is slow; progress stays lively).
IMAGE_CHUNK = 256


@dataclass(frozen=True)
class Source:
    """What a job reads: one file of records, or one folder of face images.

    Attributes
    ----------
    input : str or None
        File of templates or landmarks (``"-"``: standard input).
    images : str or None
        Folder of face images instead of ``input``.
    embedder : str
        Image embedder spec (``"dlib"``, ``"dlib:cnn"``, ``"onnx:<model.onnx>"``).
    landmarker : str or None
        Images with a key model: the landmarker that finds their points (``"mediapipe"``,
        ``"dlib"``); None picks the one whose points the key model's scheme takes.
    workers : int
        Images with an embedder: worker processes (1: in this process; 0: one per core).
    input_format : str or None
        ``npy``, ``npz``, ``parquet``, ``csv`` or ``jsonl``; None: from the file ending.
    id_field : str
        Id column / field.
    chunk_size : int
        Records read, processed and written at a time.
    on_error : {"stop", "skip"}
        A bad record stops the job naming its row, or goes to the rejects.
    """

    input: str | None = None
    images: str | None = None
    embedder: str = "dlib"
    landmarker: str | None = None
    workers: int = 1
    input_format: str | None = None
    id_field: str = "id"
    chunk_size: int = 10_000
    on_error: str = "stop"

    @property
    def name(self) -> str:
        """The input as the user gave it (file or folder)."""
        return str(self.input if self.input is not None else self.images)


def load_key_model(path: str | os.PathLike[str] | None) -> KeyModel | None:
    """The key model saved at ``path`` (None: no key model, the input holds templates)."""
    if path is None:
        return None
    if not os.path.exists(path):
        raise InputError(f"key model {os.fspath(path)!r} does not exist")
    return KeyModel.load(path)


def check_key_model(km: KeyModel | None, g: Gallery | None) -> None:
    """Refuse a key model whose keys do not fit the gallery (dimension and region blocks)."""
    if km is None or g is None:
        return
    if g.dim != km.dim or g.blocks is None or not np.array_equal(g.blocks, km.blocks):
        raise InputError(
            f"the key model makes keys of dimension {km.dim} with {km.n_blocks} blocks, the "
            f"gallery holds dimension {g.dim} with "
            f"{'no' if g.blocks is None else g.blocks.size - 1} blocks: use the key model the "
            "gallery was enrolled with"
        )


def open_reader(
    source: Source,
    *,
    gallery: Gallery | None = None,
    key_model: KeyModel | None = None,
    fields: Sequence[str] = (),
    role: str = "probe",
    blocks: np.ndarray | None = None,
) -> RecordReader | ImageFolderReader:
    """The reader of a job's input.

    Parameters
    ----------
    source : Source
    gallery : Gallery or None
        The gallery searched or enrolled into (fixes the dimension and the region blocks);
        None for a gallery not created yet.
    key_model : KeyModel or None
        The input holds landmarks; keys are made with this model.
    fields : sequence of str
        Extra string fields carried with each record (``("claim",)``).
    role : {"enroll", "probe"}
        Image folders: ids are subfolder names (enroll) or relative paths (probe).
    blocks : int array or None
        Region-block offsets of a gallery about to be created (masks are then accepted).

    Raises
    ------
    InputError
        Neither or both of ``input`` and ``images``; images with a key model or a claim field;
        an embedder whose dimension is not the gallery's.
    """
    if (source.input is None) == (source.images is None):
        raise InputError("give exactly one of --input FILE or --images FOLDER")
    if source.images is not None:
        if fields:
            raise InputError("image folders carry no claim field: use --identity ID")
        if key_model is not None:
            return ImageFolderReader(
                source.images,
                None,
                role=role,
                chunk_size=min(source.chunk_size, IMAGE_CHUNK),
                on_error=source.on_error,
                landmarker=_landmarker(source, key_model),
                scheme=key_model.scheme,
            )
        if source.landmarker is not None:
            raise InputError(
                "--landmarker makes landmark keys: give the key model with --key-model"
            )
        from pyfacematch.embed import create_embedder

        # the reader keeps each photo's largest face (policy "largest"): dlib's HOG looks without
        # upsampling first (faces from about 80 px, a quarter of the work) and upsamples once
        # only when that finds none. On the 54 shared photos: rank-1 1.0 either way, the default
        # threshold still between every genuine and every impostor pair (tests/test_embed_dlib.py)
        opts = {"upsample": "auto"} if str(source.embedder).split(":")[0] == "dlib" else {}
        emb = create_embedder(source.embedder, workers=source.workers, **opts)
        if gallery is not None and int(emb.dim) != gallery.dim:
            raise InputError(
                f"the embedder {source.embedder!r} makes templates of dimension {emb.dim}, the "
                f"gallery holds dimension {gallery.dim}: use the embedder it was enrolled with"
            )
        return ImageFolderReader(
            source.images,
            emb,
            role=role,
            chunk_size=min(source.chunk_size, IMAGE_CHUNK),
            on_error=source.on_error,
        )
    nb = None
    if gallery is not None and gallery.blocks is not None:
        nb = int(gallery.blocks.size - 1)
    elif gallery is None and blocks is not None:  # a new gallery of masked templates
        nb = int(np.asarray(blocks).size - 1)
    return RecordReader(
        str(source.input),
        "landmarks" if key_model is not None else "templates",
        source.input_format,
        dim=None if gallery is None or key_model is not None else gallery.dim,
        points=None if key_model is None else key_model.scheme.n_points,
        n_blocks=nb,
        id_field=source.id_field,
        fields=fields,
        chunk_size=source.chunk_size,
        on_error=source.on_error,
    )


def _landmarker(source: Source, km: KeyModel) -> Any:
    """The landmarker for a key model: the one asked for, or the one its scheme's points come from."""
    from pyfacematch.embed.landmarks import create_landmarker

    spec = source.landmarker
    if spec is None:
        s = km.scheme
        spec = "mediapipe" if "mediapipe478" in (s.name, s.subset_of) else "dlib"
        if spec == "dlib" and s.name != "ibug68":
            raise InputError(
                f"no landmarker gives the points of scheme {s.name!r}: images can make keys for "
                "the schemes ibug68 (--landmarker dlib), mediapipe478 and dense200 "
                "(--landmarker mediapipe)"
            )
    return create_landmarker(spec)


def default_threshold(
    reader: Any, resolved: tuple[float | None, str, float | None], kind: str
) -> tuple[float | None, str, float | None]:
    """The threshold of a job: ``resolved`` (explicit or calibrated), else, for images read with
    an embedder that has one, its default operating point (source ``"default-<model>"``, target
    the FMR it stands for; for 1:N the FPIR grows about with the gallery size times that FMR)."""
    if resolved[1] != "none" or getattr(reader, "embedder", None) is None:
        return resolved
    from pyfacematch.embed import default_operating_point

    op = default_operating_point(reader.embedder.name)
    if op is None:
        return resolved
    return op.threshold, f"default-{reader.embedder.name}", op.fmr


def input_fingerprint(source: Source, reader: Any) -> dict[str, Any]:
    """What identifies a job's input (file size and time; image list and embedder)."""
    from pyfacematch.jobs.runner import file_fingerprint

    if hasattr(reader, "fingerprint"):
        if getattr(reader, "landmarker", None) is not None:
            return {**reader.fingerprint(), "landmarker": reader.landmarker.scheme}
        return {**reader.fingerprint(), "embedder": source.embedder}
    return file_fingerprint(str(source.input))


def reject(chunk: Chunk, i: int, reason: str) -> Reject:
    """The reject of record ``i`` of ``chunk``."""
    return Reject(int(chunk.rows[i]), None, chunk.ids[i], reason)


def encode_chunk(
    km: KeyModel, chunk: Chunk, reader: Any
) -> tuple[Chunk, np.ndarray, np.ndarray, list[Reject]]:
    """Landmarks of a chunk → keys.

    Parameters
    ----------
    km : KeyModel
    chunk : Chunk
        ``values`` float (n, P, 2|3) landmarks, optional ``visibility`` bool (n, P).
    reader : RecordReader
        Its ``on_error`` decides whether a face that cannot make a key stops the job
        (:class:`InputError` naming the row) or becomes a reject.

    Returns
    -------
    chunk : Chunk
        The records that made a key.
    keys : float32 (m, km.dim)
    masks : uint64 (m,)
        Valid region blocks of each key.
    rejects : list of Reject
        The faces that made no key, with the reason.
    """
    lm = chunk.values
    if lm.shape[0] == 0:
        return chunk, np.zeros((0, km.dim), np.float32), np.zeros(0, np.uint64), []
    if lm.shape[2] != km.dims:
        if lm.shape[2] == 3 and km.dims == 2:
            lm = np.ascontiguousarray(lm[:, :, :2])
        else:
            raise InputError(
                f"{reader.name}: landmarks have {lm.shape[2]} coordinates per point, the key "
                f"model takes {km.dims}"
            )
    keys, masks, status = km.encode(lm, chunk.visibility, on_error="flag", return_status=True)
    bad = np.flatnonzero(status)
    if bad.size == 0:
        return chunk, keys, masks, []
    reasons = km.reasons(status[bad])
    rej = [
        reject(chunk, i, f"landmarks cannot make a key: {why}")
        for i, why in zip(bad.tolist(), reasons)
    ]
    if reader.on_error == "stop":
        raise reader.fail(rej[0])
    keep = status == 0
    return chunk.select(keep), keys[keep], masks[keep], rej


def templates_of(
    chunk: Chunk, km: KeyModel | None, reader: Any
) -> tuple[Chunk, np.ndarray, np.ndarray | None, list[Reject]]:
    """The templates of a chunk: its values, or the keys of its landmarks (see :func:`encode_chunk`)."""
    if km is not None:
        return encode_chunk(km, chunk, reader)
    return chunk, chunk.values, chunk.masks, []
