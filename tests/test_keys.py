"""KeyModel: deterministic unit-norm keys, masks per occluder, numpy reference, save/load, bad input,
and the pinned real-faces report (tests/data/faces_johns_landmarks.npz, 54 photos of 5 people)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.errors import FormatVersionError, GalleryFileError, LandmarkError
from pyfacematch.keys import KeyModel
from pyfacematch.keys._reference import reference_keys
from pyfacematch.keys.schemes import get_scheme
from pyfacematch.keys.synth import FaceSynthesizer

DATA = Path(__file__).parent / "data" / "faces_johns_landmarks.npz"


@pytest.fixture(scope="module")
def trained() -> tuple[KeyModel, FaceSynthesizer]:
    syn = FaceSynthesizer("dense200", 400, seed=11)
    tr = syn.sample(np.repeat(np.arange(200), 5), seed=1, dims=2)
    return KeyModel.fit(tr.landmarks, tr.identities, scheme="dense200", dim=96), syn


def test_keys_unit_norm_deterministic_and_match_reference(trained) -> None:
    model, syn = trained
    f = syn.sample(np.arange(200, 260), seed=2, dims=2, occluder="random")
    k1, m1 = model.encode(f.landmarks, f.visibility)
    k2, m2 = model.encode(f.landmarks.copy(), f.visibility.copy())
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(m1, m2)
    assert k1.dtype == np.float32 and m1.dtype == np.uint64 and k1.shape == (60, model.dim)
    np.testing.assert_allclose(np.linalg.norm(k1, axis=1), 1, atol=1e-5)
    ref = reference_keys(model, f.landmarks, f.visibility)
    np.testing.assert_allclose(k1, ref, atol=2e-4)
    # invalid blocks are exactly zero
    for i in range(60):
        for b in range(model.n_blocks):
            if not int(m1[i]) >> b & 1:
                assert not k1[i, model.blocks[b] : model.blocks[b + 1]].any()


def test_masks_right_for_each_occluder(trained) -> None:
    model, syn = trained
    s = model.scheme
    bit = {r: 1 << i for i, r in enumerate(s.regions)}
    ids = np.arange(200, 240)
    for occ, hidden, shown in [
        ("none", [], list(s.regions)),
        (
            "mask",
            ["mouth", "nose_lower", "chin", "contour_lower"],
            ["right_eye", "left_eye", "right_brow", "left_brow", "forehead"],
        ),
        ("sunglasses", ["right_eye", "left_eye"], ["mouth", "chin", "contour_lower", "forehead"]),
    ]:
        f = syn.sample(ids, seed=3, dims=2, occluder=occ)
        _, masks = model.encode(f.landmarks, f.visibility)
        for r in hidden:
            assert not (masks.astype(np.int64) & bit[r]).any(), (occ, r)
        for r in shown:
            assert ((masks.astype(np.int64) & bit[r]) != 0).all(), (occ, r)
    f = syn.sample(ids, seed=3, dims=2, occluder="hand")
    _, masks = model.encode(f.landmarks, f.visibility)
    for i in range(len(ids)):
        for b in range(s.n_regions):
            pts = s.region_points(b)
            want = f.visibility[i, pts].sum() >= model.layout.block_min_visible[b]
            assert bool(int(masks[i]) >> b & 1) == want


def test_masked_cosine_beats_plain_on_masked_probes(trained) -> None:
    model, syn = trained
    gal = syn.sample(np.arange(200, 400), seed=4, dims=2)
    probe = syn.sample(np.arange(200, 400), seed=5, dims=2, occluder="mask")
    gk, gm = model.encode(gal.landmarks)
    pk_plain, _ = model.encode(probe.landmarks)
    pk, pm = model.encode(probe.landmarks, probe.visibility)
    _, i_plain = pf.topk(pk_plain, gk, 1)
    _, i_mask = pf.masked_topk(pk, gk, 1, pm, gm, model.blocks, min_fraction=0.3)
    truth = np.arange(200)
    assert (i_mask[:, 0] == truth).mean() > (i_plain[:, 0] == truth).mean() + 0.2


def test_save_load_identical(tmp_path, trained) -> None:
    model, syn = trained
    f = syn.sample(np.arange(200, 230), seed=6, dims=2, occluder="random")
    p = tmp_path / "m.npz"
    model.save(p)
    assert p.stat().st_size < 2_000_000
    m2 = KeyModel.load(p)
    np.testing.assert_array_equal(m2.blocks, model.blocks)
    k1, a1 = model.encode(f.landmarks, f.visibility)
    k2, a2 = m2.encode(f.landmarks, f.visibility)
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(a1, a2)


def test_load_refuses_unknown_version_and_garbage(tmp_path, trained) -> None:
    import json

    model, _ = trained
    p = tmp_path / "m.npz"
    model.save(p)
    with np.load(p) as z:
        arrays = dict(z)
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["format_version"] = 99
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "v99.npz", **arrays)
    with pytest.raises(FormatVersionError, match="version 99"):
        KeyModel.load(tmp_path / "v99.npz")
    (tmp_path / "junk.npz").write_bytes(p.read_bytes()[:100])
    with pytest.raises(GalleryFileError):
        KeyModel.load(tmp_path / "junk.npz")
    with pytest.raises(GalleryFileError, match="does not exist"):
        KeyModel.load(tmp_path / "missing.npz")


def test_bad_input_raises_or_flags(trained) -> None:
    model, syn = trained
    f = syn.sample(np.arange(200, 205), seed=7, dims=2)
    x, vis = f.landmarks.copy(), f.visibility.copy()
    x[1, 3] = np.nan
    vis[2] = False
    x[3] = 5.0
    vis[4, 20:] = False  # too few visible points (< 20 % of 200)
    with pytest.raises(LandmarkError, match="face 1 .*NaN"):
        model.encode(x, vis)
    keys, masks, st = model.encode(x, vis, on_error="flag", return_status=True)
    np.testing.assert_array_equal(st, [0, 2, 3, 5, 4])
    assert (masks[1:] == 0).all() and not keys[1:].any()
    assert KeyModel.reasons(st)[2] == "every point is hidden"
    with pytest.raises(LandmarkError, match="expected 200 points"):
        model.encode(np.zeros((2, 68, 2), np.float32))
    with pytest.raises(pf.errors.DimensionError):
        model.encode(np.zeros((2, 200, 3), np.float32))
    # a ragged list: the face with the wrong point count is flagged (status 1) or named
    ragged = [f.landmarks[0], f.landmarks[1][:150], f.landmarks[2]]
    with pytest.raises(LandmarkError, match="face 1 has shape"):
        model.encode(ragged)
    keys, masks, st = model.encode(ragged, on_error="flag", return_status=True)
    np.testing.assert_array_equal(st, [0, 1, 0])
    assert masks[1] == 0 and not keys[1].any() and masks[0] != 0
    np.testing.assert_array_equal(keys[[0, 2]], model.encode(f.landmarks[[0, 2]])[0])
    with pytest.raises(pf.errors.InputError, match="on_error"):
        model.encode(f.landmarks, on_error="ignore")


def test_default_model_needs_no_labels() -> None:
    m = KeyModel.default("ibug68")
    assert m.kind == "default" and m.dim == m.layout.n_features
    syn = FaceSynthesizer("ibug68", 50, seed=2)
    f = syn.sample(np.repeat(np.arange(50), 2), seed=3, pose_deg=(0.0, 0.0, 5.0))
    k, _ = m.encode(f.landmarks)
    sims = k @ k.T
    np.fill_diagonal(sims, -np.inf)
    partner = np.arange(100) ^ 1
    assert (sims.argmax(1) == partner).mean() > 0.5


def _real_report(scheme: str, key: str, fit_loo: bool) -> tuple[int, float, float]:
    d = np.load(DATA)
    x, y = d[key], d["labels"]
    n = len(x)
    if fit_loo:
        sims = np.empty((n, n))
        for i in range(n):
            tr = np.arange(n) != i
            k, _ = KeyModel.fit(x[tr], y[tr], scheme=scheme, dim=64).encode(x)
            sims[i] = k @ k[i]
    else:
        k, _ = KeyModel.default(scheme, dims=x.shape[-1]).encode(x)
        sims = k.astype(np.float64) @ k.T
    np.fill_diagonal(sims, -np.inf)
    correct = int((y[sims.argmax(1)] == y).sum())
    same = (y[:, None] == y[None]) & ~np.eye(n, dtype=bool)
    return correct, float(sims[same].mean()), float(sims[y[:, None] != y[None]].mean())


@pytest.mark.skipif(not DATA.exists(), reason="tests/data/faces_johns_landmarks.npz not present")
@pytest.mark.parametrize(
    "scheme,key,loo,rank1,gen,imp",
    [
        # measured with this code (see bench/keys.py --real); pinned so a change is noticed
        ("ibug68", "landmarks", False, 44, 0.370, -0.091),
        ("mediapipe478", "landmarks_mp478", False, 52, 0.423, -0.106),
        ("ibug68", "landmarks", True, 50, 0.485, -0.107),
    ],
)
def test_real_faces_pinned(scheme, key, loo, rank1, gen, imp) -> None:
    correct, g, i = _real_report(scheme, key, loo)
    assert abs(correct - rank1) <= 1
    assert abs(g - gen) < 0.02 and abs(i - imp) < 0.02
    assert g > i + 0.3
    assert get_scheme(scheme).n_points == np.load(DATA)[key].shape[1]


def test_one_similarity_fit_for_keys_and_photos() -> None:
    """keys' align_reference and embed's similarity_transform share one fit; both recover a
    known similarity exactly (independent reference: the transform that made the points)."""
    from pyfacematch._similarity import similarity_fit
    from pyfacematch.embed.align import similarity_transform
    from pyfacematch.keys.geometry import align_reference

    rng = np.random.default_rng(3)
    src = rng.normal(size=(7, 2)) * 20 + 50
    a = 0.7
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = 1.3 * src @ rot.T + np.array([4.0, -9.0])
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], 1.3 * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], [4.0, -9.0], atol=1e-7)
    al, res = align_reference(src[None], None, dst)
    np.testing.assert_allclose(al[0], dst, atol=1e-8)
    assert res[0] < 1e-8
    # weights: a wild point with weight 0 does not move the fit
    noisy = src.copy()
    noisy[3] += 1000.0
    w = np.ones((1, 7))
    w[0, 3] = 0
    s, r, t = similarity_fit(noisy[None], dst, w)
    np.testing.assert_allclose(s[0] * r[0], 1.3 * rot, atol=1e-9)
