"""dlib face pipeline: HOG or CNN detector, 68-point landmarks, 128-d ResNet descriptor.

Needs the ``dlib`` extra: ``pip install 'pyfacematch[dlib]'`` (``dlib-bin``,
``face-recognition-models``, ``pillow``). Everything runs offline from the
model files that ``face-recognition-models`` installs; they are located
without importing that package (it imports ``pkg_resources``, which current
setuptools no longer ships). Another folder holding the same ``.dat`` files
can be given as ``model_dir`` or in the environment variable
``PYFACEMATCH_DLIB_MODELS``.

Model terms: the ResNet descriptor model is CC0; the 68-point shape predictor
was trained on iBUG 300-W, whose terms exclude commercial use.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.embed import Detector, Embedder, Face
from pyfacematch.embed.align import points5_from_ibug68
from pyfacematch.errors import InputError, LandmarkError, ModelError

__all__ = ["DlibDetector", "DlibEmbedder", "dlib_model_dir", "dlib_available"]

_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "cnn": "mmod_human_face_detector.dat",
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
}


def _import_dlib():  # noqa: ANN202 - returns the module
    try:
        import dlib  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError(
            "the dlib embedder needs dlib: pip install 'pyfacematch[dlib]' "
            "(dlib-bin, face-recognition-models, pillow)"
        ) from exc
    return dlib


def _onnx_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def dlib_available() -> bool:
    """True when ``dlib`` imports and its model files are found."""
    try:
        _import_dlib()
        dlib_model_dir()
    except (ImportError, ModelError):
        return False
    return True


def dlib_model_dir(model_dir: str | os.PathLike | None = None) -> Path:
    """Folder holding dlib's ``.dat`` model files.

    Looks at ``model_dir``, then ``$PYFACEMATCH_DLIB_MODELS``, then the
    ``models/`` folder of the installed ``face_recognition_models`` package
    (found with :func:`importlib.util.find_spec`, without importing it).

    Raises
    ------
    ModelError
        When no folder with the ResNet descriptor file is found.
    """
    candidates: list[Path] = []
    if model_dir is not None:
        candidates.append(Path(model_dir))
    env = os.environ.get("PYFACEMATCH_DLIB_MODELS")
    if env:
        candidates.append(Path(env))
    if model_dir is None:
        try:
            spec = importlib.util.find_spec("face_recognition_models")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                candidates.append(Path(loc) / "models")
    for c in candidates:
        if (c / _FILES["resnet"]).is_file():
            return c
    tried = ", ".join(str(c) for c in candidates) or "nothing"
    raise ModelError(
        f"dlib model files not found (looked in {tried}): pip install face-recognition-models, "
        "or pass model_dir / set PYFACEMATCH_DLIB_MODELS to a folder holding "
        f"{_FILES['resnet']} and {_FILES['landmarks68']}"
    )


def _load(dlib, factory, path: Path):  # noqa: ANN001, ANN202
    if not path.is_file():
        raise ModelError(f"dlib model file {path} is missing: reinstall face-recognition-models")
    try:
        return factory(str(path))
    except Exception as exc:  # dlib raises its own RuntimeError subclasses
        raise ModelError(f"cannot load dlib model {path}: {exc}") from None


class DlibDetector(Detector):
    """dlib face detector + 68-point shape predictor.

    Parameters
    ----------
    detector : {"hog", "cnn"}
        HOG + linear SVM (fast, frontal faces) or the MMOD CNN (slower on CPU,
        more poses).
    upsample : int or "auto"
        Times the image is upsampled before detection (1 finds faces down to
        about 40 px wide; 0 is four times faster, about 80 px). ``"auto"``
        detects without upsampling and upsamples once only when that finds no
        face: the speed of 0 on photos whose faces are large enough, the reach
        of 1 on the others.
    adjust_threshold : float
        Added to the HOG detector's threshold (negative finds more faces).
    model_dir : path, optional
        Folder with the ``.dat`` files (see :func:`dlib_model_dir`).
    max_side : int or None
        Detect on a copy downscaled so that its longer side is at most this
        many pixels (boxes are scaled back; landmarks are found on the
        full-resolution image). Bounds the detector's time and memory on
        large photos; None detects at full size.

    Each face comes with its box, the 68 iBUG landmarks (``scheme="ibug68"``),
    the five ArcFace points derived from them and the detector score.
    """

    def __init__(
        self,
        detector: str = "hog",
        *,
        upsample: int | str = 1,
        adjust_threshold: float = 0.0,
        model_dir: str | os.PathLike | None = None,
        max_side: int | None = 1600,
    ) -> None:
        if max_side is not None and int(max_side) < 32:
            raise InputError(f"expected max_side >= 32 or None, got {max_side}")
        self.max_side = None if max_side is None else int(max_side)
        if detector not in ("hog", "cnn"):
            raise InputError(f"expected detector 'hog' or 'cnn', got {detector!r}")
        self.auto_upsample = upsample == "auto"
        if self.auto_upsample:
            upsample = 0
        elif isinstance(upsample, str) or int(upsample) < 0:
            raise InputError(f"expected upsample >= 0 or 'auto', got {upsample!r}")
        dlib = _import_dlib()
        self._dlib = dlib
        self.kind = detector
        self.upsample = int(upsample)
        self.adjust_threshold = float(adjust_threshold)
        self.model_dir = dlib_model_dir(model_dir)
        if detector == "hog":
            self._det = dlib.get_frontal_face_detector()
        else:
            self._det = _load(
                dlib, dlib.cnn_face_detection_model_v1, self.model_dir / _FILES["cnn"]
            )
        self._sp = _load(dlib, dlib.shape_predictor, self.model_dir / _FILES["landmarks68"])

    def _rects(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        h, w = image.shape[:2]
        scale = 1.0
        small = image
        if self.max_side is not None and max(h, w) > self.max_side:
            from PIL import Image

            scale = self.max_side / float(max(h, w))
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        found = self._run(small, self.upsample)
        if not found and self.auto_upsample:
            found = self._run(small, self.upsample + 1)
        return [
            (np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32) / scale, sc)
            for r, sc in found
        ]

    def _run(self, image: np.ndarray, upsample: int) -> list[tuple[Any, float]]:
        if self.kind == "hog":
            rects, scores, _ = self._det.run(image, upsample, self.adjust_threshold)
            return list(zip(rects, (float(s) for s in scores)))
        return [(d.rect, float(d.confidence)) for d in self._det(image, upsample)]

    def landmarks(self, image: np.ndarray, box: Sequence[float] | np.ndarray) -> np.ndarray:
        """68 iBUG landmarks inside a given box: (68, 2) float32 pixels."""
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = self._sp(image, self._dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an (H, W, 3) uint8 RGB image, detector order."""
        faces = []
        for box, score in self._rects(image):
            lm = self.landmarks(image, box)
            faces.append(
                Face(
                    box=box,
                    points5=points5_from_ibug68(lm),
                    landmarks=lm,
                    scheme="ibug68",
                    detector_score=score,
                )
            )
        return faces


