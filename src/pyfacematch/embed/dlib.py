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
import tempfile
import threading
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
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
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


def _frontal_face_detector(dlib):  # noqa: ANN001, ANN202 - dlib.fhog_object_detector
    """dlib's HOG frontal face detector, loaded from the model cache when it is there.

    ``dlib.get_frontal_face_detector()`` rebuilds the detector from a string compiled into dlib
    (about 0.27 s); the same detector saved with ``.save()`` loads in about 1 ms. The entry is
    named by dlib's version (:mod:`pyfacematch.embed.cache` checks its hash before use);
    ``tests/test_embed_dlib.py`` checks that both give the same boxes and scores.
    """
    from pyfacematch.embed.cache import cached_file

    def make() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "detector.svm")
            dlib.get_frontal_face_detector().save(path)
            return Path(path).read_bytes()

    version = str(getattr(dlib, "__version__", "unknown")).replace(os.sep, "_")
    path = cached_file(f"dlib-{version}-frontal_face_detector.svm", make)
    if path is not None:
        try:
            det = dlib.fhog_object_detector(str(path))
            if det.num_detectors == _FRONTAL_SUBDETECTORS:
                return det
        except Exception:  # noqa: BLE001 - dlib's own errors: fall back to the built-in
            pass
    return dlib.get_frontal_face_detector()


#: dlib's frontal face detector is 5 HOG filters (front, left, right, front rotated left/right).
_FRONTAL_SUBDETECTORS = 5


def _load(dlib, factory, path: Path):  # noqa: ANN001, ANN202
    if not path.is_file():
        raise ModelError(f"dlib model file {path} is missing: reinstall face-recognition-models")
    try:
        return factory(str(path))
    except Exception as exc:  # dlib raises its own RuntimeError subclasses
        raise ModelError(f"cannot load dlib model {path}: {exc}") from None


class DlibDetector(Detector):
    """dlib face detector + shape predictor (68 iBUG points, or dlib's 5 points).

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
    points : {68, 5}
        The shape predictor: 68 iBUG landmarks (``scheme="ibug68"``; trained
        on iBUG 300-W, whose terms exclude commercial use; a 100 MB file that
        takes about 0.45 s to load), or dlib's 5 points (``scheme="dlib5"``:
        the outer and inner corners of the image-right eye, then of the
        image-left eye, then the base of the nose; dlib's own data set,
        public domain; 9 MB, about 0.05 s) — all that dlib's face chip and
        descriptor need, and what dlib's face recognition example uses.

    Each face comes with its box, its landmarks, the five ArcFace points
    derived from them (from 5 dlib points: the eye centres, and NaN for the
    nose tip and mouth corners, which that predictor does not give) and the
    detector score.
    """

    def __init__(
        self,
        detector: str = "hog",
        *,
        upsample: int | str = 1,
        adjust_threshold: float = 0.0,
        model_dir: str | os.PathLike | None = None,
        max_side: int | None = 1600,
        points: int = 68,
    ) -> None:
        if points not in (5, 68):
            raise InputError(f"expected points 68 or 5 (the shape predictor), got {points!r}")
        self.points = int(points)
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
            self._det = _frontal_face_detector(dlib)
        else:
            self._det = _load(
                dlib, dlib.cnn_face_detection_model_v1, self.model_dir / _FILES["cnn"]
            )
        self.scheme = "ibug68" if self.points == 68 else "dlib5"
        sp_file = _FILES["landmarks68" if self.points == 68 else "landmarks5"]
        self._sp = _load(dlib, dlib.shape_predictor, self.model_dir / sp_file)

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
        """The predictor's landmarks inside a given box: (``points``, 2) float32 pixels."""
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
                    points5=_points5(lm),
                    landmarks=lm,
                    scheme=self.scheme,
                    detector_score=score,
                )
            )
        return faces


def _points5(lm: np.ndarray) -> np.ndarray:
    """ArcFace five points from 68 iBUG or 5 dlib landmarks (NaN where dlib's 5 give none)."""
    if lm.shape == (68, 2):
        return points5_from_ibug68(lm)
    out = np.full((5, 2), np.nan, np.float32)
    out[0] = lm[2:4].mean(0)  # image-left eye: dlib5 points 2, 3
    out[1] = lm[0:2].mean(0)  # image-right eye: dlib5 points 0, 1
    return out


