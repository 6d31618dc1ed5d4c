"""Geometry: alignment recovers known similarity transforms; features are invariant; bad faces flagged."""

from __future__ import annotations

import numpy as np
import pytest

from pyfacematch.errors import DimensionError, EmptyInputError, LandmarkError
from pyfacematch.keys.geometry import (
    FeatureLayout,
    align,
    align_reference,
    features,
    features_reference,
)
from pyfacematch.keys.schemes import get_scheme


def _rot2(th: float) -> np.ndarray:
    return np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])


def _rot3(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _inverse_faces(mean: np.ndarray, rots, scales, shifts) -> np.ndarray:
    """Faces x with s R x + t == mean exactly (float64): x = R^T (mean - t) / s."""
    return np.stack([((mean - t) @ r) / s for r, s, t in zip(rots, scales, shifts)])


@pytest.mark.parametrize(
    "scheme,dims", [("ibug68", 2), ("dense200", 2), ("dense200", 3), ("mediapipe478", 3)]
)
def test_alignment_recovers_known_similarity_with_hidden_points(scheme: str, dims: int) -> None:
    rng = np.random.default_rng(7)
    s = get_scheme(scheme)
    mean = s.mean_shape[:, :dims].astype(np.float32).astype(np.float64)
    n = 6
    rots = (
        [_rot2(a) for a in rng.uniform(-3, 3, n)] if dims == 2 else [_rot3(rng) for _ in range(n)]
    )
    # faces of 20..200 px radius anywhere in a 1000 px image: s = 1/radius, t = -s R centre
    scales = 1 / rng.uniform(20, 200, n)
    centres = rng.uniform(0, 1000, (n, dims))
    shifts = np.stack([-sc * r @ c for sc, r, c in zip(scales, rots, centres)])
    x = _inverse_faces(mean, rots, scales, shifts)
    vis = rng.random((n, s.n_points)) > 0.4
    x[~vis] = np.nan  # hidden points may hold anything
    al, tr, res, st = align(x.astype(np.float32), scheme, vis)
    assert (st == 0).all()
    np.testing.assert_allclose(tr[:, 0], scales, rtol=1e-5)
    for i in range(n):
        np.testing.assert_allclose(
            tr[i, 1 : 1 + dims * dims].reshape(dims, dims), rots[i], atol=1e-5
        )
    np.testing.assert_allclose(
        tr[:, 1 + dims * dims :], shifts, rtol=1e-5, atol=1e-5 * np.abs(shifts).max()
    )
    np.testing.assert_allclose(al[vis], mean[np.nonzero(vis)[1]], atol=1e-5)
    assert (res < 1e-5).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_alignment_matches_float64_reference_on_noisy_faces(dims: int) -> None:
    rng = np.random.default_rng(1)
    s = get_scheme("dense200")
    mean = s.mean_shape[:, :dims]
    x = (mean[None] + rng.normal(size=(20, s.n_points, dims)) * 0.05) * 40 + 100
    vis = rng.random((20, s.n_points)) > 0.3
    al, _, res, st = align(x.astype(np.float32), s, vis)
    ref_al, ref_res = align_reference(x.astype(np.float32), vis, mean.astype(np.float32))
    assert (st == 0).all()
    np.testing.assert_allclose(al, ref_al, atol=2e-5)
    np.testing.assert_allclose(res, ref_res, rtol=1e-4)


def test_weights_change_the_fit() -> None:
    rng = np.random.default_rng(2)
    s = get_scheme("ibug68")
    x = (s.mean_shape + rng.normal(size=(68, 2)) * 0.1)[None].astype(np.float32)
    w = np.ones(68, np.float32)
    w[:17] = 0  # contour ignored: equivalent to hiding it
    a1 = align(x, s, weights=w)[0]
    vis = np.ones((1, 68), bool)
    vis[0, :17] = False
    a2 = align(x, s, vis)[0]
    np.testing.assert_allclose(a1, a2, atol=1e-5)
    assert not np.allclose(a1, align(x, s)[0], atol=1e-3)


@pytest.mark.parametrize("dims", [2, 3])
def test_features_invariant_to_translation_rotation_scale(dims: int) -> None:
    rng = np.random.default_rng(3)
    s = get_scheme("dense200")
    base = s.mean_shape[:, :dims] + rng.normal(size=(s.n_points, dims)) * 0.05
    vis = rng.random(s.n_points) > 0.2
    r = _rot2(1.1) if dims == 2 else _rot3(rng)
    moved = 37.5 * base @ r.T + rng.normal(size=dims) * 100
    f = features(np.stack([base, moved]).astype(np.float32), s, np.stack([vis, vis]))[0]
    np.testing.assert_allclose(f[0], f[1], atol=2e-4)


def test_features_match_numpy_reference_and_masks() -> None:
    rng = np.random.default_rng(4)
    s = get_scheme("ibug68")
    lay = FeatureLayout.build(s, 2)
    x = (s.mean_shape[None] + rng.normal(size=(10, 68, 2)) * 0.05).astype(np.float32)
    vis = rng.random((10, 68)) > 0.25
    f, masks, st = features(x, s, vis, layout=lay)
    al, _ = align_reference(x, vis, s.mean_shape.astype(np.float32))
    ref = features_reference(al, vis, lay, lay.reference)
    np.testing.assert_allclose(f, ref, atol=5e-5)
    for i in range(10):
        for b in range(s.n_regions):
            pts = s.region_points(b)
            want = vis[i, pts].sum() >= np.ceil(0.75 * len(pts) - 1e-9)
            assert bool(int(masks[i]) >> b & 1) == want
    assert lay.n_blocks == s.n_regions and lay.offsets[-1] == lay.n_features


def test_bad_faces_get_status_not_exceptions() -> None:
    s = get_scheme("ibug68")
    good = s.mean_shape.astype(np.float32) * 50 + 100
    x = np.stack([good] * 6)
    vis = np.ones((6, 68), bool)
    x[1, 5, 0] = np.nan  # NaN in a visible point
    vis[2] = False  # all hidden
    vis[3, 3:] = False  # too few visible
    x[4] = 7.0  # collapsed to a point
    x[5, :, 1] = 2 * x[5, :, 0]  # collinear
    x[0, 10] = np.inf  # hidden Inf is fine
    vis[0, 10] = False
    al, tr, res, st = align(x, s, vis)
    np.testing.assert_array_equal(st, [0, 2, 3, 4, 5, 5])
    assert np.isnan(al[1:]).all() and np.isnan(res[1:]).all() and np.isfinite(res[0])


def test_bad_shapes_raise_typed_errors() -> None:
    s = get_scheme("ibug68")
    with pytest.raises(LandmarkError, match="expected 68 points"):
        align(np.zeros((2, 67, 2), np.float32), s)
    with pytest.raises(DimensionError):
        align(np.zeros((2, 68, 4), np.float32), s)
    with pytest.raises(DimensionError, match="visibility"):
        align(np.zeros((2, 68, 2), np.float32), s, np.ones((2, 60), bool))
    with pytest.raises(EmptyInputError):
        align(np.zeros((0, 68, 2), np.float32), s)
    with pytest.raises(DimensionError):
        align(np.zeros((68,), np.float32), s)
