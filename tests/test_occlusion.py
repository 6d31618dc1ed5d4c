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
