"""ONNX face-recognition models (ArcFace/SFace style) on onnxruntime.

The user supplies the model file: no package on the registries ships one.
Faces are aligned on their five points to the ArcFace reference
(:mod:`pyfacematch.embed.align`) at the model's input size, normalised, and
run in batches.

How the input is prepared is read, in this order of precedence, from

1. the ``config`` argument (a dict or a JSON file),
2. a JSON string stored in the model's metadata under the key ``"pyfacematch"``,
3. the model's input and output shapes (layout, size, dimension),
4. defaults of ArcFace models: RGB, ``(x - 127.5) / 127.5``, 112 × 112, NCHW.

Config keys: ``input_size`` ([height, width]), ``mean`` and ``std`` (a number
or one per channel, in the model's colour order, applied to 0..255 pixels),
``color`` (``"RGB"`` or ``"BGR"``), ``layout`` (``"NCHW"`` or ``"NHWC"``),
``input`` and ``output`` (tensor names), ``name``. For example OpenCV's SFace
(``face_recognition_sface_2021dec.onnx``) takes ``{"color": "BGR", "mean": 0,
"std": 1}``; InsightFace ArcFace models (``w600k_r50.onnx``) take the defaults.

Faces come from a :class:`~pyfacematch.embed.Detector` (``detector="dlib"``
uses :class:`~pyfacematch.embed.dlib.DlibDetector` when dlib is installed) or
from landmarks the caller passes to :meth:`OnnxEmbedder.embed` (5 ArcFace
points or 68 iBUG points per face). ONNX face *detector* models (SCRFD,
YuNet, RetinaFace) are not decoded yet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.embed import Detector, EmbedBatch, Embedder, Face
from pyfacematch.embed.align import align_face, points5_from_ibug68
from pyfacematch.embed.images import ImageSource
from pyfacematch.errors import InputError, LandmarkError, ModelError

__all__ = ["OnnxEmbedder", "OnnxModelConfig"]

_KEYS = ("input_size", "mean", "std", "color", "layout", "input", "output", "name")


class OnnxModelConfig:
    """How to feed one ONNX face-recognition model (resolved, read-only).

    Attributes
    ----------
    input, output : str
        Tensor names.
    input_size : tuple of int
        (height, width) of the aligned crop.
    layout : str
        ``"NCHW"`` or ``"NHWC"``.
    color : str
        ``"RGB"`` or ``"BGR"``.
    mean, std : numpy.ndarray
        (3,) float32, applied as ``(pixel - mean) / std`` in the model's colour order.
    fixed_batch : int or None
        The model's batch size when it is fixed in the graph, else None.
    dim : int
        Embedding dimension.
    name : str
        Model name.
    """

    input: str
    output: str
    input_size: tuple[int, int]
    layout: str
    color: str
    mean: np.ndarray
    std: np.ndarray
    fixed_batch: int | None
    dim: int
    name: str

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what :func:`json.dumps` can store in a model's metadata)."""
        d = dict(self.__dict__)
        d["mean"] = [float(v) for v in d["mean"]]
        d["std"] = [float(v) for v in d["std"]]
        d["input_size"] = list(d["input_size"])
        return d

    def __repr__(self) -> str:
        return f"OnnxModelConfig({self.as_dict()})"


def _import_ort():  # noqa: ANN202
    try:
        import onnxruntime as ort  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError(
            "the ONNX embedder needs onnxruntime: pip install 'pyfacematch[onnx]'"
        ) from exc
    return ort


