"""Synthetic faces: seeded, shaped right, occluders hide the right points and displace them."""

from __future__ import annotations

import numpy as np
import pytest

from pyfacematch.errors import InputError
from pyfacematch.keys.schemes import get_scheme
from pyfacematch.keys.synth import OCCLUDERS, FaceSynthesizer, synthesize


def _procrustes_dist(a: np.ndarray, b: np.ndarray) -> float:
    """float64 reference: RMS distance after optimal similarity alignment of a onto b."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.ones(len(s))
    d[-1] = np.sign(np.linalg.det(u @ vt))
    r = (u * d) @ vt
    sc = (s * d).sum() / (a**2).sum()
    return float(np.sqrt(((sc * a @ r.T - b) ** 2).sum(1).mean() / (b**2).sum(1).mean()))


@pytest.mark.parametrize("scheme", ["ibug68", "mediapipe478", "dense200"])
def test_shapes_dtypes_and_determinism(scheme: str) -> None:
    syn = FaceSynthesizer(scheme, 20, seed=3)
    ids = np.arange(40) % 20
    f = syn.sample(ids, seed=5, occluder="random", chunk=16)
    p = get_scheme(scheme).n_points
    assert f.landmarks.shape == (40, p, get_scheme(scheme).dims)
    assert f.landmarks.dtype == np.float32 and f.visibility.dtype == bool
    assert f.identities.dtype == np.int64 and f.occluders.dtype == np.int8
    assert np.isfinite(f.landmarks).all()
    np.testing.assert_array_equal(f.identities, ids)
    g = FaceSynthesizer(scheme, 20, seed=3).sample(ids, seed=5, occluder="random", chunk=16)
    np.testing.assert_array_equal(f.landmarks, g.landmarks)
    np.testing.assert_array_equal(f.visibility, g.visibility)
    h = syn.sample(ids, seed=6, occluder="random", chunk=16)
    assert not np.array_equal(f.landmarks, h.landmarks)
    two_d = syn.sample(ids, seed=5, dims=2)
    assert two_d.landmarks.shape == (40, p, 2)


def test_identities_are_distinct() -> None:
    syn = FaceSynthesizer("dense200", 30, seed=1)
    # head pose is the largest nuisance in raw 2-D shape (a key model learns it away)
    f = syn.sample(np.repeat(np.arange(30), 2), seed=2, dims=2, pose_deg=(0.0, 0.0, 0.0))
    x = f.landmarks.astype(np.float64)
    genuine = [_procrustes_dist(x[2 * i], x[2 * i + 1]) for i in range(30)]
    impostor = [_procrustes_dist(x[2 * i], x[2 * i + 2]) for i in range(29)]
    assert np.median(genuine) < 0.6 * np.median(impostor)


@pytest.mark.parametrize("scheme", ["ibug68", "dense200", "mediapipe478"])
def test_occluders_hide_the_right_regions(scheme: str) -> None:
    s = get_scheme(scheme)
    syn = FaceSynthesizer(scheme, 10, seed=0)
    ids = np.arange(200) % 10

    def region_vis(occ: str, region: str) -> float:
        f = syn.sample(ids, seed=1, occluder=occ)
        assert (f.occluders == OCCLUDERS.index(occ)).all()
        return float(f.visibility[:, s.region_points(region)].mean())

    assert region_vis("none", "mouth") == 1.0
    assert region_vis("mask", "mouth") == 0.0
    assert region_vis("mask", "contour_lower") == 0.0
    assert region_vis("mask", "nose_lower") < 0.2
    assert region_vis("mask", "right_eye") == 1.0 and region_vis("mask", "left_brow") == 1.0
    assert region_vis("sunglasses", "right_eye") == 0.0
    assert region_vis("sunglasses", "left_eye") == 0.0
    assert region_vis("sunglasses", "mouth") == 1.0
    f = syn.sample(ids, seed=1, occluder="hand")
    hidden = (~f.visibility).sum(1)
    assert (hidden > 0).all() and (hidden < s.n_points).all()


def test_hidden_points_are_displaced_visible_points_are_not() -> None:
    syn = FaceSynthesizer("dense200", 5, seed=0)
    ids = np.arange(5)
    kw = dict(seed=4, pose_deg=(0.0, 0.0, 0.0), expression=0.0, noise=0.0, dims=2)
    f = syn.sample(ids, occluder="mask", **kw)
    truth = syn.identity_shapes(ids)[:, :, :2].astype(np.float64)
    for i in range(5):
        v = f.visibility[i]
        # faces are truth * scale + shift: solve it from the visible points (float64 lstsq)
        a = np.column_stack(
            [truth[i, v].reshape(-1), np.tile([1.0, 0.0], v.sum()), np.tile([0.0, 1.0], v.sum())]
        )
        coef, *_ = np.linalg.lstsq(a, f.landmarks[i, v].reshape(-1).astype(np.float64), rcond=None)
        pred = truth[i] * coef[0] + coef[1:]
        err = np.linalg.norm(f.landmarks[i] - pred, axis=1)
        assert err[v].max() < 1e-3 * coef[0]
        assert np.median(err[~v]) > 0.02 * coef[0]


def test_bad_arguments() -> None:
    syn = FaceSynthesizer("ibug68", 4)
    with pytest.raises(InputError, match="0..3"):
        syn.sample(np.array([0, 4]))
    with pytest.raises(InputError, match="1-D integer"):
        syn.sample(np.array([0.5]))
    with pytest.raises(InputError, match="occluder"):
        syn.sample(np.array([0]), occluder="scarf")
    with pytest.raises(InputError, match="occluder codes"):
        syn.sample(np.array([0]), occluder=np.array([7]))
    with pytest.raises(InputError, match="dims"):
        syn.sample(np.array([0]), dims=4)
    with pytest.raises(InputError, match="n_identities"):
        FaceSynthesizer("ibug68", 0)


def test_synthesize_convenience() -> None:
    f = synthesize("ibug68", 3, 4, seed=9)
    np.testing.assert_array_equal(f.identities, np.repeat(np.arange(3), 4))
    assert len(f) == 12
