"""dlib's descriptor network rebuilt on onnxruntime: the same descriptors as dlib on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyfacematch.embed.dlib import _onnx_available, dlib_available

if not (dlib_available() and _onnx_available()):
    pytest.skip(
        "dlib, its models, onnx or onnxruntime are not installed (pip install 'pyfacematch[dlib]')",
        allow_module_level=True,
    )

from pyfacematch.embed.dlib import DlibEmbedder, dlib_model_dir  # noqa: E402
from pyfacematch.embed.dlib_onnx import DlibOnnxDescriptor, load_dlib_resnet  # noqa: E402
from pyfacematch.embed.images import load_image  # noqa: E402
from pyfacematch.errors import InputError, ModelError  # noqa: E402

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = "dlib_face_recognition_resnet_model_v1.dat"


def _photos() -> list[Path]:
    shared = sorted((SHARED / "faces").glob("*/*.jpg"))
    return shared if shared else sorted((DATA / "faces").glob("*/*.jpg"))


def _unit(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def dlib_emb():
    return DlibEmbedder(descriptor="dlib")


def test_onnx_descriptor_equals_dlib_on_every_photo(dlib_emb):
    # every shared photo when the 54 are here, the 6 of tests/data otherwise; chips aligned on
    # dlib's 5 points (the default)
    imgs = [load_image(p) for p in _photos()]
    chips = [dlib_emb.align(im, dlib_emb.detect(im)[0]) for im in imgs]
    ref = dlib_emb.embed_crops(chips)
    got = DlibOnnxDescriptor(dlib_model_dir() / MODEL, threads=1, batch_size=7)(chips)
    assert got.shape == ref.shape == (len(chips), 128)
    cos = (_unit(ref) * _unit(got)).sum(1)
    print(f"{len(chips)} photos: cosine onnx vs dlib min {cos.min():.9f}")
    assert cos.min() >= 0.999  # the bar; measured here: 1 - 3e-13
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(ref, axis=1), rtol=1e-4)


def test_onnx_embedder_matches_stored_descriptors():
    small = np.load(DATA / "faces_small.npz")
    emb = DlibEmbedder(descriptor="onnx", points=68)  # the stored descriptors' alignment
    assert emb.descriptor == "onnx" and DlibEmbedder().descriptor == "onnx"  # auto picks it
    t = emb.embed([str(DATA / p) for p in small["paths"]]).templates()
    assert (t.astype(np.float64) * small["embeddings"]).sum(1).min() > 0.999


def test_weights_reader_refuses_other_files(tmp_path):
    model = dlib_model_dir() / MODEL
    w = load_dlib_resnet(model)
    assert len(w.convs) == 29 and len(w.affines) == 29 and w.fc.shape == (256, 128)
    cut = tmp_path / "cut.dat"
    cut.write_bytes(model.read_bytes()[:5_000_000])
    with pytest.raises(ModelError, match="not dlib's face recognition ResNet|truncated"):
        load_dlib_resnet(cut)
    other = dlib_model_dir() / "shape_predictor_5_face_landmarks.dat"
    if other.is_file():
        with pytest.raises(ModelError, match="not dlib's face recognition ResNet"):
            load_dlib_resnet(other)
    with pytest.raises(ModelError, match="cannot read"):
        load_dlib_resnet(tmp_path / "missing.dat")
    with pytest.raises(InputError, match="descriptor"):
        DlibEmbedder(descriptor="gpu")


def test_hand_written_onnx_is_valid():
    onnx = pytest.importorskip("onnx", reason="onnx (test extra) checks the hand-written model")
    from pyfacematch.embed.dlib_onnx import build_dlib_resnet_onnx

    model = build_dlib_resnet_onnx(load_dlib_resnet(dlib_model_dir() / MODEL))
    m = onnx.load_from_string(model)
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version == 13 and m.ir_version == 8
    assert [o.name for o in m.graph.output] == ["descriptor"]
