"""dlib embedder on real photos, against the descriptors a reference pipeline stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyfacematch.embed.dlib import dlib_available

if not dlib_available():
    pytest.skip(
        "dlib or its models are not installed (pip install 'pyfacematch[dlib]')",
        allow_module_level=True,
    )

from pyfacematch.embed.dlib import DlibDetector, DlibEmbedder  # noqa: E402
from pyfacematch.embed.images import load_image  # noqa: E402

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def small():
    d = np.load(DATA / "faces_small.npz")
    return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def embedder():
    return DlibEmbedder()


def _loo_rank1(t: np.ndarray, labels: np.ndarray) -> float:
    s = t.astype(np.float64) @ t.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    return float((labels[s.argmax(1)] == labels).mean())


def test_dlib_matches_stored_descriptors(embedder, small):
    paths = [str(DATA / p) for p in small["paths"]]
    b = embedder.embed(paths)
    assert all(r.ok for r in b.images)
    t = b.templates()
    assert t.shape == (6, 128) and t.dtype == np.float32
    cos = (t.astype(np.float64) * small["embeddings"]).sum(1)
    assert cos.min() > 0.999  # same models, same photos: only decoding differences remain
    lm = np.stack([r.faces[0].landmarks for r in b.images])
    assert np.abs(lm - small["landmarks"]).max() <= 4.0  # pixels
    assert all(r.faces[0].scheme == "ibug68" for r in b.images)
    assert _loo_rank1(t, small["labels"]) == 1.0
    q = np.array([r.faces[0].quality for r in b.images])
    assert ((q > 0) & (q <= 1)).all()


def test_dlib_caller_landmarks(embedder, small):
    paths = [str(DATA / p) for p in small["paths"][:3]]
    b = embedder.embed(paths, landmarks=list(small["landmarks"][:3]))
    cos = (b.templates().astype(np.float64) * small["embeddings"][:3]).sum(1)
    assert cos.min() > 0.999


def test_dlib_several_faces_and_no_face(embedder, small, tmp_path):
    a = load_image(DATA / small["paths"][0])
    c = load_image(DATA / small["paths"][3])
    c_big = np.repeat(np.repeat(c, 2, axis=0), 2, axis=1)  # 300 x 300: the larger face
    canvas = np.full((300, 460, 3), 127, np.uint8)
    canvas[75:225, :150] = a
    canvas[:, 160:] = c_big
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    (tmp_path / "fake.jpg").write_text("not an image")
    images = [canvas, noise, tmp_path / "fake.jpg"]

    ref = embedder.embed([a, c]).templates().astype(np.float64)
    b = embedder.embed(images, policy="all")
    assert [r.reason for r in b.images] == [None, "no_face", "not_an_image"]
    r0 = b.images[0]
    assert r0.n_detected == 2 and [f.index for f in r0.faces] == [0, 1]
    t = r0.templates.astype(np.float64)
    # face 0 is the larger (the upscaled photo c), face 1 the photo a
    assert t[0] @ ref[1] > 0.95 and t[1] @ ref[0] > 0.95
    assert r0.faces[0].box[0] >= 150
    largest = embedder.embed(images[:1], policy="largest").images[0]
    assert len(largest.faces) == 1 and largest.templates[0] @ ref[1] > 0.95
    single = embedder.embed(images[:1], policy="single").images[0]
    assert single.reason == "several_faces" and single.templates.shape == (0, 128)


def test_dlib_detector_alone(embedder, small):
    det = embedder.detector
    assert isinstance(det, DlibDetector) and det.upsample == 1
    faces = det.detect(load_image(DATA / small["paths"][0]))
    assert len(faces) == 1
    f = faces[0]
    np.testing.assert_allclose(f.box, small["boxes"][0], atol=2)
    assert f.points5.shape == (5, 2) and f.landmarks.shape == (68, 2)


@pytest.mark.slow
def test_dlib_leave_one_out_on_all_54_photos(embedder):
    npz = SHARED / "faces_johns.npz"
    if not npz.is_file():
        pytest.skip(f"the 54-photo set is not here ({SHARED}); it lives outside a user's clone")
    d = np.load(npz)
    paths = [str(SHARED / "faces" / p.split("/", 1)[1]) for p in d["paths"]]
    b = embedder.embed(paths)
    assert not b.failures
    t = b.templates()
    assert _loo_rank1(t, d["labels"]) == 1.0
    assert (t.astype(np.float64) * d["embeddings"]).sum(1).min() > 0.999


def test_create_embedder_dlib(small):
    from pyfacematch.embed import create_embedder

    emb = create_embedder("dlib:hog", upsample=0)
    assert isinstance(emb, DlibEmbedder) and emb.detector.upsample == 0
    r = emb.embed_image(str(DATA / small["paths"][0]))
    assert r.ok and float(r.templates[0] @ small["embeddings"][0]) > 0.99


def test_dlib_detects_large_images_downscaled(embedder, small):
    img = load_image(DATA / small["paths"][1])
    big = np.repeat(np.repeat(img, 4, axis=0), 4, axis=1)  # 600 x 600
    det = DlibDetector(upsample=0, max_side=160)
    faces = det.detect(big)
    assert len(faces) == 1
    # box found at ~1/4 scale and scaled back; landmarks found at full resolution
    a, b = faces[0].box.astype(np.float64), small["boxes"][1] * 4.0
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    assert inter / union > 0.6  # detector boxes vary with scale; the face is the same
    np.testing.assert_allclose(faces[0].landmarks, small["landmarks"][1] * 4 + 1.5, atol=14)
    emb = DlibEmbedder(det)
    t = emb.embed([big]).templates()
    assert float(t[0] @ small["embeddings"][1]) > 0.97
