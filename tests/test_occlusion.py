"""Occlusion masks from the picture, judged on held-out real photos with drawn-on occluders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyfacematch.embed.images import load_image
from pyfacematch.embed.occlusion import (
    OCCLUDERS,
    OcclusionDetector,
    draw_occluder,
    hidden_truth,
    region_pixels,
)
from pyfacematch.errors import InputError, LandmarkError
from pyfacematch.keys import KeyModel
from pyfacematch.keys.schemes import get_scheme

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def photos():
    # John_Salley and John_Savage: held out of the occlusion model's training (three other people)
    small = np.load(DATA / "faces_small.npz")
    mp = np.load(DATA / "faces_small_mp478.npz")
    assert list(small["paths"]) == list(mp["paths"])
    imgs = [load_image(DATA / p) for p in small["paths"]]
    return imgs, {"ibug68": small["landmarks"], "mediapipe478": mp["landmarks_mp478"][:, :, :2]}


def _judge(imgs, lms, scheme, overlays=8, seed=7):
    det = OcclusionDetector()
    rng = np.random.default_rng(seed)
    pred, truth = [], []
    for img, lm in zip(imgs, lms):
        regions = region_pixels(img.shape[:2], lm, scheme)
        pred.append(det.hidden_regions(img, lm, scheme))
        truth.append(np.zeros(len(regions), bool))
        for k in range(overlays):
            occ, cov = draw_occluder(img, lm, scheme, OCCLUDERS[k % len(OCCLUDERS)], rng)
            pred.append(det.hidden_regions(occ, lm, scheme))
            truth.append(hidden_truth(cov, regions))
    p, t = np.array(pred), np.array(truth)
    iou = (p & t).sum(0) / np.maximum((p | t).sum(0), 1)
    return p, t, iou


@pytest.mark.parametrize("name", ["ibug68", "mediapipe478"])
def test_occlusion_iou_per_region_on_held_out_photos(photos, name):
    imgs, lms = photos
    scheme = get_scheme(name)
    p, t, iou = _judge(imgs, lms[name], scheme)
    print(f"\n{name}: accuracy {(p == t).mean():.3f}; IoU per region (hidden count):")
    for r, v, n in zip(scheme.regions, iou, t.sum(0)):
        print(f"  {r:18s} {v:.2f} ({n})")
    clean = p[::9]  # the undrawn photos
    assert clean.mean() <= 0.1  # a clean face is seen as (almost) all visible
    often = t.sum(0) >= 5  # regions hidden often enough to judge
    assert iou[often].mean() >= 0.6
    for r in ("mouth", "nose_lower", "right_eye", "left_eye"):
        assert iou[scheme.regions.index(r)] >= 0.5, r
    assert (p == t).mean() >= 0.85


def test_visibility_gives_block_masks_for_masked_cosine(photos):
    imgs, lms = photos
    scheme = get_scheme("ibug68")
    img, lm = imgs[0], lms["ibug68"][0]
    occ, _ = draw_occluder(img, lm, scheme, "mask", np.random.default_rng(1))
    vis = OcclusionDetector().point_visibility(occ, lm, scheme)
    assert vis.shape == (68,)
    mouth = scheme.region_points("mouth")
    assert not vis[mouth].any() and vis[scheme.region_points("left_eye")].all()
    km = KeyModel.default("ibug68")
    _, masks = km.encode(lm[None].astype(np.float32), vis[None])
    full = (1 << (km.blocks.size - 1)) - 1
    assert masks[0] != full and masks[0] & (1 << scheme.regions.index("left_eye"))
    assert not masks[0] & (1 << scheme.regions.index("mouth"))


def test_occlusion_bad_input(photos):
    imgs, lms = photos
    scheme = get_scheme("ibug68")
    with pytest.raises(LandmarkError, match="68 landmarks"):
        OcclusionDetector().hidden_regions(imgs[0], lms["ibug68"][0][:60], scheme)
    bad = lms["ibug68"][0].copy()
    bad[3] = np.nan
    with pytest.raises(LandmarkError, match="NaN"):
        OcclusionDetector().hidden_regions(imgs[0], bad, scheme)
    with pytest.raises(InputError, match="uint8"):
        OcclusionDetector().hidden_regions(imgs[0].astype(np.float32), lms["ibug68"][0], scheme)
    with pytest.raises(InputError, match="occluder"):
        draw_occluder(imgs[0], lms["ibug68"][0], scheme, "scarf", np.random.default_rng(0))
    with pytest.raises(InputError, match="weights"):
        OcclusionDetector(np.zeros(3))


def _reference_masks(shape, lm, scheme, widen=0.12):
    """Brute force over every pixel of the image: within ``widen`` × the inter-ocular distance
    of the region's convex hull (the largest signed distance to the hull's edges), and within the
    points' bounding box grown by as much (which cuts the offset hull's sharp corners)."""
    from scipy.spatial import ConvexHull, QhullError

    eyes = [lm[scheme.region_points(r)].mean(0) for r in scheme.regions if r.endswith("_eye")]
    wid = widen * max(float(np.linalg.norm(eyes[0] - eyes[1])), 1.0)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    q = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    out = []
    for r in scheme.regions:
        pts = lm[scheme.region_points(r)]
        lo, hi = np.floor(pts.min(0) - wid), np.ceil(pts.max(0) + wid)
        in_box = ((q >= lo) & (q <= hi)).all(1)
        try:
            eq = ConvexHull(pts).equations
            near = (q @ eq[:, :2].T + eq[:, 2]).max(1) <= wid
        except QhullError:  # collinear points (a line of points): discs around them
            near = np.linalg.norm(q[:, None] - pts[None], axis=2).min(1) <= wid
        out.append((near & in_box).reshape(shape))
    return out


def _reference_features(img, masks):
    """The six features of the module docstring, from whole-image masks, plainly."""
    x = img.astype(np.float64)
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    cr, cb = (x[..., 0] - y) * 0.713 + 128, (x[..., 2] - y) * 0.564 + 128
    skin = (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127) & (y > 40)
    mx = img.max(2).astype(np.float64)
    sat = (mx - img.min(2)) / np.maximum(mx, 1.0)
    lap = np.zeros_like(y)
    lap[1:-1, 1:-1] = np.abs(
        y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
    )
    face = np.any(masks, axis=0)
    ref_set = face & skin if (face & skin).sum() >= 0.05 * face.sum() else face
    ycc = np.stack([y, cr, cb], -1)
    ref = np.median(ycc[ref_set], axis=0)
    out = []
    for m in masks:
        px = ycc[m]
        dist = np.sqrt(((px[:, 1:] - ref[1:]) ** 2).sum(1) + ((px[:, 0] - ref[0]) / 2) ** 2)
        out.append(
            (
                skin[m].mean(),
                np.median(dist) / 50,
                (y[m] < 60).mean(),
                lap[m].mean() / (lap[face].mean() + 1),
                sat[m].mean() / (sat[face].mean() + 0.02),
                y[m].std() / (y[face].std() + 1),
            )
        )
    return np.array(out)


@pytest.mark.parametrize("name", ["ibug68", "mediapipe478"])
def test_region_masks_and_features_equal_a_whole_image_reference(photos, name):
    # the features look at each region inside its bounding box only: same pixels, same numbers
    from pyfacematch.embed.occlusion import region_features

    imgs, lms = photos
    scheme = get_scheme(name)
    rng = np.random.default_rng(11)
    for img, lm in zip(imgs, lms[name]):
        lm = np.asarray(lm, np.float64)
        ref_masks = _reference_masks(img.shape[:2], lm, scheme)
        masks = region_pixels(img.shape[:2], lm, scheme)
        for a, b in zip(masks, ref_masks):
            assert (a != b).sum() <= 3  # a pixel exactly on an edge may round either way
        occ, _ = draw_occluder(img, lm, scheme, "mask", rng)
        for im in (img, occ):
            want = _reference_features(im, masks)
            np.testing.assert_allclose(region_features(im, lm, scheme), want, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(
                region_features(im, lm, scheme, masks), want, rtol=1e-4, atol=1e-5
            )


def test_hull_half_planes_equal_qhulls():
    from scipy.spatial import ConvexHull

    from pyfacematch.embed.occlusion import _hull_equations

    rng = np.random.default_rng(5)
    for i in range(200):
        pts = rng.random((int(rng.integers(3, 40)), 2)) * 100
        if i % 3 == 0:
            pts = np.round(pts / 10) * 10  # repeated and collinear points
        q = rng.random((400, 2)) * 120 - 10
        got, want = _hull_equations(pts), ConvexHull(pts).equations
        np.testing.assert_allclose(
            (q @ got[:, :2].T + got[:, 2]).max(1),
            (q @ want[:, :2].T + want[:, 2]).max(1),
            atol=1e-9,
        )
    for bad in ([[0, 0], [1, 1]], [[0, 0], [1, 1], [2, 2], [3, 3]], [[1, 1]] * 5):
        with pytest.raises(ValueError):
            _hull_equations(np.array(bad, np.float64))


def test_occlusion_does_not_import_scipy_spatial(photos):
    # scipy.spatial costs 0.4-1 s of start-up in every process (and every worker) that uses it
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from pyfacematch.embed.occlusion import OcclusionDetector\n"
        "from pyfacematch.keys.schemes import get_scheme\n"
        f"d = np.load({str(DATA / 'faces_small_mp478.npz')!r})\n"
        "img = np.full((150, 150, 3), 128, np.uint8)\n"
        "p = OcclusionDetector().hidden_probability(img, d['landmarks_mp478'][0, :, :2], "
        "get_scheme('mediapipe478'))\n"
        "assert p.shape == (19,)\n"
        "print('scipy.spatial' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
