"""Photos to templates on every core: an embedder run in worker processes.

Where the time goes (dlib pipeline, one 150 × 150 photo, CPU milliseconds on
the development machine, ``python bench/embed.py`` prints the same split):
decoding 0.3, HOG detection 9.6 (2.5 without upsampling), 68 landmarks 1.4,
face chip 0.4, ResNet descriptor 77–82 in dlib, 4.3 on onnxruntime
(:mod:`pyfacematch.embed.dlib_onnx`). The ``dlib-bin`` wheel is built with AVX
but without a BLAS (``dlib.DLIB_USE_BLAS`` is False), so dlib's descriptor runs
on one core; it takes a list of chips but costs the same per face batched or
not; and dlib's calls hold the GIL (two threads take twice as long as one).
Detection and landmarks stay in dlib, so one process uses one core for them,
whatever threads it starts.

:class:`ParallelEmbedder` runs the whole pipeline (decode → detect → align →
descriptor) in ``workers`` processes, each loading its models once, lazily, on
its first chunk. Chunks of ``chunk_size`` images go out as paths (decoding
happens in the workers), at most ``max_inflight`` chunks are in flight, so
memory stays bounded whatever the number of images, and results come back in
input order. While one worker computes descriptors the other decodes and
detects: the stages overlap across the cores.

Example
-------
>>> from pyfacematch.embed.parallel import ParallelEmbedder        # doctest: +SKIP
>>> with ParallelEmbedder("dlib", workers=2) as emb:              # doctest: +SKIP
...     batch = emb.embed(paths)
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pyfacematch.embed import POLICIES, EmbedBatch, ImageResult, StageTimings
from pyfacematch.embed.images import ImageSource
from pyfacematch.errors import InputError, ModelError

__all__ = ["ParallelEmbedder", "default_workers"]

# one embedder per worker process, made on the first chunk (models load once per process)
_WORKER: dict[str, Any] = {}


def default_workers() -> int:
    """Worker processes by default: the cores this process may run on (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, int(n))


def _worker_embedder(spec: str, options: dict[str, Any]) -> Any:
    key = repr((spec, sorted(options.items())))
    emb = _WORKER.get(key)
    if emb is None:
        from pyfacematch.embed import create_embedder

        _WORKER.clear()
        emb = _WORKER[key] = create_embedder(spec, **options)
    return emb


def _describe(spec: str, options: dict[str, Any]) -> tuple[int, str]:
    emb = _worker_embedder(spec, options)
    return int(emb.dim), str(emb.name)


def _embed_chunk(
    spec: str,
    options: dict[str, Any],
    sources: list[ImageSource],
    landmarks: list[object],
    start: int,
    policy: str,
) -> tuple[list[ImageResult], dict[str, float], float]:
    c0 = time.process_time()
    emb = _worker_embedder(spec, options)
    emb.timings.reset()
    res = emb._embed_chunk(sources, landmarks, start, policy)
    t = dataclasses.asdict(emb.timings)
    return res, t, time.process_time() - c0


