"""dlib embedder on real photos, against the descriptors a reference pipeline stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from pyfacematch.embed.dlib import dlib_available

if not dlib_available():
    pytest.skip(
        "dlib or its models are not installed (pip install 'pyfacematch[dlib]')",
        allow_module_level=True,
    )

from pyfacematch.embed.dlib import DlibDetector, DlibEmbedder  # noqa: E402
from pyfacematch.embed.images import load_image  # noqa: E402

DATA = Path(__file__).parent / "data"
SHARED = SHARED_DATA


@pytest.fixture(scope="module")
def small():
    d = np.load(DATA / "faces_small.npz")
    return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def embedder():
    # the reference pipeline of the stored descriptors: HOG, 68 landmarks, ResNet
    return DlibEmbedder(points=68)


@pytest.fixture(scope="module")
def embedder5():
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


def test_default_aligns_on_dlibs_five_points(embedder5, embedder, small):
    # embedding-only jobs load dlib's 5-point predictor (9 MB) instead of the 68-point one
    assert embedder5.detector.points == 5 and embedder.detector.points == 68
    paths = [str(DATA / p) for p in small["paths"]]
    b5, b68 = embedder5.embed(paths), embedder.embed(paths)
    assert not b5.failures
    f5 = [r.faces[0] for r in b5.images]
    assert all(f.scheme == "dlib5" and f.landmarks.shape == (5, 2) for f in f5)
    # eye centres from the eye corners agree with the 68-point eye centres; no nose tip or mouth
    p68 = np.stack([r.faces[0].points5 for r in b68.images])
    p5 = np.stack([f.points5 for f in f5])
    assert np.abs(p5[:, :2] - p68[:, :2]).max() < 4.0
    assert np.isnan(p5[:, 2:]).all()
    t5, t68 = b5.templates().astype(np.float64), b68.templates().astype(np.float64)
    assert (t5 * t68).sum(1).min() > 0.99  # another alignment of the same face
    assert (t5 * small["embeddings"]).sum(1).min() > 0.99
    assert _loo_rank1(b5.templates(), small["labels"]) == 1.0
    # caller-given 5 points align as detected ones
    again = embedder5.embed(paths[:2], landmarks=[f.landmarks for f in f5[:2]]).templates()
    np.testing.assert_allclose(again, t5[:2], atol=1e-6)


def test_cached_hog_detector_equals_dlibs(small, tmp_path, monkeypatch):
    import dlib

    from pyfacematch.embed.dlib import _frontal_face_detector

    monkeypatch.setenv("PYFACEMATCH_CACHE_DIR", str(tmp_path))
    builtin = dlib.get_frontal_face_detector()
    first = _frontal_face_detector(dlib)  # makes the cache entry
    entry = next(tmp_path.glob("dlib-*-frontal_face_detector.svm"))
    cached = _frontal_face_detector(dlib)  # loads it
    imgs = [load_image(DATA / p) for p in small["paths"]]
    imgs.append(np.repeat(np.repeat(imgs[0], 2, axis=0), 2, axis=1))
    for img in imgs:
        want = builtin.run(img, 1, 0.0)
        for det in (first, cached):
            got = det.run(img, 1, 0.0)
            assert [(r.left(), r.top(), r.right(), r.bottom()) for r in got[0]] == [
                (r.left(), r.top(), r.right(), r.bottom()) for r in want[0]
            ]
            assert list(got[1]) == list(want[1]) and list(got[2]) == list(want[2])
    # a damaged entry is never used: it is made again
    good = entry.read_bytes()
    entry.write_bytes(good[: len(good) // 2])
    again = _frontal_face_detector(dlib)
    assert entry.read_bytes() == good
    assert list(again.run(imgs[0], 1, 0.0)[1]) == list(builtin.run(imgs[0], 1, 0.0)[1])


@pytest.mark.slow
def test_dlib_leave_one_out_on_all_54_photos(embedder, embedder5):
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
    # the default (5-point) alignment: rank-1 stays 1.0 and the default threshold still
    # separates every genuine pair from every impostor pair, also 5-point probes against
    # 68-point templates (galleries enrolled before the default changed)
    from pyfacematch.embed import default_operating_point

    thr = default_operating_point(embedder5.name).threshold
    same = d["labels"][:, None] == d["labels"][None, :]
    off = ~np.eye(len(paths), dtype=bool)
    # upsample "auto": what the command line's image jobs use (they keep the largest face)
    for emb in (embedder5, DlibEmbedder(upsample="auto")):
        b5 = emb.embed(paths)
        assert not b5.failures
        t5 = b5.templates().astype(np.float64)
        assert _loo_rank1(b5.templates(), d["labels"]) == 1.0
        for s in (t5 @ t5.T, t5 @ t.astype(np.float64).T):
            assert s[same & off].min() >= thr > s[~same].max()


def test_image_jobs_embed_with_five_points_and_auto_upsampling(small):
    from pyfacematch.jobs.encode import Source, open_reader

    reader = open_reader(Source(images=str(DATA / "faces")), role="enroll")
    det = reader.embedder.detector
    assert det.points == 5 and det.auto_upsample


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
