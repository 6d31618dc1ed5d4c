"""Thresholds calibrated to a target FMR / FPIR reach it on held-out impostors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pyfacematch.errors import DimensionError, EmptyInputError, InputError, NonFiniteError
from pyfacematch.gallery import Gallery
from pyfacematch.gallery.calibration import calibrate_threshold, pair_scores


def _binomial_band(p: float, n_cal: int, n_test: int, z: float = 4.0) -> float:
    # held-out rate varies with the test sample *and* with the calibrated quantile
    return z * np.sqrt(p * (1 - p) * (1 / n_cal + 1 / n_test))


@pytest.mark.parametrize("fmr", [0.01, 0.001])
def test_fmr_threshold_reaches_target_on_held_out_impostors(fmr):
    rng = np.random.default_rng(42)
    n = 60_000
    cal, test = rng.normal(0.0, 0.07, n), rng.normal(0.0, 0.07, n)
    rec = calibrate_threshold(cal, fmr=fmr)
    assert rec.name == "fmr" and rec.target == fmr and rec.n_scores == n
    assert np.mean(cal >= rec.value) <= fmr  # never above target on its own sample
    held_out = np.mean(test >= rec.value)
    assert abs(held_out - fmr) <= _binomial_band(fmr, n, n)
    # and the threshold sits at the true quantile of the impostor distribution
    true_t = stats.norm.isf(fmr, scale=0.07)
    assert abs(rec.value - true_t) < 0.02


def test_conservative_threshold_bounds_the_rate():
    rng = np.random.default_rng(3)
    cal = rng.normal(0, 1, 20_000)
    plain = calibrate_threshold(cal, fmr=0.01)
    cons = calibrate_threshold(cal, fmr=0.01, conservative=True)
    assert cons.value > plain.value
    # the true rate at the conservative threshold is below the target
    assert stats.norm.sf(cons.value) < 0.01


def test_gallery_calibrates_fpir_from_nonmated_searches():
    rng = np.random.default_rng(9)
    d, n = 64, 500
    gal = rng.standard_normal((n, d))
    g = Gallery(dim=d)
    g.enroll_many([f"i{j}" for j in range(n)], gal)
    nonmated = rng.standard_normal((3000, d))
    rec = g.calibrate(nonmated_probes=nonmated, fpir=0.01)
    assert rec.name == "fpir" and rec.gallery_size == n
    held = rng.standard_normal((3000, d))
    top = g.identify_arrays(held, k=1, threshold=rec.value)
    rate = float(np.mean(top.accepted))
    assert top.source == "explicit"
    assert abs(rate - 0.01) <= _binomial_band(0.01, 3000, 3000)
    # stored: identify uses it by default and says so
    r = g.identify(held[:1])[0]
    assert r.decision.source == "calibrated-fpir" and r.decision.threshold == rec.value


def test_gallery_calibrates_fmr_from_pairs():
    rng = np.random.default_rng(10)
    a, b = rng.standard_normal((4000, 32)), rng.standard_normal((4000, 32))
    g = Gallery(dim=32)
    rec = g.calibrate(pairs=(a, b), fmr=0.01)
    ref = pair_scores(a, b)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(ref, np.sum(a * b, axis=1) / (na * nb))
    assert np.mean(ref >= rec.value) <= 0.01
    assert np.mean(ref >= rec.value) >= 0.01 - 1.5 / 4000
    assert g.threshold("fmr") == rec


def test_bad_calibration_input():
    with pytest.raises(InputError, match="exactly one"):
        calibrate_threshold([0.1] * 1000, fmr=0.01, fpir=0.01)
    with pytest.raises(InputError, match="300"):
        calibrate_threshold([0.1] * 10, fmr=0.01)
    with pytest.raises(EmptyInputError):
        calibrate_threshold([], fmr=0.01)
    with pytest.raises(NonFiniteError, match="position 3"):
        calibrate_threshold([0.1, 0.2, 0.3, np.nan] + [0.0] * 400, fmr=0.01)
    with pytest.raises(InputError):
        calibrate_threshold(["a"] * 400, fmr=0.01)
    with pytest.raises(InputError):
        calibrate_threshold([0.0] * 400, fmr=True)
    with pytest.raises(DimensionError):
        pair_scores(np.ones((3, 4)), np.ones((2, 4)))
    g = Gallery(dim=4)
    with pytest.raises(InputError, match="fmr"):
        g.calibrate(pairs=(np.ones((400, 4)), np.ones((400, 4))), fpir=0.01)
    with pytest.raises(InputError):
        g.threshold("eer")
    # -inf (an empty non-mated result) is allowed for FPIR only
    calibrate_threshold([-np.inf] * 10 + [0.0] * 400, fpir=0.01)
    with pytest.raises(NonFiniteError):
        calibrate_threshold([-np.inf] * 10 + [0.0] * 400, fmr=0.01)
