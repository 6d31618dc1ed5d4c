"""Score fusion against closed-form answers on synthetic Gaussian scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyfacematch.errors import DimensionError, InputError
from pyfacematch.fusion import ScoreFusion, cross_validated_fusion, pair_scores

MU = np.array([1.0, 2.0])  # genuine means; impostors N(0, 1); unit variances, independent


def _synthetic(n_gen, n_imp, seed, scale=(1.0, 1.0), shift=(0.0, 0.0)):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n_gen, 2)) + MU
    i = rng.standard_normal((n_imp, 2))
    x = np.vstack([g, i]) * scale + shift  # matchers on arbitrary scales
    y = np.r_[np.ones(n_gen, bool), np.zeros(n_imp, bool)]
    return x, y


def _eer(gen, imp):
    """Brute-force equal error rate over all thresholds (independent of pyfacematch.metrics)."""
    t = np.unique(np.r_[gen, imp])
    fmr = (imp[None, :] >= t[:, None]).mean(1)
    fnmr = (gen[None, :] < t[:, None]).mean(1)
    k = np.argmin(np.abs(fmr - fnmr))
    return 0.5 * (fmr[k] + fnmr[k])


def test_logistic_recovers_the_log_likelihood_ratio():
    scale, shift = np.array([0.05, 3.0]), np.array([0.8, -1.0])
    x, y = _synthetic(20000, 40000, 0, scale, shift)  # imbalanced on purpose
    f = ScoreFusion("logistic", l2=0.0).fit(x, y)
    # true LLR for unit-variance Gaussians: sum_k mu_k u_k - mu_k^2 / 2, u = (x - shift) / scale
    xt, _ = _synthetic(2000, 2000, 1, scale, shift)
    u = (xt - shift) / scale
    llr = u @ MU - (MU**2).sum() / 2
    assert (np.abs(f.fuse(xt) - llr) <= 0.1 + 0.03 * np.abs(llr)).all()
    p = f.probability(xt, prior=0.5)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-llr)), atol=0.02)


def test_zscore_weights_are_fisher_direction():
    x, y = _synthetic(20000, 20000, 2, scale=(10.0, 0.1))
    f = ScoreFusion("zscore").fit(x, y)
    np.testing.assert_allclose(f.weights, MU / MU.sum(), atol=0.02)
    # fused = w . z with z from impostor mean/std
    z = (x - x[~y].mean(0)) / x[~y].std(0)
    np.testing.assert_allclose(f.fuse(x), z @ f.weights, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["logistic", "zscore"])
def test_fusion_beats_each_score_alone(method):
    x, y = _synthetic(3000, 3000, 3)
    xt, yt = _synthetic(3000, 3000, 4)
    fused = ScoreFusion(method).fit(x, y).fuse(xt)
    e_fused = _eer(fused[yt], fused[~yt])
    e_each = [_eer(xt[yt, k], xt[~yt, k]) for k in range(2)]
    # Bayes EER for these Gaussians: Phi(-|mu|/2) = 0.132 (fused) vs 0.159 (best alone)
    assert e_fused < min(e_each) - 0.015


def test_missing_scores_and_matrices_and_roundtrip():
    x, y = _synthetic(500, 500, 5)
    f = ScoreFusion("logistic").fit(x, y)
    imp_mean = x[~y].mean(0)
    a = np.array([[0.5, np.nan], [np.nan, 1.0]])
    b = np.array([[1.5, 2.0], [0.2, np.nan]])
    got = f.fuse([a, b])
    assert got.shape == (2, 2)
    filled_a = np.where(np.isnan(a), imp_mean[0], a)
    filled_b = np.where(np.isnan(b), imp_mean[1], b)
    ref = f.fuse(np.stack([filled_a.ravel(), filled_b.ravel()], axis=1)).reshape(2, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    g = ScoreFusion.from_dict(json.loads(json.dumps(f.to_dict())))
    np.testing.assert_array_equal(g.fuse(x), f.fuse(x))
    z = ScoreFusion("zscore").fit(x, y)
    np.testing.assert_array_equal(ScoreFusion.from_dict(z.to_dict()).fuse(x), z.fuse(x))


def test_fusion_errors():
    x, y = _synthetic(50, 50, 6)
    with pytest.raises(InputError):
        ScoreFusion("mean")
    with pytest.raises(InputError, match="not fitted"):
        ScoreFusion().fuse(x)
    with pytest.raises(InputError, match="both genuine and impostor"):
        ScoreFusion().fit(x, np.ones(len(x), bool))
    with pytest.raises(DimensionError):
        ScoreFusion().fit(x, y[:-1])
    f = ScoreFusion().fit(x, y)
    with pytest.raises(DimensionError):
        f.fuse(np.ones((3, 3)))
    with pytest.raises(InputError, match="Inf"):
        f.fuse(np.full((2, 2), np.inf))
    with pytest.raises(InputError):
        ScoreFusion("zscore").fit(x, y).probability(x)


def test_pair_scores_and_cross_validation():
    labels = np.array(["a", "a", "b", "b", "b", "c"])
    s1 = np.arange(36, dtype=np.float64).reshape(6, 6)
    s2 = -s1
    sc, gen = pair_scores([s1, s2], labels)
    assert sc.shape == (15, 2)
    i, j = np.triu_indices(6, 1)
    np.testing.assert_array_equal(sc[:, 0], s1[i, j])
    np.testing.assert_array_equal(gen, labels[i] == labels[j])
    assert gen.sum() == 1 + 3

    rng = np.random.default_rng(7)
    lab = np.repeat(np.arange(8), 6)
    centres = rng.standard_normal((8, 16))
    emb = centres[lab] + 0.7 * rng.standard_normal((48, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    other = centres[lab] + 1.5 * rng.standard_normal((48, 16))
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    fused, g = cross_validated_fusion([emb @ emb.T, other @ other.T], lab, folds=2)
    # 8 people x 3 samples per fold: 2 folds x C(24, 2) within-fold pairs, 2 x 8 x 3 genuine
    assert fused.shape == (2 * 276,) and g.sum() == 2 * 8 * 3
    assert _eer(fused[g], fused[~g]) < 0.2
