"""Landmark schemes: shipped files are consistent; inconsistent schemes are refused with a reason."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from pyfacematch.errors import PyFaceMatchError, SchemeError
from pyfacematch.keys.schemes import get_scheme, list_schemes, load_scheme, register_scheme

BUILTIN = ["ibug68", "mediapipe478", "dense200"]


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_scheme_is_consistent(name: str) -> None:
    s = get_scheme(name)
    assert s.name == name
    assert s.mean_shape.shape == (s.n_points, s.dims)
    assert np.isfinite(s.mean_shape).all()
    # every point has exactly one region, every region has points
    assert s.point_region.shape == (s.n_points,)
    assert np.bincount(s.point_region, minlength=s.n_regions).min() >= 1
    # mean shape is centred with unit RMS radius (the Procrustes normalisation)
    np.testing.assert_allclose(s.mean_shape.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.sqrt((s.mean_shape**2).sum(1).mean()), 1, atol=1e-5)
    # mirror permutation is an involution and maps x to about -x (face is roughly symmetric)
    perm = s.mirror_permutation()
    np.testing.assert_array_equal(perm[perm], np.arange(s.n_points))
    paired = s.pairs.ravel()
    assert len(np.unique(paired)) == len(paired)
    x = s.mean_shape[:, 0] - np.median(s.mean_shape[:, 0])
    assert np.abs(x[s.pairs[:, 0]] + x[s.pairs[:, 1]]).mean() < 0.05
    # subject's right eye is on the image's left
    re, le = s.region_points("right_eye"), s.region_points("left_eye")
    assert s.mean_shape[re, 0].mean() < s.mean_shape[le, 0].mean()
    # eyes above nose above mouth (image y down)
    assert s.mean_shape[re, 1].mean() < s.mean_shape[s.region_points("nose_lower"), 1].mean()
    assert (
        s.mean_shape[s.region_points("nose_lower"), 1].mean()
        < s.mean_shape[s.region_points("mouth"), 1].mean()
    )
    for r, dp in enumerate(s.distance_pairs):
        assert (s.point_region[dp] == r).all()


def test_known_layout_facts() -> None:
    ib = get_scheme("ibug68")
    assert ib.dims == 2 and ib.n_points == 68
    np.testing.assert_array_equal(ib.region_points("mouth"), np.arange(48, 68))
    assert ib.mirror_permutation()[36] == 45 and ib.mirror_permutation()[30] == 30
    mp = get_scheme("mediapipe478")
    assert mp.dims == 3 and mp.n_points == 478
    assert {"right_iris", "left_iris"} <= set(mp.regions)
    np.testing.assert_array_equal(mp.region_points("right_iris"), [468, 469, 470, 471, 472])
    assert mp.mirror_permutation()[468] == 473
    # lips points listed by MediaPipe's face_mesh_connections are in the mouth region
    for p in (0, 13, 14, 17, 61, 291, 78, 308):
        assert mp.regions[mp.point_region[p]] == "mouth"
    d = get_scheme("dense200")
    assert d.n_points == 200 and d.subset_of == "mediapipe478"
    # each dense point keeps its MediaPipe region (irises merged into the eyes)
    for i, p in enumerate(d.subset_indices):
        r = mp.regions[mp.point_region[p]].replace("iris", "eye")
        assert d.regions[d.point_region[i]] == r
    lm = np.random.default_rng(0).normal(size=(4, 478, 3))
    np.testing.assert_array_equal(d.from_superset(lm), lm[:, d.subset_indices])


def _base() -> dict:
    return copy.deepcopy(get_scheme("ibug68").to_dict())


def test_register_from_file_roundtrip(tmp_path) -> None:
    d = _base()
    d["name"] = "my68"
    p = tmp_path / "my68.json"
    p.write_text(json.dumps(d))
    s = register_scheme(p)
    assert get_scheme("my68") is s
    assert "my68" in list_schemes()
    np.testing.assert_array_equal(s.mean_shape, get_scheme("ibug68").mean_shape)
    with pytest.raises(SchemeError, match="already registered"):
        register_scheme(p)
    register_scheme(p, overwrite=True)
    with pytest.raises(SchemeError, match="built in"):
        register_scheme(_base())


def _bad(mutate) -> dict:
    d = _base()
    d["name"] = "bad"
    mutate(d)
    return d


BAD = {
    "count": (lambda d: d.update(n_points=67), "point_region"),
    "dims": (lambda d: d.update(dims=4), "dims"),
    "uncovered": (lambda d: d["point_region"].__setitem__(5, 99), "region index"),
    "empty_region": (lambda d: d["regions"].append("ears"), "no points"),
    "pair_range": (lambda d: d["pairs"].append([3, 68]), "out of range"),
    "pair_self": (lambda d: d["pairs"].__setitem__(0, [4, 4]), "itself"),
    "pair_twice": (lambda d: d["pairs"].append([0, 1]), "symmetric"),
    "pair_regions": (lambda d: d["pairs"].__setitem__(0, [0, 48]), "mirror regions"),
    "nan_mean": (lambda d: d["mean_shape"][3].__setitem__(0, float("nan")), "NaN"),
    "collapsed": (lambda d: d.update(mean_shape=[[1.0, 2.0]] * 68), "collapsed"),
    "collinear": (
        lambda d: d.update(mean_shape=[[float(i), 2.0 * i] for i in range(68)]),
        "collapsed",
    ),
    "mean_shape": (lambda d: d.update(mean_shape=[[0.0, 0.0]] * 10), "shape"),
    "version": (lambda d: d.update(version=7), "version"),
    "missing": (lambda d: d.pop("regions"), "missing"),
    "name": (lambda d: d.update(name="Bad Name"), "name"),
    "dp_region": (lambda d: d["distance_pairs"]["mouth"].append([0, 1]), "outside"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_inconsistent_scheme_is_refused_with_reason(case: str) -> None:
    mutate, why = BAD[case]
    with pytest.raises(SchemeError, match=why) as ei:
        register_scheme(_bad(mutate))
    assert isinstance(ei.value, PyFaceMatchError) and isinstance(ei.value, ValueError)


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(SchemeError, match="cannot read"):
        load_scheme(tmp_path / "nope.json")
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(SchemeError, match="not valid JSON"):
        load_scheme(p)
    with pytest.raises(SchemeError, match="unknown scheme"):
        get_scheme("no_such_scheme")
