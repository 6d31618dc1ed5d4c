"""dlib's face descriptor network on onnxruntime: the same 128-d descriptors, several times faster.

Why: the ``dlib-bin`` wheel is built without a BLAS, so dlib's ResNet runs its
convolutions on its own single-threaded code (about 80 ms of CPU per face on
the development machine, 85 % of the photo pipeline). onnxruntime runs the
same network with its optimised kernels (MLAS: AVX2 / AVX-512 / NEON picked at
run time) on as many threads as it is given.

How: the network (``dlib_face_recognition_resnet_model_v1``, CC0) is rebuilt
here as an ONNX graph from its weights, read from dlib's own ``.dat`` file —
nothing is downloaded, no converted file is shipped. The architecture is
dlib's ``anet_type`` (dlib's ``examples/dnn_face_recognition_ex.cpp``)::

    input_rgb_image_sized<150>: (pixel - channel mean) / 256, planes R, G, B
    con<32,7,7,2,2> affine relu max_pool<3,3,2,2>
    level 4: 3 × ares<32>; level 3: ares_down<64> + 3 × ares<64>;
    level 2: ares_down<128> + 2 × ares<128>; level 1: ares_down<256> + 2 × ares<256>;
    level 0: ares_down<256>; avg_pool_everything; fc_no_bias<128>

    ares<N>(x)      = relu(x + affine(con3x3(relu(affine(con3x3(x))))))
    ares_down<N>(x) = relu(avg_pool2x2/2(x) ⊕ affine(con3x3(relu(affine(con3x3/2(x))))))

dlib's defaults fix the paddings (a convolution or pooling with stride 1 pads
``size // 2``, one with stride 2 pads 0) and ``add_prev`` adds tensors of
different shapes by zero-padding both to the larger one (⊕ above): the pooled
skip path has fewer channels, and at two levels one pixel more or less than
the strided path. The weights are read in serialisation order (input layer
first): each ``con_``, ``affine_`` and ``fc_`` layer stores a parameter tensor
as dlib's tensor format version 2 (dimensions as dlib variable-length
integers, then little-endian float32), found by its exact header.
:func:`load_dlib_resnet` checks that every expected tensor is found once, in
order. ``tests/test_embed_dlib_onnx.py`` proves the result on real photos:
cosine ≥ 0.999 to dlib's descriptor for every face.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.errors import ModelError

__all__ = [
    "DlibResNetWeights",
    "load_dlib_resnet",
    "build_dlib_resnet_onnx",
    "dlib_resnet_onnx_cached",
    "DlibOnnxDescriptor",
]

#: input_rgb_image_sized's default channel means (R, G, B), as dlib's face model uses them.
CHANNEL_MEANS = (122.782, 117.001, 104.298)

# (kind, channels out, stride) from the input layer to the output
_LEVELS = [(32, False)] * 3
_LEVELS += [(64, True)] + [(64, False)] * 3
_LEVELS += [(128, True)] + [(128, False)] * 2
_LEVELS += [(256, True)] + [(256, False)] * 2
_LEVELS += [(256, True)]


def _pack_int(n: int) -> bytes:
    """dlib's variable-length integer: a byte with the length, then little-endian bytes."""
    out = []
    while True:
        out.append(n & 0xFF)
        n >>= 8
        if n == 0:
            break
    return bytes([len(out)]) + bytes(out)


def _tensor_header(*dims: int) -> bytes:
    # tensor format version 2, then num_samples, k, nr, nc
    return _pack_int(2) + b"".join(_pack_int(d) for d in dims)


@dataclass
class DlibResNetWeights:
    """The network's parameters in order: convolutions (O, I, kh, kw) + bias, affines, fc."""

    convs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    affines: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    fc: np.ndarray = field(default_factory=lambda: np.zeros((256, 128), np.float32))


def load_dlib_resnet(path: str | os.PathLike[str]) -> DlibResNetWeights:
    """Read the weights of ``dlib_face_recognition_resnet_model_v1.dat``.

    Raises
    ------
    ModelError
        When the file is missing or a parameter tensor of the expected shape is not found
        (another network, or a damaged file).
    """
    p = Path(path)
    try:
        buf = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the dlib face model {p}: {exc}") from None
    pos = 0
    w = DlibResNetWeights()

    def take(n: int, *dims: int) -> np.ndarray:
        nonlocal pos
        head = _tensor_header(n, *dims)
        at = buf.find(head, pos)
        if at < 0:
            raise ModelError(
                f"{p} is not dlib's face recognition ResNet v1 (no parameter tensor of {n} "
                f"values after byte {pos}): use the file from face-recognition-models"
            )
        start = at + len(head)
        count = n * int(np.prod(dims))
        if start + 4 * count > len(buf):
            raise ModelError(f"{p} is truncated: reinstall face-recognition-models")
        pos = start + 4 * count
        return np.frombuffer(buf, "<f4", count=count, offset=start).astype(np.float32)

    def conv(cin: int, cout: int, k: int) -> None:
        v = take(cin * cout * k * k + cout, 1, 1, 1)
        w.convs.append((v[:-cout].reshape(cout, cin, k, k).copy(), v[-cout:].copy()))

    def affine(c: int) -> None:
        v = take(2 * c, 1, 1, 1)
        w.affines.append((v[:c].copy(), v[c:].copy()))

    conv(3, 32, 7)
    affine(32)
    cin = 32
    for cout, _down in _LEVELS:
        conv(cin, cout, 3)
        affine(cout)
        conv(cout, cout, 3)
        affine(cout)
        cin = cout
    w.fc = take(256, 128, 1, 1).reshape(256, 128).copy()
    if not all(np.isfinite(c[0]).all() for c in w.convs) or not np.isfinite(w.fc).all():
        raise ModelError(f"{p} holds non-finite weights: reinstall face-recognition-models")
    return w


