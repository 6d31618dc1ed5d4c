"""From photos to templates: face detection, alignment and embedding models.

The pipeline, per image::

    load (io.load_image) → detect faces (box, 5 points, dense landmarks)
      → keep faces by policy → aligned crop → embedding model → unit-norm template

Every image yields an :class:`ImageResult`: the faces kept and their
templates, or a failure-to-acquire ``reason`` (one of
:data:`FAILURE_REASONS`) with a message. A bad image never stops a batch.

Embedders
---------
- :class:`~pyfacematch.embed.dlib.DlibEmbedder` (extra ``dlib``): dlib's HOG or
  CNN detector, 68-point landmarks, 128-d ResNet descriptor.
- :class:`~pyfacematch.embed.onnx.OnnxEmbedder` (extra ``onnx``): any
  ArcFace/SFace-style ONNX model on five-point aligned crops; faces from a
  :class:`Detector` (e.g. :class:`~pyfacematch.embed.dlib.DlibDetector`) or
  from landmarks the caller gives.

Example
-------
>>> from pyfacematch.embed.dlib import DlibEmbedder          # doctest: +SKIP
>>> batch = DlibEmbedder().embed(["a.jpg", "b.jpg"])          # doctest: +SKIP
>>> batch.templates().shape, [r.reason for r in batch.failures]   # doctest: +SKIP
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from pyfacematch.embed.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    ImageSource,
    describe_source,
    list_images,
    load_image,
)
from pyfacematch.errors import InputError, LandmarkError

__all__ = [
    "FAILURE_REASONS",
    "POLICIES",
    "Face",
    "ImageResult",
    "EmbedBatch",
    "StageTimings",
    "Detector",
    "Embedder",
    "face_quality",
    "create_embedder",
    "OperatingPoint",
    "DEFAULT_OPERATING_POINTS",
    "default_operating_point",
    "ImageLoadError",
    "load_image",
    "list_images",
]

#: Why an image gave no template.
FAILURE_REASONS = (
    "unreadable",  # missing, no permission, truncated or corrupt file
    "empty",  # zero bytes or zero pixels
    "too_large",  # over the byte or pixel limit (decompression-bomb guard)
    "not_an_image",  # not a decodable image, or an array of the wrong dtype/shape
    "no_face",  # the detector found no face (or no landmarks were given)
    "several_faces",  # policy "single" and more than one face
    "bad_landmarks",  # the face's points cannot be aligned (NaN, collapsed)
    "bad_embedding",  # the model gave a zero or non-finite embedding
)


@dataclass(frozen=True)
class OperatingPoint:
    """An embedder's default decision threshold and what it stands for.

    Attributes
    ----------
    threshold : float
        Accept when the cosine of two templates is at least this.
    fmr : float
        The false match rate it stands for (an upper bound, see ``measured_on``).
    fnmr : float
        The false non-match rate measured at it.
    measured_on : str
        The data and the rule behind ``fmr``.
    """

    threshold: float
    fmr: float
    fnmr: float
    measured_on: str


#: Default operating points by model name (``Embedder.name``), so a gallery enrolled from photos
#: decides "match" / "unknown" before ``calibrate`` runs (which refines it on the gallery's own
#: data). dlib_resnet_v1: on the 54 shared photos (5 people, dlib's ``examples/johns``) the
#: impostor cosines reach 0.892 and the genuine ones start at 0.927; at 0.91 none of the 1,166
#: impostor pairs matches, so FMR ≤ 3 / 1,166 ≈ 2.6e-3 at 95 % confidence (rule of three), and
#: none of the 265 genuine pairs fails. Five people are few: the bound is loose and the impostor
#: tail of other populations may be heavier — calibrate on your own data. Measured with chips on
#: 68 landmarks; re-checked for the default 5-point chips (genuine from 0.930, impostor up to
#: 0.893; 5-point probes against 68-point templates 0.927 / 0.895): the same counts hold.
DEFAULT_OPERATING_POINTS = {
    "dlib_resnet_v1": OperatingPoint(
        threshold=0.91,
        fmr=2.6e-3,
        fnmr=0.0,
        measured_on="54 shared photos of 5 people: 0 of 1,166 impostor pairs at or above the "
        "threshold (FMR <= 2.6e-3, 95% confidence, rule of three); 0 of 265 genuine pairs below",
    ),
}


def default_operating_point(model_name: str) -> OperatingPoint | None:
    """The default operating point of a model (``Embedder.name``), or None when it has none."""
    return DEFAULT_OPERATING_POINTS.get(str(model_name))


#: What to do with several faces in one image.
#: ``"largest"``: keep the face with the largest box; ``"all"``: keep every face
#: (``Face.index`` numbers them, largest first); ``"single"``: fail with
#: ``"several_faces"``.
POLICIES = ("largest", "all", "single")


@dataclass(frozen=True)
class Face:
    """One face found in an image.

    Attributes
    ----------
    box : numpy.ndarray
        (4,) float32 ``[left, top, right, bottom]`` in pixels.
    points5 : numpy.ndarray
        (5, 2) float32 pixels (x, y): left eye, right eye, nose tip, left and
        right mouth corners as seen in the image (ArcFace order).
    landmarks : numpy.ndarray or None
        (P, 2) float32 dense landmarks in pixels, in the layout named by
        ``scheme`` (e.g. ``"ibug68"``), or None when the detector gives none.
    scheme : str or None
        Layout of ``landmarks``.
    detector_score : float
        The detector's confidence (its own units; NaN when landmarks came from
        the caller).
    quality : float
        Heuristic quality in [0, 1] (see :func:`face_quality`); NaN before alignment.
    index : int
        Index of the face in its image, 0 = largest box.
    """

    box: np.ndarray
    points5: np.ndarray
    landmarks: np.ndarray | None = None
    scheme: str | None = None
    detector_score: float = float("nan")
    quality: float = float("nan")
    index: int = 0

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        b = self.box
        return float(max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))


@dataclass
class ImageResult:
    """What one image gave.

    Attributes
    ----------
    source : str
        The path, or ``<array #i>`` for an array.
    position : int
        Position of the image in the batch.
    faces : list of Face
        The faces kept by the policy, in the order of ``templates``.
    templates : numpy.ndarray
        (len(faces), d) float32, unit-norm rows; (0, d) on failure.
    reason : str or None
        None on success, else one of :data:`FAILURE_REASONS`.
    message : str
        Human-readable detail of the failure ('' on success); no biometric data.
    n_detected : int
        Faces the detector found before the policy was applied.
    image_size : tuple of int or None
        (height, width) of the decoded image, None if it did not decode.
    """

    source: str
    position: int
    faces: list[Face] = field(default_factory=list)
    templates: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    reason: str | None = None
    message: str = ""
    n_detected: int = 0
    image_size: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        """True when the image gave at least one template."""
        return self.reason is None


@dataclass
class EmbedBatch:
    """The results of :meth:`Embedder.embed` over a batch of images.

    Attributes
    ----------
    images : list of ImageResult
        One per input image, in input order.
    dim : int
        Template dimension.
    """

    images: list[ImageResult]
    dim: int

    def templates(self) -> np.ndarray:
        """All templates, image by image, face by face: (n_faces, dim) float32."""
        rows = [r.templates for r in self.images if r.ok]
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.float32)

    def image_index(self) -> np.ndarray:
        """(n_faces,) int64: position of the image each row of :meth:`templates` came from."""
        return np.array([r.position for r in self.images if r.ok for _ in r.faces], dtype=np.int64)

    def face_index(self) -> np.ndarray:
        """(n_faces,) int64: ``Face.index`` of each row of :meth:`templates`."""
        return np.array([f.index for r in self.images if r.ok for f in r.faces], dtype=np.int64)

    @property
    def failures(self) -> list[ImageResult]:
        """The images that gave no template."""
        return [r for r in self.images if not r.ok]

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class StageTimings:
    """Wall-clock seconds spent per stage, accumulated over calls.

    ``load`` is decoding, ``detect`` detection and landmarks, ``align`` the
    aligned crops, ``embed`` the embedding model.
    """

    load: float = 0.0
    detect: float = 0.0
    align: float = 0.0
    embed: float = 0.0
    images: int = 0
    faces: int = 0

    def total(self) -> float:
        """Sum of the stage times, seconds."""
        return self.load + self.detect + self.align + self.embed

    def shares(self) -> dict[str, float]:
        """Fraction of :meth:`total` per stage."""
        t = self.total() or 1.0
        return {k: getattr(self, k) / t for k in ("load", "detect", "align", "embed")}

    def reset(self) -> None:
        """Zero every counter."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0 if f.type in ("int", int) else 0.0)