class ParallelEmbedder:
    """An embedder (by spec, as :func:`~pyfacematch.embed.create_embedder` takes) in worker processes.

    Same interface as :class:`~pyfacematch.embed.Embedder` for making
    templates: :meth:`embed`, :meth:`iter_embed`, :meth:`embed_image`,
    ``dim``, ``name``, ``timings``.

    Parameters
    ----------
    spec : str
        ``"dlib"``, ``"dlib:cnn"``, ``"onnx:<model.onnx>"``.
    workers : int or None
        Worker processes (default: the usable cores, :func:`default_workers`).
    chunk_size : int
        Images per task sent to a worker (their descriptors are batched).
    max_inflight : int or None
        Chunks queued or running at once (default ``2 * workers``): bounds memory.
    **options
        Passed to the embedder's constructor in every worker (``upsample``, ``max_pixels`` …);
        must be picklable.

    Attributes
    ----------
    timings : StageTimings
        Per-stage seconds summed over the workers (worker wall time per stage).
    cpu_seconds : float
        CPU seconds the workers spent on the chunks (robust to other load on the machine).

    Notes
    -----
    Workers start with ``spawn`` (no inherited threads or locks) when the first
    chunk is sent and stop at :meth:`close` (or the end of a ``with`` block).
    An error that a worker raises (a missing model) is raised here; a worker
    that dies is reported as :class:`~pyfacematch.errors.ModelError`.
    """

    def __init__(
        self,
        spec: str = "dlib",
        *,
        workers: int | None = None,
        chunk_size: int = 8,
        max_inflight: int | None = None,
        **options: Any,
    ) -> None:
        n = default_workers() if workers is None else int(workers)
        if n < 1:
            raise InputError(f"expected workers >= 1, got {workers}")
        if int(chunk_size) < 1:
            raise InputError(f"expected chunk_size >= 1, got {chunk_size}")
        inflight = 2 * n if max_inflight is None else int(max_inflight)
        if inflight < 1:
            raise InputError(f"expected max_inflight >= 1, got {max_inflight}")
        self.spec = str(spec)
        self.options = dict(options)
        # one onnxruntime thread per worker: the workers already fill the cores
        if self.spec.startswith("dlib"):
            self.options.setdefault("threads", 1)
        elif self.spec.startswith("onnx"):
            self.options.setdefault("intra_op_threads", 1)
        self.workers = n
        self.chunk_size = int(chunk_size)
        self.max_inflight = inflight
        self.timings = StageTimings()
        self.cpu_seconds = 0.0
        self._pool: ProcessPoolExecutor | None = None
        self._dim: int | None = None
        self._name: str | None = None

    # -- pool --------------------------------------------------------------
    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def _result(self, fut: Future) -> Any:
        try:
            return fut.result()
        except BrokenProcessPool as exc:
            self.close()
            raise ModelError(
                f"an embedding worker process died ({exc}); run with workers=1 to see the "
                "error in this process"
            ) from None

    def close(self) -> None:
        """Stop the worker processes (they start again on the next call)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ParallelEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    def _describe(self) -> None:
        if self._dim is None:
            self._dim, self._name = self._result(
                self._executor().submit(_describe, self.spec, self.options)
            )

    @property
    def dim(self) -> int:
        """Template dimension (asks a worker, which loads the model, the first time)."""
        self._describe()
        assert self._dim is not None
        return self._dim

    @property
    def name(self) -> str:
        """Model name of the embedder the workers run."""
        self._describe()
        assert self._name is not None
        return self._name

    # -- pipeline ----------------------------------------------------------
    def iter_embed(
        self,
        images: Iterable[ImageSource],
        *,
        policy: str = "largest",
        landmarks: Iterable[object] | None = None,
    ) -> Iterator[ImageResult]:
        """Results in input order, at most ``max_inflight`` chunks of images in flight."""
        if policy not in POLICIES:
            raise InputError(f"expected policy in {POLICIES}, got {policy!r}")
        it = iter(images)
        lm_it = iter(landmarks) if landmarks is not None else None
        pool = self._executor()
        pending: deque[Future] = deque()
        start = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.max_inflight:
                    chunk = list(itertools.islice(it, self.chunk_size))
                    if not chunk:
                        exhausted = True
                        break
                    if lm_it is None:
                        lm_chunk: list[object] = [None] * len(chunk)
                    else:
                        lm_chunk = list(itertools.islice(lm_it, len(chunk)))
                        if len(lm_chunk) != len(chunk):
                            raise InputError(
                                "expected one landmarks entry per image; landmarks ran out first"
                            )
                    pending.append(
                        pool.submit(
                            _embed_chunk, self.spec, self.options, chunk, lm_chunk, start, policy
                        )
                    )
                    start += len(chunk)
                if not pending:
                    return
                res, t, cpu = self._result(pending.popleft())
                for k, v in t.items():
                    setattr(self.timings, k, getattr(self.timings, k) + v)
                self.cpu_seconds += cpu
                if res and self._dim is None:
                    self._dim = int(res[0].templates.shape[1])
                yield from res
        finally:
            for f in pending:
                f.cancel()

    def embed(
        self,
        images: Iterable[ImageSource],
        *,
        policy: str = "largest",
        landmarks: Sequence[object] | None = None,
    ) -> EmbedBatch:
        """Detect, align and embed a batch of images (see :meth:`Embedder.embed`)."""
        sources = list(images)
        if landmarks is not None and len(landmarks) != len(sources):
            raise InputError(
                f"expected one landmarks entry per image ({len(sources)}), got {len(landmarks)}"
            )
        results = list(self.iter_embed(sources, policy=policy, landmarks=landmarks))
        return EmbedBatch(results, self.dim)

    def embed_image(self, image: ImageSource, *, policy: str = "largest") -> ImageResult:
        """:meth:`embed` for one image."""
        return self.embed([image], policy=policy).images[0]

    def __repr__(self) -> str:
        return f"ParallelEmbedder({self.spec!r}, workers={self.workers})"