# -- a minimal ONNX writer ----------------------------------------------------------------------
# The graph is serialised here directly in protobuf's wire format (field numbers of onnx.proto3,
# IR version 8, opset 13) instead of through the ``onnx`` package: importing ``onnx`` costs about
# a second of start-up, more than building and loading the whole model. ``tests`` check the bytes
# with ``onnx.checker`` where onnx is installed.


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_int(num: int, v: int) -> bytes:
    return _varint(num << 3) + _varint(int(v))


def _field_bytes(num: int, v: bytes | str) -> bytes:
    b = v.encode() if isinstance(v, str) else v
    return _varint((num << 3) | 2) + _varint(len(b)) + b


def _tensor(name: str, arr: np.ndarray) -> bytes:
    a = np.ascontiguousarray(arr)
    dtype = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}[a.dtype]
    body = b"".join(_field_int(1, d) for d in a.shape)
    body += _field_int(2, dtype) + _field_bytes(8, name)
    return body + _field_bytes(9, a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())


def _attr(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        return _field_bytes(1, name) + _field_bytes(4, value) + _field_int(20, 3)
    if isinstance(value, int):
        return _field_bytes(1, name) + _field_int(3, value) + _field_int(20, 2)
    ints = b"".join(_field_int(8, int(v)) for v in value)
    return _field_bytes(1, name) + ints + _field_int(20, 7)


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> bytes:
    body = b"".join(_field_bytes(1, x) for x in inputs)
    body += b"".join(_field_bytes(2, y) for y in outputs)
    body += _field_bytes(3, outputs[0]) + _field_bytes(4, op)
    return body + b"".join(_field_bytes(5, _attr(k, v)) for k, v in attrs.items())


def _value_info(name: str, dims: list[int | str]) -> bytes:
    shape = b"".join(
        _field_bytes(1, _field_bytes(2, d) if isinstance(d, str) else _field_int(1, d))
        for d in dims
    )
    tensor_type = _field_int(1, 1) + _field_bytes(2, shape)  # elem_type FLOAT
    return _field_bytes(1, name) + _field_bytes(2, _field_bytes(1, tensor_type))


def build_dlib_resnet_onnx(weights: DlibResNetWeights) -> bytes:
    """The ONNX model (IR 8, opset 13) as bytes: input ``data`` (N, 3, 150, 150) float32, already
    normalised as dlib's input layer does; output ``descriptor`` (N, 128) float32."""
    nodes: list[bytes] = []
    inits: list[bytes] = []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def const(arr: np.ndarray, prefix: str) -> str:
        n = name(prefix)
        inits.append(_tensor(n, arr))
        return n

    def conv(x: str, shape: tuple[int, int, int], i: int, stride: int) -> tuple[str, tuple]:
        wt, b = weights.convs[i]
        k = wt.shape[-1]
        pad = 0 if stride != 1 else k // 2  # dlib's default padding
        y = name("conv")
        nodes.append(
            _node(
                "Conv",
                [x, const(wt, "W"), const(b, "B")],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        h = (shape[1] + 2 * pad - k) // stride + 1
        return y, (wt.shape[0], h, h)

    def affine(x: str, i: int) -> str:
        g, b = weights.affines[i]
        m, y = name("mul"), name("aff")
        nodes.append(_node("Mul", [x, const(g.reshape(1, -1, 1, 1), "G")], [m]))
        nodes.append(_node("Add", [m, const(b.reshape(1, -1, 1, 1), "Be")], [y]))
        return y

    def relu(x: str) -> str:
        y = name("relu")
        nodes.append(_node("Relu", [x], [y]))
        return y

    def pad_to(x: str, shape: tuple, target: tuple) -> str:
        extra = [t - s for s, t in zip(shape, target)]
        if not any(extra):
            return x
        pads = np.array([0, 0, 0, 0, 0, *extra], np.int64)
        y = name("pad")
        nodes.append(_node("Pad", [x, const(pads, "P")], [y], mode="constant"))
        return y

    def add(a: str, sa: tuple, b: str, sb: tuple) -> tuple[str, tuple]:
        # dlib's add_prev: both zero-padded to the larger shape, then added
        t = tuple(max(u, v) for u, v in zip(sa, sb))
        y = name("add")
        nodes.append(_node("Add", [pad_to(a, sa, t), pad_to(b, sb, t)], [y]))
        return y, t

    x, shape = conv("data", (3, 150, 150), 0, 2)
    x = relu(affine(x, 0))
    mp = name("maxpool")
    nodes.append(_node("MaxPool", [x], [mp], kernel_shape=[3, 3], strides=[2, 2]))
    x, shape = mp, (shape[0], (shape[1] - 3) // 2 + 1, (shape[2] - 3) // 2 + 1)
    ci = 1
    for _cout, down in _LEVELS:
        y, s1 = conv(x, shape, ci, 2 if down else 1)
        y = relu(affine(y, ci))
        y, s2 = conv(y, s1, ci + 1, 1)
        y = affine(y, ci + 1)
        ci += 2
        if down:
            ap = name("avgpool")
            nodes.append(_node("AveragePool", [x], [ap], kernel_shape=[2, 2], strides=[2, 2]))
            sp = (shape[0], (shape[1] - 2) // 2 + 1, (shape[2] - 2) // 2 + 1)
            x, shape = add(ap, sp, y, s2)
        else:
            x, shape = add(y, s2, x, shape)
        x = relu(x)
    gp, fl = name("gap"), name("flat")
    nodes.append(_node("GlobalAveragePool", [x], [gp]))
    nodes.append(_node("Flatten", [gp], [fl], axis=1))
    nodes.append(_node("MatMul", [fl, const(weights.fc, "FC")], ["descriptor"]))
    graph = b"".join(_field_bytes(1, n) for n in nodes)
    graph += _field_bytes(2, "dlib_face_recognition_resnet_model_v1")
    graph += b"".join(_field_bytes(5, t) for t in inits)
    graph += _field_bytes(11, _value_info("data", ["N", 3, 150, 150]))
    graph += _field_bytes(12, _value_info("descriptor", ["N", 128]))
    opset = _field_bytes(1, "") + _field_int(2, 13)
    return (
        _field_int(1, 8)
        + _field_bytes(2, "pyfacematch")
        + _field_bytes(7, graph)
        + _field_bytes(8, opset)
    )


def dlib_resnet_onnx_cached(model_path: str | os.PathLike[str]) -> bytes:
    """:func:`build_dlib_resnet_onnx` of ``model_path``'s weights, through the model cache.

    Building costs about 0.15 s a process (reading the weights, writing the graph); the cached
    graph is read and its SHA-256 checked instead (:mod:`pyfacematch.embed.cache`). The entry is
    named by the weight file's resolved path, size and modification time and by this module's
    own source, so a changed weight file or a changed graph builder makes a new entry.
    """
    from pyfacematch.embed.cache import cached_bytes

    p = Path(model_path)
    try:
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|".encode() + Path(__file__).read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the dlib face model {p}: {exc}") from None
    name = f"dlib_resnet_v1-{hashlib.sha256(key).hexdigest()[:24]}.onnx"
    return cached_bytes(name, lambda: build_dlib_resnet_onnx(load_dlib_resnet(p)))


class DlibOnnxDescriptor:
    """dlib's descriptor network on onnxruntime: 150 × 150 chips → (n, 128) descriptors.

    Parameters
    ----------
    model_path : path
        ``dlib_face_recognition_resnet_model_v1.dat``.
    threads : int or None
        onnxruntime intra-op threads (None: onnxruntime's default, one per core; 1 in each
        worker of a :class:`~pyfacematch.embed.parallel.ParallelEmbedder`).
    batch_size : int
        Chips per onnxruntime call.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        batch_size: int = 16,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError(
                "dlib's descriptor on onnxruntime needs onnxruntime: pip install 'pyfacematch[dlib]'"
            ) from exc
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        model = dlib_resnet_onnx_cached(model_path)
        self._sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self.batch_size = max(1, int(batch_size))
        self._mean = np.array(CHANNEL_MEANS, np.float32).reshape(1, 3, 1, 1)

    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        """(n, 150, 150, 3) uint8 RGB → (n, 3, 150, 150) float32 as dlib's input layer makes it."""
        x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), np.float32)
        return (x - self._mean) / np.float32(256.0)

    def __call__(self, chips: list[np.ndarray] | np.ndarray) -> np.ndarray:
        arr = np.stack([np.asarray(c, np.uint8) for c in chips]) if len(chips) else None
        if arr is None:
            return np.zeros((0, 128), np.float32)
        if arr.shape[1:] != (150, 150, 3):
            raise ModelError(f"dlib's descriptor takes 150 x 150 x 3 chips, got {arr.shape[1:]}")
        out = [
            self._sess.run(None, {"data": self.preprocess(arr[i : i + self.batch_size])})[0]
            for i in range(0, len(arr), self.batch_size)
        ]
        return np.concatenate(out, axis=0).astype(np.float32)