class Detector(abc.ABC):
    """Finds faces in an RGB image."""

    @abc.abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in ``image`` ((H, W, 3) uint8 RGB), any order; ``quality`` left NaN."""


def face_quality(face: Face, crop: np.ndarray, min_good_side: float = 80.0) -> float:
    """Heuristic face quality in [0, 1]: size × sharpness.

    ``size = min(1, min(box width, box height) / min_good_side)``;
    ``sharpness = 1 - exp(-var(Laplacian(grey crop)) / 100)``. It ranks faces
    that are too small or blurred below the rest; it is not a calibrated
    quality measure such as ISO/IEC 29794-5.
    """
    b = face.box
    side = float(min(b[2] - b[0], b[3] - b[1]))
    size = min(1.0, max(0.0, side) / float(min_good_side))
    g = crop.astype(np.float64)
    if g.ndim == 3:
        g = g @ np.array([0.299, 0.587, 0.114])
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    sharp = 1.0 - float(np.exp(-lap.var() / 100.0))
    return float(size * sharp)


def _as_landmark_list(lm: object) -> list[np.ndarray]:
    arr = np.asarray(lm, dtype=np.float32)
    if arr.ndim == 2:
        return [arr]
    if arr.ndim == 3:
        return list(arr)
    raise InputError(f"expected landmarks of shape (P, 2) or (faces, P, 2), got {arr.shape}")


class Embedder(abc.ABC):
    """Turns images into unit-norm face templates.

    Subclasses set ``dim`` and ``name`` and implement :meth:`detect`,
    :meth:`face_from_landmarks`, :meth:`align` and :meth:`embed_crops`; the
    batching, policies, failures and timings live here.

    Attributes
    ----------
    dim : int
        Template dimension.
    name : str
        Model name, recorded with galleries built from it.
    timings : StageTimings
        Seconds spent per stage since creation (or the last ``timings.reset()``).

    Notes
    -----
    An embedder holds model state and counters: use one per thread (models
    are loaded once per embedder; onnxruntime and dlib use their own threads
    inside a call).
    """

    dim: int
    name: str

    def __init__(
        self,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"expected batch_size >= 1, got {batch_size}")
        self.max_pixels = int(max_pixels)
        self.max_bytes = int(max_bytes)
        self.batch_size = int(batch_size)
        self.timings = StageTimings()

    # -- to implement -------------------------------------------------------
    @abc.abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an (H, W, 3) uint8 RGB image, any order."""

    @abc.abstractmethod
    def face_from_landmarks(self, landmarks: np.ndarray) -> Face:
        """A :class:`Face` from caller-given landmarks ((P, 2) pixels)."""

    @abc.abstractmethod
    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The aligned crop the model expects, (h, w, 3) uint8 RGB."""

    @abc.abstractmethod
    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Raw (not normalised) embeddings of aligned crops: (n, dim) float32."""

    # -- pipeline -----------------------------------------------------------
    def embed(
        self,
        images: Iterable[ImageSource],
        *,
        policy: str = "largest",
        landmarks: Sequence[object] | None = None,
    ) -> EmbedBatch:
        """Detect, align and embed the faces of a batch of images.

        Parameters
        ----------
        images : iterable of path or numpy.ndarray
            Image files, or (H, W, 3) uint8 RGB arrays.
        policy : {"largest", "all", "single"}
            What to keep when an image holds several faces (see :data:`POLICIES`).
        landmarks : sequence, optional
            One entry per image: None (detect), or landmarks the caller already
            has, (P, 2) or (faces, P, 2) pixels, in a layout the embedder
            accepts (see :meth:`face_from_landmarks`); detection is then skipped.

        Returns
        -------
        EmbedBatch
            One :class:`ImageResult` per image, in input order.
        """
        if policy not in POLICIES:
            raise InputError(f"expected policy in {POLICIES}, got {policy!r}")
        sources = list(images)
        if landmarks is not None and len(landmarks) != len(sources):
            raise InputError(
                f"expected one landmarks entry per image ({len(sources)}), got {len(landmarks)}"
            )
        return EmbedBatch(
            list(self.iter_embed(sources, policy=policy, landmarks=landmarks)), int(self.dim)
        )

    def iter_embed(
        self,
        images: Iterable[ImageSource],
        *,
        policy: str = "largest",
        landmarks: Iterable[object] | None = None,
    ) -> Iterator[ImageResult]:
        """:meth:`embed` as a stream: yields each :class:`ImageResult` in input order.

        Images are read ``batch_size`` at a time, so a folder of millions of
        files is processed in bounded memory. ``landmarks``, when given, is
        consumed in step with ``images`` (one entry per image).
        """
        if policy not in POLICIES:
            raise InputError(f"expected policy in {POLICIES}, got {policy!r}")
        it = iter(images)
        lm_it = iter(landmarks) if landmarks is not None else None
        start = 0
        while True:
            chunk = list(itertools.islice(it, self.batch_size))
            if not chunk:
                break
            if lm_it is None:
                lm_chunk: list[object] = [None] * len(chunk)
            else:
                lm_chunk = list(itertools.islice(lm_it, len(chunk)))
                if len(lm_chunk) != len(chunk):
                    raise InputError(
                        "expected one landmarks entry per image; landmarks ran out first"
                    )
            yield from self._embed_chunk(chunk, lm_chunk, start, policy)
            start += len(chunk)

    def _embed_chunk(
        self, chunk: list[ImageSource], lm_chunk: Sequence[object], start: int, policy: str
    ) -> list[ImageResult]:
        t = self.timings
        out: list[ImageResult] = []
        crops: list[np.ndarray] = []
        owners: list[int] = []  # index into out for each crop
        for j, (src, lm) in enumerate(zip(chunk, lm_chunk)):
            res = ImageResult(source=describe_source(src, start + j), position=start + j)
            res.templates = np.zeros((0, int(self.dim)), np.float32)
            out.append(res)
            t.images += 1
            t0 = time.perf_counter()
            try:
                img = load_image(src, max_pixels=self.max_pixels, max_bytes=self.max_bytes)
            except ImageLoadError as exc:
                res.reason, res.message = exc.reason, str(exc)
                continue
            finally:
                t.load += time.perf_counter() - t0
            res.image_size = (int(img.shape[0]), int(img.shape[1]))

            t0 = time.perf_counter()
            try:
                if lm is None:
                    faces = self.detect(img)
                else:
                    faces = [self.face_from_landmarks(x) for x in _as_landmark_list(lm)]
            except LandmarkError as exc:
                res.reason, res.message = "bad_landmarks", str(exc)
                continue
            finally:
                t.detect += time.perf_counter() - t0
            faces = sorted(faces, key=lambda f: -f.area)
            faces = [dataclasses.replace(f, index=i) for i, f in enumerate(faces)]
            res.n_detected = len(faces)
            if not faces:
                res.reason = "no_face"
                res.message = f"no face found in {res.source}"
                continue
            if len(faces) > 1 and policy == "single":
                res.reason = "several_faces"
                res.message = (
                    f"{len(faces)} faces found in {res.source} and policy is 'single': "
                    "use policy='largest' or 'all' to keep them"
                )
                continue
            if policy != "all":
                faces = faces[:1]

            t0 = time.perf_counter()
            kept: list[Face] = []
            try:
                for f in faces:
                    crop = self.align(img, f)
                    kept.append(dataclasses.replace(f, quality=face_quality(f, crop)))
                    crops.append(crop)
                    owners.append(j)
            except LandmarkError as exc:
                # drop this image's crops already queued
                while owners and owners[-1] == j:
                    owners.pop()
                    crops.pop()
                res.reason, res.message = "bad_landmarks", str(exc)
                continue
            finally:
                t.align += time.perf_counter() - t0
            res.faces = kept

        if crops:
            t0 = time.perf_counter()
            emb = np.asarray(self.embed_crops(crops), dtype=np.float64)
            t.embed += time.perf_counter() - t0
            t.faces += len(crops)
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
            emb = (emb / np.where(bad[:, None], 1.0, norms)).astype(np.float32)
            owner_arr = np.asarray(owners)
            for j, res in enumerate(out):
                rows = np.flatnonzero(owner_arr == j)
                if rows.size == 0 or res.reason is not None:
                    continue
                if bad[rows].any():
                    res.reason = "bad_embedding"
                    res.message = (
                        f"the model gave a zero or non-finite embedding for a face in {res.source}"
                    )
                    res.faces = []
                    continue
                res.templates = np.ascontiguousarray(emb[rows])
        return out

    def embed_image(self, image: ImageSource, *, policy: str = "largest") -> ImageResult:
        """:meth:`embed` for one image."""
        return self.embed([image], policy=policy).images[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def create_embedder(spec: str, **options: object) -> Embedder:
    """An embedder from a short spec, for the command line and config files.

    Parameters
    ----------
    spec : str
        ``"dlib"`` or ``"dlib:hog"`` / ``"dlib:cnn"``; ``"onnx:<model path>"``
        (faces from the dlib detector when dlib is installed, unless
        ``detector=None`` is passed).
    **options
        Passed to the embedder's constructor (e.g. ``upsample``,
        ``batch_size``, ``config``, ``intra_op_threads``, ``max_pixels``).
        ``workers=N`` (N > 1, or 0 for one per core) runs it in N processes
        (:class:`~pyfacematch.embed.parallel.ParallelEmbedder`, same interface).

    Returns
    -------
    Embedder
    """
    workers = options.pop("workers", None)
    if workers is not None and int(workers) != 1:  # type: ignore[call-overload]
        from pyfacematch.embed.parallel import ParallelEmbedder

        n = int(workers)  # type: ignore[call-overload]
        return ParallelEmbedder(spec, workers=n or None, **options)  # type: ignore[arg-type, return-value]
    kind, _, arg = str(spec).partition(":")
    if kind == "dlib":
        from pyfacematch.embed.dlib import DlibEmbedder

        return DlibEmbedder(arg or "hog", **options)  # type: ignore[arg-type]
    if kind == "onnx":
        if not arg:
            raise InputError("expected 'onnx:<path to model.onnx>', got no path")
        from pyfacematch.embed.onnx import OnnxEmbedder

        if "detector" not in options:
            from pyfacematch.embed.dlib import dlib_available

            options["detector"] = "dlib" if dlib_available() else None
        return OnnxEmbedder(arg, **options)  # type: ignore[arg-type]
    raise InputError(f"expected an embedder spec 'dlib[:hog|cnn]' or 'onnx:<model>', got {spec!r}")
