"""Photo uploads: multipart bodies to templates, off the event loop and batched.

A request to identify / verify / enroll may send ``multipart/form-data`` with one or more
``image`` parts (JPEG, PNG, … anything Pillow reads) and its parameters as form fields, when the
server has an embedder (``--embedder dlib``). The photos are decoded, searched for faces,
aligned and embedded by :class:`~pyfacematch.embed.parallel.ParallelEmbedder` in worker
*processes* (dlib holds the GIL: in a thread it would stall the event loop); concurrent uploads
are gathered for at most ``max_wait_ms`` into one embed call (one message per worker chunk, the
descriptor network run on the chunk's faces together), and the templates then go through the
same batcher as template requests.

Guards, before any pixel is decoded: the body limit (``max_images`` × ``max_image_bytes``), the
size of each part (413), the pixel count read from the image header (413, decompression bombs,
:func:`~pyfacematch.embed.images.load_image`). Answers for photos that give no template, as
RFC 9457 problems: 415 ``not-an-image``, 413 ``image-too-large``, 422 ``unreadable-image``,
``no-face``, ``several-faces`` (``faces=single``, the default; ``faces=largest`` keeps the
largest face) and ``no-usable-face``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from pyfacematch.embed import ImageResult
from pyfacematch.embed.parallel import ParallelEmbedder
from pyfacematch.errors import DimensionError
from pyfacematch.serve.problems import HTTPProblem

__all__ = ["MULTIPART", "FACE_POLICIES", "PhotoEmbedder", "Upload", "read_upload", "to_templates"]

MULTIPART = "multipart/form-data"
#: ``faces`` form field: what to do with a photo holding several faces.
FACE_POLICIES = ("single", "largest")

# ImageResult.reason -> (status, problem slug, title)
_REASONS: dict[str, tuple[int, str, str]] = {
    "not_an_image": (415, "not-an-image", "Not an image"),
    "too_large": (413, "image-too-large", "Image too large"),
    "empty": (422, "unreadable-image", "Empty image"),
    "unreadable": (422, "unreadable-image", "Unreadable image"),
    "no_face": (422, "no-face", "No face found"),
    "several_faces": (422, "several-faces", "Several faces found"),
    "bad_landmarks": (422, "no-usable-face", "No usable face"),
    "bad_embedding": (422, "no-usable-face", "No usable face"),
}


@dataclass
class Upload:
    """A parsed multipart body: the form fields (strings) and the image parts (bytes)."""

    fields: dict[str, str]
    images: list[bytes]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


async def read_upload(
    body: bytes, headers: Headers, *, max_images: int, max_image_bytes: int
) -> Upload:
    """Parse an already size-limited multipart body (python-multipart, through Starlette).

    Raises
    ------
    HTTPProblem
        400 malformed multipart or no ``image`` part, 413 too many images or an image part
        over ``max_image_bytes``.
    """

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=max_images, max_fields=32).parse()
    except MultiPartException as exc:
        status = 413 if "Too many files" in exc.message else 400
        raise HTTPProblem(
            status,
            "malformed-multipart" if status == 400 else "too-many-images",
            "Bad multipart body",
            f"{exc.message} (send at most {max_images} 'image' parts and form fields)",
        ) from None
    fields: dict[str, str] = {}
    images: list[bytes] = []
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "image":
                    raise HTTPProblem(
                        400,
                        "malformed-multipart",
                        "Unexpected file part",
                        f"file parts are named 'image', got {key!r}",
                    )
                data = await value.read(max_image_bytes + 1)
                if len(data) > max_image_bytes:
                    raise HTTPProblem(
                        413,
                        "image-too-large",
                        "Image too large",
                        f"image part {len(images) + 1} is larger than the limit of "
                        f"{max_image_bytes} bytes: downscale it (a face needs ~150 × 150 pixels)",
                    )
                images.append(data)
            else:
                fields[key] = str(value)
    finally:
        await form.close()
    if not images:
        raise HTTPProblem(
            400,
            "malformed-multipart",
            "No image",
            "a multipart request needs at least one file part named 'image'",
        )
    return Upload(fields, images)


def to_templates(
    results: list[ImageResult], policy: str, dim: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One template per photo (the largest face), or the first failure as a problem.

    Parameters
    ----------
    results : list of ImageResult
        From an embed call with policy ``"all"`` (faces largest first).
    policy : {"single", "largest"}
        ``single``: a photo with several faces is refused (422 ``several-faces``).
    dim : int
        The gallery's template dimension (a different embedder dimension is a 422).

    Returns
    -------
    templates : numpy.ndarray
        (len(results), dim) float32.
    faces : list of dict
        Per photo: the face ``box`` (pixels, [left, top, right, bottom]), ``faces_found``,
        ``image_size`` — no biometric data.
    """
    rows: list[np.ndarray] = []
    faces: list[dict[str, Any]] = []
    for i, r in enumerate(results, 1):
        reason = r.reason
        if reason is None and policy == "single" and r.n_detected > 1:
            reason = "several_faces"
        if reason is not None:
            status, slug, title = _REASONS.get(reason, (422, "no-usable-face", "No usable face"))
            detail = {
                "several_faces": f"{r.n_detected} faces found in image {i}: send a photo of one "
                "person, or faces=largest to keep the largest face",
                "no_face": f"no face found in image {i}: send a frontal photo where the face is "
                "at least ~80 pixels wide",
                "too_large": f"image {i} is over this server's limits (max_image_pixels, "
                f"max_image_bytes): {r.message}",
            }.get(reason, f"image {i}: {r.message}")
            raise HTTPProblem(status, slug, title, detail)
        t = r.templates
        if t.shape[1] != dim:
            raise DimensionError(
                f"the server's embedder makes templates of dimension {t.shape[1]}, this gallery "
                f"holds dimension {dim}: serve this gallery with the embedder that built it"
            )
        rows.append(t[0])
        f = r.faces[0]
        faces.append(
            {
                "box": [float(v) for v in f.box],
                "faces_found": int(r.n_detected),
                "image_size": list(r.image_size) if r.image_size else None,
            }
        )
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32), faces