class DlibEmbedder(Embedder):
    """dlib's face recognition pipeline as an :class:`Embedder` (128-d templates).

    Faces are aligned as ``dlib.get_face_chip`` does (150 × 150, padding 0.25,
    on the 68 landmarks) and described by dlib's ResNet model
    (``dlib_face_recognition_resnet_model_v1``), batched over all faces of a
    chunk of images.

    Parameters
    ----------
    detector : {"hog", "cnn"} or DlibDetector
        Detector to use (see :class:`DlibDetector`).
    upsample : int
        Detector upsampling (ignored when ``detector`` is an instance).
    num_jitters : int
        If > 1, average the descriptor over this many random jitters of the
        crop (slower, slightly more accurate).
    padding : float
        Crop padding around the face, as in ``dlib.get_face_chip``.
    model_dir : path, optional
        Folder with the ``.dat`` files.
    max_side : int or None
        Longest side the detector works at (see :class:`DlibDetector`).
    descriptor : {"auto", "onnx", "dlib"}
        Where the ResNet runs: ``"onnx"``, the same network rebuilt from the same weights on
        onnxruntime (:mod:`pyfacematch.embed.dlib_onnx`; cosine ≥ 0.999 to dlib's descriptor,
        about 18 times less CPU per face); ``"dlib"``, dlib's own code (no BLAS in the wheel:
        one core, about 80 ms a face); ``"auto"``: onnx when ``onnxruntime`` is installed.
        Jitters (``num_jitters > 1``) always run in dlib.
    threads : int or None
        onnxruntime intra-op threads (None: one per core).
    max_pixels, max_bytes, batch_size
        See :class:`~pyfacematch.embed.Embedder`.
    """

    dim = 128
    name = "dlib_resnet_v1"

    def __init__(
        self,
        detector: str | DlibDetector = "hog",
        *,
        upsample: int | str = 1,
        num_jitters: int = 0,
        padding: float = 0.25,
        model_dir: str | os.PathLike | None = None,
        max_side: int | None = 1600,
        descriptor: str = "auto",
        threads: int | None = None,
        **kwargs: int,
    ) -> None:
        super().__init__(**kwargs)
        if descriptor not in ("auto", "onnx", "dlib"):
            raise InputError(f"expected descriptor 'auto', 'onnx' or 'dlib', got {descriptor!r}")
        dlib = _import_dlib()
        self._dlib = dlib
        if isinstance(detector, DlibDetector):
            self.detector = detector
        else:
            self.detector = DlibDetector(
                detector, upsample=upsample, model_dir=model_dir, max_side=max_side
            )
        self.num_jitters = int(num_jitters)
        self.padding = float(padding)
        self.chip_size = 150
        mdir = dlib_model_dir(model_dir)
        self._resnet_path = mdir / _FILES["resnet"]
        self._fr_model = None  # dlib's own network: loaded on first use (jitters, or no onnx)
        self._onnx = None
        if descriptor == "auto":
            descriptor = "onnx" if _onnx_available() else "dlib"
        if descriptor == "onnx":
            from pyfacematch.embed.dlib_onnx import DlibOnnxDescriptor

            self._onnx = DlibOnnxDescriptor(self._resnet_path, threads=threads)
        else:
            self._fr_model = self._fr
        self.descriptor = descriptor

    @property
    def _fr(self):  # noqa: ANN202 - dlib.face_recognition_model_v1
        if self._fr_model is None:
            self._fr_model = _load(
                self._dlib, self._dlib.face_recognition_model_v1, self._resnet_path
            )
        return self._fr_model

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detector.detect(image)

    def face_from_landmarks(self, landmarks: np.ndarray) -> Face:
        """A face from caller-given iBUG-68 landmarks ((68, 2) pixels, rounded to integers)."""
        lm = np.asarray(landmarks, dtype=np.float32)
        if lm.shape != (68, 2):
            raise LandmarkError(
                f"the dlib embedder aligns on iBUG 68-point landmarks, got shape {lm.shape}"
            )
        if not np.isfinite(lm).all():
            raise LandmarkError("landmarks hold NaN or Inf: cannot align this face")
        box = np.array([*lm.min(0), *lm.max(0)], dtype=np.float32)
        return Face(box=box, points5=points5_from_ibug68(lm), landmarks=lm, scheme="ibug68")

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        """dlib's 150 × 150 face chip, (150, 150, 3) uint8."""
        if face.landmarks is None or face.landmarks.shape != (68, 2):
            raise LandmarkError("the dlib embedder needs the face's 68 landmarks to align it")
        dlib = self._dlib
        lm = np.rint(face.landmarks).astype(np.int64)
        if (lm.max(0) - lm.min(0)).min() < 2:
            raise LandmarkError("face landmarks collapse to a point: cannot align this face")
        b = np.rint(face.box).astype(np.int64)
        rect = dlib.rectangle(int(b[0]), int(b[1]), int(b[2]), int(b[3]))
        shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in lm])
        return np.asarray(dlib.get_face_chip(image, shape, self.chip_size, self.padding))

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """128-d ResNet descriptors of 150 × 150 chips: (n, 128) float32."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        batch = [np.ascontiguousarray(c, dtype=np.uint8) for c in crops]
        if self._onnx is not None and self.num_jitters <= 1:
            return self._onnx(batch)
        vecs = self._fr.compute_face_descriptor(batch, self.num_jitters)
        return np.array([np.asarray(v) for v in vecs], dtype=np.float32).reshape(-1, self.dim)