def _make_onnx_descriptor(path: Path, threads: int | None):  # noqa: ANN202
    from pyfacematch.embed.dlib_onnx import DlibOnnxDescriptor

    return DlibOnnxDescriptor(path, threads=threads)


class _Background:
    """``fn(*args)`` run in a daemon thread; :meth:`result` waits for it and returns its value or
    raises its exception (a model that fails to load fails the first call that needs it)."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        # not a daemon: an embedder made and never used lets the load finish before exit
        self._thread = threading.Thread(target=self._run, args=(fn, args))
        self._thread.start()

    def _run(self, fn: Any, args: tuple[Any, ...]) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class DlibEmbedder(Embedder):
    """dlib's face recognition pipeline as an :class:`Embedder` (128-d templates).

    Faces are aligned as ``dlib.get_face_chip`` does (150 × 150, padding 0.25,
    on the detector's landmarks) and described by dlib's ResNet model
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
    points : {5, 68}
        The shape predictor the chip is aligned on (ignored when ``detector`` is
        an instance). 5 (default): dlib's 5-point model, as dlib's own face
        recognition example and face_recognition's ``face_encodings`` use it; it
        loads in a ninth of the time of the 68-point one and is public domain
        (the 68-point model's training data excludes commercial use). On the
        54 shared photos both give leave-one-out rank-1 1.0, genuine cosines
        from 0.930 (5) / 0.928 (68), impostor ones up to 0.893 / 0.892 (the
        default threshold 0.91 separates both, and a 5-point probe against a
        68-point gallery too); the same photo's two descriptors have cosine
        ≥ 0.99. 68: the reference pipeline of ``../shared/data`` (and faces
        carry 68 landmarks).
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
        points: int = 5,
        **kwargs: int,
    ) -> None:
        super().__init__(**kwargs)
        if descriptor not in ("auto", "onnx", "dlib"):
            raise InputError(f"expected descriptor 'auto', 'onnx' or 'dlib', got {descriptor!r}")
        dlib = _import_dlib()
        self._dlib = dlib
        mdir = dlib_model_dir(model_dir)
        self._resnet_path = mdir / _FILES["resnet"]
        self._fr_model = None  # dlib's own network: loaded on first use (jitters, or no onnx)
        self._onnx_loader: _Background | None = None
        if descriptor == "auto":
            descriptor = "onnx" if _onnx_available() else "dlib"
        if descriptor == "onnx":
            # the onnxruntime session is made in a thread while the detector loads and the first
            # images are decoded and detected; the first descriptor call waits for it
            self._onnx_loader = _Background(_make_onnx_descriptor, self._resnet_path, threads)
        if isinstance(detector, DlibDetector):
            self.detector = detector
        else:
            self.detector = DlibDetector(
                detector, upsample=upsample, model_dir=model_dir, max_side=max_side, points=points
            )
        self.num_jitters = int(num_jitters)
        self.padding = float(padding)
        self.chip_size = 150
        if descriptor == "dlib":
            self._fr_model = self._fr
        self.descriptor = descriptor

    @property
    def _onnx(self):  # noqa: ANN202 - DlibOnnxDescriptor or None
        return None if self._onnx_loader is None else self._onnx_loader.result()

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
        """A face from caller-given landmarks, rounded to integers: (68, 2) iBUG or (5, 2) dlib's
        5 points (see :class:`DlibDetector`), pixels."""
        lm = np.asarray(landmarks, dtype=np.float32)
        if lm.shape not in ((68, 2), (5, 2)):
            raise LandmarkError(
                "the dlib embedder aligns on iBUG 68-point landmarks or dlib's 5 points, got "
                f"shape {lm.shape}"
            )
        if not np.isfinite(lm).all():
            raise LandmarkError("landmarks hold NaN or Inf: cannot align this face")
        box = np.array([*lm.min(0), *lm.max(0)], dtype=np.float32)
        scheme = "ibug68" if lm.shape[0] == 68 else "dlib5"
        return Face(box=box, points5=_points5(lm), landmarks=lm, scheme=scheme)

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        """dlib's 150 × 150 face chip, (150, 150, 3) uint8."""
        if face.landmarks is None or face.landmarks.shape not in ((68, 2), (5, 2)):
            raise LandmarkError(
                "the dlib embedder needs the face's 68 or 5 dlib landmarks to align it"
            )
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