@dataclass
class _Pending:
    image: bytes
    future: asyncio.Future[ImageResult]


class PhotoEmbedder:
    """An embedder in worker processes, fed by a gathering task (photo batching).

    Parameters
    ----------
    spec : str
        Embedder spec (:func:`~pyfacematch.embed.create_embedder`): ``"dlib"``,
        ``"onnx:/models/face.onnx"``.
    workers : int
        Worker processes.
    max_image_bytes, max_image_pixels : int
        The decoder's guards (checked in the workers, before decoding pixels).
    max_wait_ms : float
        Gathering wait after the first photo of a batch.
    max_batch : int
        Photos per embed call.
    on_batch : callable (kind, n) or None
        Called with ``("photo", n)`` per batch (metrics).
    """

    def __init__(
        self,
        spec: str,
        *,
        workers: int = 1,
        max_image_bytes: int = 10 * 1024 * 1024,
        max_image_pixels: int = 25_000_000,
        max_wait_ms: float = 2.0,
        max_batch: int = 16,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> None:
        self.spec = spec
        self._emb = ParallelEmbedder(
            spec,
            workers=workers,
            chunk_size=max(1, max_batch // max(1, workers)),
            max_pixels=max_image_pixels,
            max_bytes=max_image_bytes,
        )
        # the threads only wait for the worker processes; two let a batch be gathered and
        # sent while the previous one is still being embedded
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="pfm-photos")
        self._slots = asyncio.Semaphore(2)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_batch = int(max_batch)
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.dim: int | None = None
        self.name: str | None = None

    def load(self) -> None:
        """Start the workers and load the model (blocking: run it in a thread)."""
        self.dim = self._emb.dim
        self.name = self._emb.name

    async def embed(self, images: list[bytes]) -> list[ImageResult]:
        """Every face of each image (policy ``all``, largest first), gathered with others."""
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._gather(self._queue))
        futs = []
        for im in images:
            f: asyncio.Future[ImageResult] = loop.create_future()
            self._queue.put_nowait(_Pending(im, f))
            futs.append(f)
        return list(await asyncio.gather(*futs))

    async def _gather(self, q: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            items = [await q.get()]
            deadline = loop.time() + self.max_wait
            while len(items) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0 and q.empty():
                    break
                try:
                    items.append(
                        q.get_nowait() if not q.empty() else await asyncio.wait_for(q.get(), left)
                    )
                except asyncio.TimeoutError:
                    break
            task = asyncio.create_task(self._run(items))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            task.add_done_callback(lambda _t: self._slots.release())

    async def _run(self, items: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        live = [it for it in items if not it.future.cancelled()]
        if not live:
            return
        try:
            batch = await loop.run_in_executor(
                self._pool, lambda: self._emb.embed([it.image for it in live], policy="all")
            )
        except Exception as exc:  # a fault (a worker died): every photo of the batch gets it
            for it in live:
                if not it.future.done():
                    it.future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch("photo", len(live))
        for it, r in zip(live, batch.images):
            if not it.future.done():
                it.future.set_result(r)

    async def close(self) -> None:
        """Finish running batches, stop gathering, stop the worker processes."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.get_running_loop().run_in_executor(None, self._emb.close)
        self._pool.shutdown(wait=True)
