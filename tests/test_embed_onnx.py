"""ONNX embedder: a small model built here, checked against a numpy reference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx package builds the test model")
pytest.importorskip("onnxruntime", reason="the ONNX embedder runs on onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pyfacematch.embed.align import align_face, points5_from_ibug68  # noqa: E402
from pyfacematch.embed.onnx import OnnxEmbedder  # noqa: E402
from pyfacematch.errors import InputError, ModelError  # noqa: E402

DATA = Path(__file__).parent / "data"


def _linear_model(
    w: np.ndarray,
    *,
    size=(112, 112),
    layout="NCHW",
    batch="N",
    out_dim_static=True,
    metadata: dict | None = None,
) -> bytes:
    """y = flatten(x) @ w, x float32 (batch, 3, h, w) or (batch, h, w, 3)."""
    h, wd = size
    shape = [batch, 3, h, wd] if layout == "NCHW" else [batch, h, wd, 3]
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info(
        "embedding", TensorProto.FLOAT, [batch, w.shape[1] if out_dim_static else "D"]
    )
    nodes = [
        helper.make_node("Flatten", ["data"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["embedding"]),
    ]
    graph = helper.make_graph(nodes, "linear", [x], [y], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if metadata is not None:
        helper.set_model_props(model, {"pyfacematch": json.dumps(metadata)})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _weights(size=(112, 112), dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((3 * size[0] * size[1], dim)) / 100).astype(np.float32)


def _reference(crops, w, *, layout="NCHW", bgr=False, mean=127.5, std=127.5):
    x = np.asarray(crops, np.float64)
    if bgr:
        x = x[..., ::-1]
    x = (x - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    y = x.reshape(len(x), -1) @ w.astype(np.float64)
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def _images_and_points(n=3, seed=1):
    rng = np.random.default_rng(seed)
    imgs, pts = [], []
    ref = np.array(
        [[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]], np.float64
    )
    for _ in range(n):
        imgs.append(rng.integers(0, 256, (160, 180, 3), dtype=np.uint8))
        th = rng.uniform(-0.3, 0.3)
        r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) * rng.uniform(0.8, 1.3)
        pts.append((ref @ r.T + rng.uniform(10, 30, 2)).astype(np.float32))
    return imgs, pts


@pytest.mark.parametrize(
    ("layout", "batch", "static_out"),
    [("NCHW", "N", True), ("NHWC", "N", False), ("NCHW", 1, True)],
)
def test_onnx_matches_numpy_reference(layout, batch, static_out):
    w = _weights()
    model = _linear_model(w, layout=layout, batch=batch, out_dim_static=static_out)
    emb = OnnxEmbedder(model, intra_op_threads=1, batch_size=2)
    assert emb.dim == 16 and emb.config.layout == layout and emb.input_size == (112, 112)
    assert emb.config.fixed_batch == (1 if batch == 1 else None)
    imgs, pts = _images_and_points()
    b = emb.embed(imgs, landmarks=pts)
    assert [r.reason for r in b.images] == [None] * 3
    crops = [align_face(i, p, (112, 112)) for i, p in zip(imgs, pts)]
    np.testing.assert_allclose(b.templates(), _reference(crops, w, layout=layout), atol=2e-5)
    assert b.templates().dtype == np.float32


def test_onnx_config_from_metadata_and_argument(tmp_path):
    size = (96, 80)
    w = _weights(size, dim=8, seed=3)
    meta = {"color": "BGR", "mean": [0, 10, 20], "std": 2.0, "name": "tiny"}
    path = tmp_path / "tiny.onnx"
    path.write_bytes(_linear_model(w, size=size, metadata=meta))
    imgs, pts = _images_and_points(2, seed=4)
    crops = [align_face(i, p, size) for i, p in zip(imgs, pts)]

    emb = OnnxEmbedder(path)
    assert emb.name == "tiny" and emb.input_size == size and emb.config.color == "BGR"
    got = emb.embed(imgs, landmarks=pts).templates()
    np.testing.assert_allclose(
        got, _reference(crops, w, bgr=True, mean=[0, 10, 20], std=2.0), atol=2e-5
    )

    # the config argument (dict or JSON file) overrides the metadata
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"color": "RGB", "mean": 127.5, "std": 127.5}))
    for c in (cfg, {"color": "RGB", "mean": 127.5, "std": 127.5}):
        got = OnnxEmbedder(path, config=c).embed(imgs, landmarks=pts).templates()
        np.testing.assert_allclose(got, _reference(crops, w), atol=2e-5)


def test_onnx_68_point_landmarks_give_the_same_crop_as_their_5_points():
    w = _weights(dim=8, seed=5)
    emb = OnnxEmbedder(_linear_model(w))
    small = np.load(DATA / "faces_small.npz")
    lm68 = small["landmarks"][:2]
    imgs = [str(DATA / p) for p in small["paths"][:2]]
    a = emb.embed(imgs, landmarks=list(lm68)).templates()
    b = emb.embed(imgs, landmarks=list(points5_from_ibug68(lm68))).templates()
    np.testing.assert_array_equal(a, b)


def test_onnx_errors(tmp_path):
    w = _weights(dim=4)
    model = _linear_model(w)
    with pytest.raises(ModelError):
        OnnxEmbedder(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        OnnxEmbedder(tmp_path / "junk.onnx")
    with pytest.raises(InputError):
        OnnxEmbedder(model, config={"colour": "BGR"})
    with pytest.raises(InputError):
        OnnxEmbedder(model, config={"layout": "NCWH"})
    emb = OnnxEmbedder(model)
    imgs, pts = _images_and_points(2)
    with pytest.raises(InputError, match="no detector"):
        emb.embed(imgs)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    b = emb.embed([imgs[0], tmp_path / "bad.jpg"], landmarks=[pts[0], pts[1]])
    assert [r.reason for r in b.images] == [None, "not_an_image"]  # too short to identify
    b = emb.embed(imgs, landmarks=[pts[0], np.zeros((7, 2))])
    assert [r.reason for r in b.images] == [None, "bad_landmarks"]


def test_onnx_with_dlib_detector():
    from pyfacematch.embed.dlib import DlibDetector, dlib_available

    if not dlib_available():
        pytest.skip("dlib or its models are not installed (pip install 'pyfacematch[dlib]')")
    w = _weights(dim=8, seed=7)
    det = DlibDetector()
    emb = OnnxEmbedder(_linear_model(w), detector=det)
    small = np.load(DATA / "faces_small.npz")
    paths = [str(DATA / p) for p in small["paths"][:2]]
    b = emb.embed(paths)
    assert [r.reason for r in b.images] == [None, None]
    from pyfacematch.embed.images import load_image

    crops = []
    for p in paths:
        img = load_image(p)
        face = max(det.detect(img), key=lambda f: f.area)
        crops.append(align_face(img, face.points5, (112, 112)))
    np.testing.assert_allclose(b.templates(), _reference(crops, w), atol=2e-5)
    # dlib's 5-point predictor gives no mouth corners: a reject with its reason, no NaN crop
    b5 = OnnxEmbedder(_linear_model(w), detector=DlibDetector(points=5)).embed(paths)
    assert [r.reason for r in b5.images] == ["bad_landmarks"] * 2
    assert "points=68" in b5.images[0].message


def test_onnx_real_model():
    path = os.environ.get("PYFACEMATCH_ONNX_MODEL")
    if not path:
        pytest.skip(
            "set PYFACEMATCH_ONNX_MODEL to an ArcFace/SFace-style .onnx file "
            "(and PYFACEMATCH_ONNX_CONFIG to its JSON config if needed) to run this test"
        )
    emb = OnnxEmbedder(path, config=os.environ.get("PYFACEMATCH_ONNX_CONFIG"))
    assert 128 <= emb.dim <= 512
    small = np.load(DATA / "faces_small.npz")
    paths = [str(DATA / p) for p in small["paths"]]
    b = emb.embed(paths, landmarks=list(small["landmarks"]))
    assert all(r.ok for r in b.images)
    t = b.templates().astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-5)
    s = t @ t.T
    np.fill_diagonal(s, -np.inf)
    labels = small["labels"]
    assert (labels[s.argmax(1)] == labels).all()  # leave-one-out rank-1 on 2 people x 3


def test_create_embedder_onnx(tmp_path):
    from pyfacematch.embed import create_embedder

    w = _weights(dim=8, seed=9)
    path = tmp_path / "m.onnx"
    path.write_bytes(_linear_model(w))
    emb = create_embedder(f"onnx:{path}", detector=None, batch_size=4)
    assert isinstance(emb, OnnxEmbedder) and emb.batch_size == 4 and emb.detector is None
    imgs, pts = _images_and_points(1)
    crop = align_face(imgs[0], pts[0], (112, 112))
    np.testing.assert_allclose(
        emb.embed(imgs, landmarks=pts).templates(), _reference([crop], w), atol=2e-5
    )
