"""Tests of pyfacematch.metrics against hand-computed cases, brute force and closed forms."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from pyfacematch import metrics as m
from pyfacematch.errors import EmptyInputError, InputError, NonFiniteError, PyFaceMatchError

N01 = NormalDist()


def closed_form_fnmr(alpha: float, d: float) -> float:
    """FNMR at FMR = alpha for genuine N(d, 1) vs impostor N(0, 1)."""
    return N01.cdf(N01.inv_cdf(1 - alpha) - d)


# ----------------------------------------------------------------------------- 1:1 basics


def test_error_rates_hand_computed():
    gen = [0.1, 0.4, 0.6, 0.9]
    imp = [0.0, 0.2, 0.3, 0.5, 0.7]
    c = m.error_rates(gen, imp, [0.5, 0.3, -1.0, 2.0])
    np.testing.assert_array_equal(c.thresholds, [-1.0, 0.3, 0.5, 2.0])
    np.testing.assert_array_equal(c.fmr, [1.0, 3 / 5, 2 / 5, 0.0])  # imp >= T
    np.testing.assert_array_equal(c.fnmr, [0.0, 1 / 4, 2 / 4, 1.0])  # gen < T
    assert (c.n_genuine, c.n_impostor) == (4, 5)


def test_error_rates_match_brute_force_with_ties():
    rng = np.random.default_rng(1)
    gen = rng.integers(0, 20, 300).astype(np.float64)
    imp = rng.integers(-10, 12, 1000).astype(np.float64)
    t = np.arange(-12, 23, 0.5)
    c = m.error_rates(gen, imp, t)
    fmr_ref = np.array([(imp >= x).mean() for x in t])
    fnmr_ref = np.array([(gen < x).mean() for x in t])
    np.testing.assert_array_equal(c.fmr, fmr_ref)
    np.testing.assert_array_equal(c.fnmr, fnmr_ref)


def test_threshold_for_fmr_hand_computed():
    imp = np.arange(10, dtype=np.float64)  # 0..9
    t = m.threshold_for_fmr(imp, 0.2)  # at most 2 of 10 may reach it: 8 and 9
    assert 7.0 < t <= 8.0
    assert np.nextafter(t, -np.inf) == 7.0  # smallest such threshold
    assert (imp >= t).mean() == 0.2
    # 0.25 still allows only 2 false matches
    assert m.threshold_for_fmr(imp, 0.25) == t
    # fewer than 1/n: above the maximum
    t0 = m.threshold_for_fmr(imp, 0.05)
    assert 9.0 < t0 and np.nextafter(t0, -np.inf) == 9.0


@pytest.mark.parametrize("target", [0.5, 0.1, 0.03, 1e-2, 1e-3])
def test_threshold_for_fmr_is_smallest_with_fmr_below_target(target):
    rng = np.random.default_rng(2)
    imp = rng.integers(0, 50, 2000).astype(np.float64)  # many ties
    t = m.threshold_for_fmr(imp, target)
    vals = np.unique(imp)
    candidates = np.unique(np.concatenate([vals, np.nextafter(vals, np.inf)]))
    ok = [c for c in candidates if (imp >= c).mean() <= target]
    assert t == min(ok)


def test_threshold_is_representable_in_float32_and_decides_identically():
    rng = np.random.default_rng(3)
    imp = rng.normal(size=20_000).astype(np.float32)
    t = m.threshold_for_fmr(imp, 1e-3)
    assert float(np.float32(t)) == t
    assert np.count_nonzero(imp >= np.float32(t)) == np.count_nonzero(imp.astype(np.float64) >= t)
    assert (imp >= np.float32(t)).mean() <= 1e-3
    below = np.nextafter(np.float32(t), np.float32(-np.inf))
    assert (imp >= below).mean() > 1e-3


def test_conservative_threshold_bounds_fmr_with_confidence():
    from scipy.stats import beta

    rng = np.random.default_rng(4)
    imp = rng.normal(size=50_000)
    plain = m.threshold_for_fmr(imp, 1e-3)
    cons = m.threshold_for_fmr(imp, 1e-3, conservative=True, confidence=0.95)
    assert cons > plain
    k = int(np.count_nonzero(imp >= cons))
    # one-sided 95% Clopper-Pearson upper bound on k/n is below the target ...
    assert beta.ppf(0.95, k + 1, imp.size - k) <= 1e-3
    # ... and one more false match would break it (smallest such threshold)
    assert beta.ppf(0.95, k + 2, imp.size - k - 1) > 1e-3
    with pytest.raises(InputError, match="at least 1000"):
        m.threshold_for_fmr(imp[:500], 3e-3, conservative=True)


def test_min_comparisons_rule_of_three():
    assert m.min_comparisons_for(1e-3) == 3000
    assert m.min_comparisons_for(1e-6) == 3_000_000
    assert m.min_comparisons_for(0.003) == 1000
    # 0 errors in 3/a trials: exact one-sided 95% bound ~ a
    n = m.min_comparisons_for(1e-3)
    assert 1 - 0.05 ** (1 / n) == pytest.approx(1e-3, rel=0.01)


# ----------------------------------------------------------------------------- closed forms


def test_fnmr_at_fmr_two_gaussians_closed_form():
    rng = np.random.default_rng(5)
    gen = rng.normal(2.0, 1.0, 20_000)
    imp = rng.normal(0.0, 1.0, 200_000)
    pts = m.fnmr_at_fmr(gen, imp)
    assert [p.target_fmr for p in pts] == list(m.DEFAULT_FMR_TARGETS)
    for p in pts[:3]:  # targets supported by 200k impostors
        assert p.supported and p.reason is None
        assert p.fmr <= p.target_fmr
        assert p.fmr == pytest.approx(p.target_fmr, rel=0.01)
        assert p.fnmr == pytest.approx(closed_form_fnmr(p.target_fmr, 2.0), abs=0.02)
        assert p.threshold == pytest.approx(N01.inv_cdf(1 - p.target_fmr), abs=0.1)
        assert p.false_matches == round(p.fmr * imp.size)
        assert p.false_non_matches == np.count_nonzero(gen < p.threshold)
        assert p.fnmr in p.fnmr_ci and p.fmr in p.fmr_ci
        assert p.gfar == p.fmr and p.gfrr == p.fnmr  # no FTE/FTA given
    # 1e-5 needs 300k impostors, 1e-6 needs 3M: flagged, with a reason, still computed
    for p in pts[3:]:
        assert not p.supported
        assert str(m.min_comparisons_for(p.target_fmr)) in p.reason
    assert pts[3].false_matches == 2  # floor(1e-5 * 200k)
    assert pts[4].fmr == 0.0 and pts[4].threshold > imp.max()  # above every impostor


def test_eer_symmetric_gaussians():
    rng = np.random.default_rng(6)
    for d in (1.0, 2.0, 3.0):
        gen = rng.normal(d, 1.0, 20_000)
        imp = rng.normal(0.0, 1.0, 20_000)
        r = m.eer(gen, imp)
        assert r.eer == pytest.approx(N01.cdf(-d / 2), abs=0.01)
        assert r.threshold == pytest.approx(d / 2, abs=0.05)
        assert abs(r.fmr - r.fnmr) < 2e-3


def test_eer_hand_computed():
    # crossing exactly at a threshold: T = 0.6 gives FMR = FNMR = 1/4
    r = m.eer([0.2, 0.6, 0.8, 0.9], [0.1, 0.3, 0.5, 0.7])
    assert r.eer == 0.25 and r.threshold == 0.6 and r.fmr == r.fnmr == 0.25
    # T = 2: FMR 1/2 (imp 2 >= 2), FNMR 1/3; T = 3: FMR 0, FNMR 1/3.
    # FNMR - FMR goes -1/6 -> +1/3: linear interpolation meets at 1/3
    r = m.eer([1.0, 3.0, 4.0], [0.0, 2.0])
    assert r.eer == pytest.approx(1 / 3)
    assert r.threshold == 2.0 and r.fmr == 0.5 and r.fnmr == pytest.approx(1 / 3)
    # FMR flat at 1/2 while FNMR steps 1/3 -> 2/3 (T = 2 -> 2.5): they meet at 1/2
    assert m.eer([1.0, 2.0, 3.0], [0.0, 2.5]).eer == pytest.approx(0.5)
    # perfect separation
    assert m.eer([5.0, 6.0], [0.0, 1.0]).eer == 0.0
    # complete inversion
    assert m.eer([0.0, 1.0], [5.0, 6.0]).eer == 1.0


def test_det_curve_exact_and_monotone():
    rng = np.random.default_rng(7)
    gen = rng.normal(2, 1, 3000)
    imp = rng.normal(0, 1, 200_000)
    c = m.det_curve(gen, imp, max_points=600)
    assert c.thresholds.size <= 700
    assert np.all(np.diff(c.thresholds) > 0)
    assert np.all(np.diff(c.fmr) <= 0) and np.all(np.diff(c.fnmr) >= 0)
    # each point exact
    idx = rng.choice(c.thresholds.size, 25, replace=False)
    for i in idx:
        t = c.thresholds[i]
        assert c.fmr[i] == (imp >= t).mean()
        assert c.fnmr[i] == (gen < t).mean()
    # detailed down to FMR = 1/n and to FNMR = 1/n_gen, ends at FMR = 0
    assert 1 / imp.size in c.fmr and 1 / gen.size in c.fnmr
    assert c.fmr[-1] == 0.0 and c.fnmr[-1] == 1.0 and c.fmr[0] == 1.0
    # small inputs: every distinct score is a threshold
    small = m.det_curve([1, 2, 3], [0, 2])
    np.testing.assert_array_equal(small.thresholds[:-1], [0, 1, 2, 3])


# ----------------------------------------------------------------------------- intervals


def test_binomial_ci_known_values():
    lo, hi, method = m.binomial_ci(5, 10, 0.95, "clopper-pearson")
    assert method == "clopper-pearson"
    assert (float(lo), float(hi)) == pytest.approx((0.18709, 0.81291), abs=1e-5)
    lo, hi, _ = m.binomial_ci(5, 10, 0.95, "wilson")
    assert (float(lo), float(hi)) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    # zero successes: CP upper bound is 1 - (alpha/2)^(1/n)
    lo, hi, _ = m.binomial_ci(0, 100, 0.95, "clopper-pearson")
    assert lo == 0.0 and float(hi) == pytest.approx(1 - 0.025 ** (1 / 100))
    lo, hi, _ = m.binomial_ci(100, 100, 0.95, "wilson")
    assert hi == 1.0
    # vectorised
    lo, hi, _ = m.binomial_ci([0, 1, 2], [10, 10, 10])
    assert lo.shape == (3,) and np.all(lo <= np.array([0, 1, 2]) / 10)
    assert np.all(hi >= np.array([0, 1, 2]) / 10)


def test_auto_falls_back_to_wilson_without_scipy(monkeypatch):
    from pyfacematch.metrics import intervals

    monkeypatch.setattr(intervals, "_have_scipy", lambda: False)
    lo, hi, method = m.binomial_ci(5, 10)
    assert method == "wilson"
    assert (float(lo), float(hi)) == pytest.approx((0.23659, 0.76341), abs=1e-5)


@pytest.mark.parametrize(("p", "n"), [(0.1, 100), (0.02, 500), (0.5, 40)])
def test_ci_coverage_by_simulation(p, n):
    rng = np.random.default_rng(8)
    sims = 2000
    k = rng.binomial(n, p, sims)
    tol = 3 * math.sqrt(0.95 * 0.05 / sims)  # ~0.015
    lo, hi, _ = m.binomial_ci(k, np.full(sims, n), 0.95, "clopper-pearson")
    cov_cp = np.mean((lo <= p) & (p <= hi))
    assert cov_cp >= 0.95 - tol  # exact interval: never under-covers (up to MC noise)
    lo, hi, _ = m.binomial_ci(k, np.full(sims, n), 0.95, "wilson")
    cov_w = np.mean((lo <= p) & (p <= hi))
    assert abs(cov_w - 0.95) <= tol + 0.02  # Wilson: close to nominal
    # a 50% interval must cover about half the time: the width scales with confidence
    lo, hi, _ = m.binomial_ci(k, np.full(sims, n), 0.5, "wilson")
    assert 0.3 < np.mean((lo <= p) & (p <= hi)) < 0.7


def test_bootstrap_ci_covers_true_fnmr_including_threshold_uncertainty():
    rng = np.random.default_rng(9)
    alpha, d = 1e-2, 2.0
    truth = closed_form_fnmr(alpha, d)
    sims = 200
    cov_boot = cov_binom = 0
    for _ in range(sims):
        gen = rng.normal(d, 1, 300)
        imp = rng.normal(0, 1, 3000)
        (pb,) = m.fnmr_at_fmr(gen, imp, alpha, ci="bootstrap", n_bootstrap=400, seed=None)
        (pc,) = m.fnmr_at_fmr(gen, imp, alpha, ci="clopper-pearson")
        assert pb.fnmr_ci.method == "bootstrap"
        cov_boot += truth in pb.fnmr_ci
        cov_binom += truth in pc.fnmr_ci
    cov_boot /= sims
    cov_binom /= sims
    assert 0.90 <= cov_boot <= 0.99
    # a binomial interval on the FNMR ignores that the threshold was estimated too
    assert cov_binom < cov_boot


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(10)
    gen, imp = rng.normal(2, 1, 500), rng.normal(0, 1, 5000)
    a = m.fnmr_at_fmr(gen, imp, [1e-2, 1e-3], ci="bootstrap", seed=3)
    b = m.fnmr_at_fmr(gen, imp, [1e-2, 1e-3], ci="bootstrap", seed=3)
    assert a == b
    assert all(p.fnmr_ci.low <= p.fnmr <= p.fnmr_ci.high for p in a)


# ----------------------------------------------------------------------------- 1:N


RANKS = [1, 1, 2, 0, 1]
MATE = [0.9, 0.5, 0.8, -np.inf, 0.3]
NON_MATED = [0.1, 0.2, 0.4, 0.6, 0.7, 0.85, 0.3, 0.35, 0.45, 0.5]


def test_fpir_fnir_hand_computed():
    c = m.fpir_fnir(RANKS, MATE, NON_MATED, [-np.inf, 0.4], max_rank=1)
    assert c.kind == "identification"
    # T = -inf: every non-mated search has a candidate; misses are mates not at rank 1
    assert c.fmr[0] == 1.0 and c.fnmr[0] == 2 / 5
    # T = 0.4: non-mated tops >= 0.4: 0.4 0.6 0.7 0.85 0.45 0.5; rank-1 mates >= 0.4: 0.9 0.5
    assert c.fmr[1] == 6 / 10 and c.fnmr[1] == 3 / 5
    c = m.fpir_fnir(RANKS, MATE, NON_MATED, [0.4], max_rank=None)  # rank-2 mate (0.8) counts
    assert c.fnmr[0] == 2 / 5


def test_fnir_at_fpir_hand_computed():
    p1, p3 = m.fnir_at_fpir(RANKS, MATE, NON_MATED, [0.1, 0.3])
    # 0.1 of 10: one false positive allowed -> T just above 0.7 (only 0.85 passes)
    assert 0.7 < p1.threshold <= 0.85 and np.nextafter(p1.threshold, -1) == 0.7
    assert p1.fpir == 0.1 and p1.false_positives == 1
    assert p1.fnir == 4 / 5 and p1.false_negatives == 4  # only the 0.9 rank-1 mate passes
    (p1any,) = m.fnir_at_fpir(RANKS, MATE, NON_MATED, 0.1, max_rank=None)
    assert p1any.fnir == 3 / 5  # the rank-2 mate at 0.8 now counts
    # 0.3: three allowed -> T just above 0.5
    assert np.nextafter(p3.threshold, -1) == 0.5 and p3.fpir == 0.3
    assert p3.fnir == 4 / 5  # rank-1 mates 0.9 pass, 0.5 and 0.3 do not
    assert not p1.supported and "30" in p1.reason  # 0.1 needs 30 non-mated searches


def test_fnir_at_fpir_matches_brute_force():
    rng = np.random.default_rng(11)
    n_m, n_n = 2000, 5000
    ranks = rng.integers(0, 6, n_m)
    mate = np.where(ranks > 0, rng.normal(1.5, 1, n_m), -np.inf)
    non = rng.normal(0, 1, n_n)
    non[:50] = -np.inf  # empty candidate lists
    pts = m.fnir_at_fpir(ranks, mate, non, max_rank=3)
    assert [p.target_fpir for p in pts] == [0.003, 0.01, 0.1]
    for p in pts:
        t = p.threshold
        assert p.fpir == np.mean(non >= t) and p.fpir <= p.target_fpir
        found = (ranks >= 1) & (ranks <= 3) & (mate >= t)
        assert p.fnir == 1 - found.mean()
        assert p.fnir in p.fnir_ci
        assert p.supported  # 5000 >= ceil(3/0.003) = 1000
    # the curve agrees at the calibrated thresholds
    c = m.fpir_fnir(ranks, mate, non, [p.threshold for p in pts], max_rank=3)
    np.testing.assert_array_equal(np.sort([p.fnir for p in pts]), np.sort(c.fnmr))
    det = m.identification_det_curve(ranks, mate, non, max_rank=3, max_points=300)
    assert np.all(np.diff(det.fmr) <= 0) and np.all(np.diff(det.fnmr) >= 0)


def test_mate_score_is_ignored_when_not_returned():
    # rank 0 with a high score must still be a miss
    c = m.fpir_fnir([0, 1], [5.0, 0.5], [0.0], [0.1])
    assert c.fnmr[0] == 0.5


def test_cmc_and_rank_miss_rate():
    ranks = [1, 1, 2, 0, 3, 1]
    c = m.cmc(ranks)
    np.testing.assert_array_equal(c.ranks, [1, 2, 3])
    np.testing.assert_allclose(c.hit_rate, [3 / 6, 4 / 6, 5 / 6])
    np.testing.assert_allclose(c.miss_rate, [3 / 6, 2 / 6, 1 / 6])
    assert np.all(c.ci_low <= c.miss_rate) and np.all(c.miss_rate <= c.ci_high)
    assert m.cmc(ranks, 5).hit_rate[-1] == 5 / 6
    assert m.rank_miss_rate(ranks, 1) == 0.5
    assert m.rank_miss_rate(ranks, 2) == pytest.approx(2 / 6)
    # rank-k miss rate == FNIR at T = -inf with R = k
    for k in (1, 2, 3):
        f = m.fpir_fnir(ranks, np.zeros(6), [0.0], [-np.inf], max_rank=k)
        assert f.fnmr[0] == pytest.approx(c.miss_rate[k - 1])


# ----------------------------------------------------------------------------- ISO/IEC 19795-1


def test_failure_rates_and_generalized_rates():
    fte = m.failure_rate(2, 100)
    fta = m.failure_rate(5, 100)
    assert fte.rate == 0.02 and fta.rate == 0.05 and fta.ci.low < 0.05 < fta.ci.high
    g = m.generalized_rates(0.01, 0.1, fte=fte, fta=fta)
    assert g.gfar == pytest.approx(0.01 * 0.95 * 0.98)
    assert g.gfrr == pytest.approx(0.02 + 0.98 * 0.05 + 0.98 * 0.95 * 0.1)
    # no failures: generalized rates are the plain ones
    g0 = m.generalized_rates(0.01, 0.1)
    assert (g0.gfar, g0.gfrr) == (0.01, 0.1)
    # everybody fails to enrol: nothing is falsely accepted, everything rejected
    g1 = m.generalized_rates(0.5, 0.0, fte=1.0)
    assert (g1.gfar, g1.gfrr) == (0.0, 1.0)
    rng = np.random.default_rng(12)
    (p,) = m.fnmr_at_fmr(rng.normal(2, 1, 1000), rng.normal(0, 1, 10_000), 1e-2, fte=0.02, fta=0.05)
    assert p.gfar == pytest.approx(p.fmr * 0.95 * 0.98)
    assert p.gfrr == pytest.approx(0.02 + 0.98 * 0.05 + 0.98 * 0.95 * p.fnmr)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("gen", "imp", "exc"),
    [
        ([], [0.1], EmptyInputError),
        ([0.1], [], EmptyInputError),
        ([0.1, np.nan], [0.1], NonFiniteError),
        ([0.1], [np.inf], NonFiniteError),
        ([[0.1, 0.2]], [0.1], InputError),
        (["a"], [0.1], InputError),
        ([0.1 + 1j], [0.1], InputError),
    ],
)
def test_bad_scores_raise_typed_errors(gen, imp, exc):
    for fn in (
        lambda: m.fnmr_at_fmr(gen, imp),
        lambda: m.eer(gen, imp),
        lambda: m.det_curve(gen, imp),
        lambda: m.error_rates(gen, imp, [0.0]),
    ):
        with pytest.raises(exc) as info:
            fn()
        assert isinstance(info.value, PyFaceMatchError) and isinstance(info.value, ValueError)


def test_nan_message_counts_without_leaking_scores():
    with pytest.raises(NonFiniteError, match=r"1 of 3 scores are NaN \(first at index 1\)") as e:
        m.eer([0.123456, np.nan, 0.654321], [0.1])
    assert "0.123456" not in str(e.value)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, np.nan, [], "x", [[1e-3]]])
def test_bad_targets(bad):
    gen, imp = [0.5, 0.6], [0.1, 0.2]
    with pytest.raises(InputError):
        m.fnmr_at_fmr(gen, imp, bad)
    with pytest.raises(InputError):
        m.threshold_for_fmr(imp, bad)
    with pytest.raises(InputError):
        m.fnir_at_fpir([1], [0.5], imp, bad)


def test_other_bad_arguments():
    gen, imp = [0.5, 0.6], [0.1, 0.2]
    with pytest.raises(InputError):
        m.fnmr_at_fmr(gen, imp, 0.1, ci="jackknife")
    with pytest.raises(InputError):
        m.fnmr_at_fmr(gen, imp, 0.1, confidence=1.5)
    with pytest.raises(InputError):
        m.fnmr_at_fmr(gen, imp, 0.1, ci="bootstrap", n_bootstrap=2)
    with pytest.raises(InputError):
        m.fnmr_at_fmr(gen, imp, 0.1, fta=2.0)
    with pytest.raises(InputError):
        m.binomial_ci(3, 2)
    with pytest.raises(InputError):
        m.binomial_ci(1, 2, method="exact")
    with pytest.raises(InputError):
        m.failure_rate(3, 2)
    with pytest.raises(EmptyInputError):
        m.failure_rate(0, 0)
    with pytest.raises(InputError, match="one rank and one score"):
        m.fnir_at_fpir([1, 2], [0.5], imp)
    with pytest.raises(InputError):
        m.fnir_at_fpir([1, -1], [0.5, 0.4], imp)
    with pytest.raises(InputError):
        m.cmc([1.5, 2])
    with pytest.raises(EmptyInputError):
        m.cmc([])
    with pytest.raises(InputError):
        m.fnir_at_fpir([1], [0.5], imp, max_rank=0)
    with pytest.raises(NonFiniteError, match="-inf is allowed"):
        m.fnir_at_fpir([1], [0.5], [np.inf])
    with pytest.raises(NonFiniteError):
        m.fnir_at_fpir([1], [np.nan], [0.1])
    with pytest.raises(InputError):
        m.det_curve(gen, imp, max_points=3)


def test_integer_scores_accepted():
    (p,) = m.fnmr_at_fmr([5, 6, 7, 8], list(range(100)), 0.02)
    assert p.threshold > 97 and p.fmr == 0.02 and p.fnmr == 1.0


def test_calibration_primitives_agree_with_operating_points():
    rng = np.random.default_rng(13)
    imp = rng.integers(0, 300, 20_000).astype(np.float32)  # ties, float32
    gen = rng.integers(200, 400, 500).astype(np.float32)
    targets = [0.1, 1e-2, 1e-3, 1e-4, 1e-5]
    pts = m.fnmr_at_fmr(gen, imp, targets)
    assert [m.threshold_for_fmr(imp, t) for t in targets] == [p.threshold for p in pts]
    non = np.concatenate([imp, np.full(100, -np.inf, np.float32)])
    ipts = m.fnir_at_fpir(np.ones(500, int), gen, non, targets)
    assert [m.threshold_for_fpir(non, t) for t in targets] == [p.threshold for p in ipts]
    # mostly empty candidate lists: the threshold sits just above -inf, not at -inf
    sparse = np.full(1000, -np.inf)
    sparse[:5] = 1.0
    t = m.threshold_for_fpir(sparse, 0.01)
    assert np.isfinite(t) and np.mean(sparse >= t) == 0.005


def test_split_modules_reexported_and_as_scores_public():
    """Every family module's public names are reachable from pyfacematch.metrics (one object)."""
    import importlib

    from pyfacematch.errors import EmptyInputError, NonFiniteError, PyFaceMatchError

    for mod in ("types", "intervals", "verification", "identification", "iso19795"):
        sub = importlib.import_module(f"pyfacematch.metrics.{mod}")
        for name in sub.__all__:
            if name in ("interval",):
                continue
            assert getattr(m, name) is getattr(sub, name), (mod, name)
    a = m.as_scores(np.array([0.5, -1.0], np.float32), "genuine")
    assert a.dtype == np.float64 and a.tolist() == [0.5, -1.0]
    with pytest.raises(NonFiniteError, match="genuine: 1 of 2 scores are NaN") as ei:
        m.as_scores([0.1, np.nan], "genuine")
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, PyFaceMatchError)
    with pytest.raises(EmptyInputError):
        m.as_scores([], "impostor")