def _channels3(value: Any, key: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3 or not np.isfinite(arr).all():
        raise InputError(f"expected config {key!r} as a number or 3 numbers, got {value!r}")
    return arr


def _read_config(config: None | str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        cfg = dict(config)
    else:
        try:
            cfg = json.loads(Path(config).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"cannot read ONNX model config {config}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"ONNX model config {config} is not valid JSON: {exc}") from None
        if not isinstance(cfg, dict):
            raise InputError(f"ONNX model config {config} must hold a JSON object")
    unknown = sorted(set(cfg) - set(_KEYS))
    if unknown:
        raise InputError(f"unknown ONNX model config keys {unknown}; known keys are {list(_KEYS)}")
    return cfg


def _static(dim: Any) -> int | None:
    return int(dim) if isinstance(dim, (int, np.integer)) and int(dim) > 0 else None


class OnnxEmbedder(Embedder):
    """Face templates from an ONNX recognition model on five-point aligned crops.

    Parameters
    ----------
    model : path or bytes
        The ``.onnx`` file (or its bytes).
    config : dict or path to a JSON file, optional
        Overrides of what is read from the model (see the module docstring).
    detector : "dlib", Detector or None
        Where faces come from when the caller gives no landmarks. None means
        every call must pass ``landmarks``.
    providers : sequence of str, optional
        onnxruntime execution providers (default: CPU).
    intra_op_threads, inter_op_threads : int, optional
        onnxruntime thread pools (default: onnxruntime's choice, all cores).
    max_pixels, max_bytes, batch_size
        See :class:`~pyfacematch.embed.Embedder`; ``batch_size`` also caps the
        number of crops per model call.
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        *,
        config: None | str | os.PathLike | Mapping[str, Any] = None,
        detector: None | str | Detector = None,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        **kwargs: int,
    ) -> None:
        super().__init__(**kwargs)
        ort = _import_ort()
        user = _read_config(config)
        opts = ort.SessionOptions()
        if intra_op_threads is not None:
            opts.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads is not None:
            opts.inter_op_num_threads = int(inter_op_threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        what = "<bytes>" if isinstance(model, (bytes, bytearray)) else os.fspath(model)
        if not isinstance(model, (bytes, bytearray)) and not Path(model).is_file():
            raise ModelError(f"ONNX model file {what} not found: pass the path of a .onnx file")
        try:
            src = bytes(model) if isinstance(model, (bytes, bytearray)) else os.fspath(model)
            self._session = ort.InferenceSession(
                src, sess_options=opts, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load ONNX model {what}: {exc}") from None

        meta: dict[str, Any] = {}
        raw = self._session.get_modelmeta().custom_metadata_map.get("pyfacematch")
        if raw:
            try:
                meta = _read_config(json.loads(raw))
            except (json.JSONDecodeError, InputError) as exc:
                raise ModelError(
                    f"ONNX model {what} has unreadable pyfacematch metadata: {exc}"
                ) from None
        cfg = {**meta, **user}
        self.config = self._resolve(cfg, what)
        self.dim = self.config.dim
        self.name = self.config.name
        self.input_size = self.config.input_size
        self.detector = self._make_detector(detector)

    # -- configuration -------------------------------------------------------
    def _resolve(self, cfg: dict[str, Any], what: str) -> OnnxModelConfig:
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        in_name = cfg.get("input", inputs[0].name)
        out_name = cfg.get("output", outputs[0].name)
        try:
            inp = next(i for i in inputs if i.name == in_name)
            out = next(o for o in outputs if o.name == out_name)
        except StopIteration:
            raise ModelError(
                f"ONNX model {what} has no tensor named {in_name!r} / {out_name!r}; inputs are "
                f"{[i.name for i in inputs]}, outputs {[o.name for o in outputs]}"
            ) from None
        if inp.type != "tensor(float)":
            raise ModelError(f"ONNX model {what}: expected a float32 image input, got {inp.type}")
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ModelError(
                f"ONNX model {what}: expected a 4-d image input (N, C, H, W) or (N, H, W, C), "
                f"got shape {shape}"
            )
        layout = cfg.get("layout")
        if layout is None:
            if _static(shape[1]) == 3:
                layout = "NCHW"
            elif _static(shape[3]) == 3:
                layout = "NHWC"
            else:
                raise ModelError(
                    f"ONNX model {what}: cannot tell the layout from input shape {shape}; "
                    "give config layout='NCHW' or 'NHWC'"
                )
        if layout not in ("NCHW", "NHWC"):
            raise InputError(f"expected config layout 'NCHW' or 'NHWC', got {layout!r}")
        hw = shape[2:4] if layout == "NCHW" else shape[1:3]
        if "input_size" in cfg:
            size = tuple(int(v) for v in cfg["input_size"])
            if len(size) != 2 or min(size) <= 0:
                raise InputError(f"expected config input_size [height, width], got {size}")
        elif _static(hw[0]) and _static(hw[1]):
            size = (int(hw[0]), int(hw[1]))
        else:
            size = (112, 112)
        color = str(cfg.get("color", "RGB")).upper()
        if color not in ("RGB", "BGR"):
            raise InputError(f"expected config color 'RGB' or 'BGR', got {color!r}")
        mean = _channels3(cfg.get("mean", 127.5), "mean")
        std = _channels3(cfg.get("std", 127.5), "std")
        if (std == 0).any():
            raise InputError("config std must not be 0")
        fixed = _static(shape[0])
        conf = OnnxModelConfig(
            input=in_name,
            output=out_name,
            input_size=size,
            layout=layout,
            color=color,
            mean=mean,
            std=std,
            fixed_batch=fixed,
            dim=0,
            name=str(cfg.get("name", Path(what).stem if what != "<bytes>" else "onnx_model")),
        )
        oshape = list(out.shape)
        dim = _static(oshape[-1]) if oshape else None
        if dim is None or len(oshape) != 2:
            probe = self._run(conf, np.zeros((fixed or 1, size[0], size[1], 3), np.uint8))
            dim = int(probe.shape[1])
        conf.dim = int(dim)
        return conf

    @staticmethod
    def _make_detector(detector: None | str | Detector) -> Detector | None:
        if detector is None or isinstance(detector, Detector):
            return detector
        if detector == "dlib":
            from pyfacematch.embed.dlib import DlibDetector

            return DlibDetector()
        raise InputError(f"expected detector None, 'dlib' or a Detector, got {detector!r}")

    # -- model ---------------------------------------------------------------
    def preprocess(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """The model input for aligned RGB crops.

        Parameters
        ----------
        crops : (n, h, w, 3) uint8 RGB

        Returns
        -------
        numpy.ndarray
            (n, 3, h, w) or (n, h, w, 3) float32, colour order and
            normalisation of the model.
        """
        return self._preprocess(self.config, crops)

    @staticmethod
    def _preprocess(conf: OnnxModelConfig, crops: Any) -> np.ndarray:
        x = np.asarray(crops, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (conf.input_size[0], conf.input_size[1], 3):
            raise InputError(
                f"expected crops of shape (n, {conf.input_size[0]}, {conf.input_size[1]}, 3), "
                f"got {x.shape}"
            )
        if conf.color == "BGR":
            x = x[..., ::-1]
        x = (x - conf.mean) / conf.std
        if conf.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _run(self, conf: OnnxModelConfig, crops: Any) -> np.ndarray:
        x = self._preprocess(conf, crops)
        try:
            (y,) = self._session.run([conf.output], {conf.input: x})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"the ONNX model failed on a batch of {len(x)} crops: {exc}") from None
        y = np.asarray(y, dtype=np.float32)
        return y.reshape(y.shape[0], -1)

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Raw model outputs for aligned crops: (n, dim) float32 (not normalised)."""
        n = len(crops)
        out = np.empty((n, self.dim), np.float32)
        step = self.config.fixed_batch or self.batch_size
        arr = np.asarray(crops, dtype=np.uint8).reshape(n, *self.input_size, 3)
        for s in range(0, n, step):
            part = arr[s : s + step]
            if self.config.fixed_batch and len(part) < step:  # pad a fixed-size batch
                pad = np.zeros((step - len(part), *part.shape[1:]), np.uint8)
                y = self._run(self.config, np.concatenate([part, pad]))[: len(part)]
            else:
                y = self._run(self.config, part)
            if y.shape[1] != self.dim:
                raise ModelError(
                    f"the ONNX model gave {y.shape[1]} values per face, expected {self.dim}"
                )
            out[s : s + len(part)] = y
        return out

    # -- faces ---------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Face]:
        if self.detector is None:
            raise InputError(
                "this OnnxEmbedder has no detector: pass landmarks to embed(), or create it "
                "with detector='dlib' or another Detector"
            )
        return self.detector.detect(image)

    def face_from_landmarks(self, landmarks: np.ndarray) -> Face:
        """A face from caller-given points: (5, 2) ArcFace order, or (68, 2) iBUG."""
        lm = np.asarray(landmarks, dtype=np.float32)
        if lm.shape == (68, 2):
            p5, dense, scheme = points5_from_ibug68(lm), lm, "ibug68"
        elif lm.shape == (5, 2):
            p5, dense, scheme = lm, None, None
        else:
            raise LandmarkError(
                f"expected 5 ArcFace points or 68 iBUG landmarks per face, got shape {lm.shape}"
            )
        if not np.isfinite(lm).all():
            raise LandmarkError("landmarks hold NaN or Inf: cannot align this face")
        pts = dense if dense is not None else p5
        box = np.array([*pts.min(0), *pts.max(0)], dtype=np.float32)
        return Face(box=box, points5=p5, landmarks=dense, scheme=scheme)

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        """ArcFace five-point aligned crop at the model's input size, (h, w, 3) uint8."""
        if not np.isfinite(face.points5).all():
            raise LandmarkError(
                "this face has no five ArcFace points (dlib's 5-point predictor gives no mouth "
                "corners): detect with DlibDetector(points=68) for an ONNX embedder"
            )
        return align_face(image, face.points5, self.input_size)

    def embed(
        self,
        images: Iterable[ImageSource],
        *,
        policy: str = "largest",
        landmarks: Sequence[object] | None = None,
    ) -> EmbedBatch:
        sources = list(images)
        if self.detector is None and (landmarks is None or any(lm is None for lm in landmarks)):
            raise InputError(
                "this OnnxEmbedder has no detector, so every image needs landmarks: pass "
                "landmarks=[(5, 2) or (68, 2) points per image], or create it with detector='dlib'"
            )
        return super().embed(sources, policy=policy, landmarks=landmarks)

    embed.__doc__ = Embedder.embed.__doc__
