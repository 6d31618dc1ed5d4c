"""The bf16 first pass of large-batch top-k near the limit of its error bound.

The pass scores every row in bf16 and keeps a row as a candidate while its approximate score plus
the bound e reaches the k-th best approximate score minus e; the candidates are then scored
exactly. A bound that is too small prunes a row that belongs to the top k. These inputs put the
true k-th and (k+1)-th scores next to each other while bf16 rounding moves them apart in the wrong
order, by as much as rounding can: every element sits just below or just above the midpoint
between two bf16 values (a power of two times 1 + 2^-8 ∓ δ), so each one is rounded by almost
2^-8 of itself, coherently. Row A (the true k-th) and the probe are rounded down where A lives;
row C (the true (k+1)-th) and the probe are rounded up where C lives. Then approx(C) - approx(A)
is about 2^-6 |q| |A|, i.e. about 2·e for the correct bound: a bound half as large (the one this
code once had) or a quarter as large returns C instead of A.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch import _core

U = 2.0**-8  # half the spacing of bf16 numbers in [1, 2): the midpoint offset
DELTA = 2.0**-22  # how far from the midpoint (float32 resolves it: spacing 2^-23 near 1)
BATCH = 64  # the bf16 pass runs from 48 probes on


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 → bf16 (round to nearest even) → float64: what the first pass multiplies."""
    b = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16 << 16
    return b.astype(np.uint32).view(np.float32).astype(np.float64)


def adversarial(
    d: int, k: int, rng: np.random.Generator, spread: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Probes (BATCH × d), gallery, and the rows that are truly k-th (A) and (k+1)-th (C).

    ``spread`` > 0 multiplies element j of the probe by 2^e_j and of every row by 2^-e_j
    (|e_j| <= spread): products, scores and rounding directions are unchanged, the dynamic range
    within each vector grows.
    """
    perm = rng.permutation(d)
    h = d // 2
    s_a, s_c = perm[:h], perm[h : 2 * h]  # A's dims, C's dims (one left over when d is odd)
    lo, hi = 1 + U - DELTA, 1 + U + DELTA  # round down to 1 / up to 1 + 2^-7
    q = np.zeros(d)
    q[s_a], q[s_c] = lo, hi
    if d % 2:
        q[perm[-1]] = 1.0
    a = np.zeros(d)
    a[s_a] = lo
    c = np.zeros(d)
    c[s_c] = hi
    # Lower C's exact score just below A's: one of its elements becomes 1.0, which bf16 holds.
    c[s_c[-1]] = 1.0
    # k - 1 clear winners above both (along q, no longer than A, so they do not widen the
    # bound: it scales with the largest row norm of a block), and fillers below.
    w = q / np.linalg.norm(q) * np.linalg.norm(a) * 0.99
    win = np.repeat(w[None], k - 1, 0)
    fill = np.full((7, d), 0.01) * rng.uniform(0.5, 1.0, (7, 1))
    gallery = np.vstack([win, c[None], a[None], fill])
    ia, ic = k, k - 1  # C is stored before A: on a wrong prune the lower index would win
    if spread:
        e = rng.integers(-spread, spread + 1, d).astype(np.float64)
        q = q * 2.0**e
        gallery = gallery * 2.0**-e
    order = rng.permutation(len(gallery))
    gallery = gallery[order]
    ia, ic = int(np.argsort(order)[ia]), int(np.argsort(order)[ic])
    probes = np.repeat(q[None], BATCH, 0)
    return probes.astype(np.float32), gallery.astype(np.float32), ia, ic


@pytest.fixture(params=["avx512_bf16", "amx"])
def bf16_on(request: pytest.FixtureRequest) -> Iterator[None]:
    """The bf16 first pass on AVX-512 BF16, then on AMX tiles (the same bound must hold on both)."""
    if "avx512" not in pf.simd.available():
        pytest.skip("the bf16 first pass needs the AVX-512 level")
    amx = request.param == "amx"
    if amx and not (_core.amx_compiled() and _core.cpu_has_amx_bf16()):
        pytest.skip("no AMX-BF16 here (build, CPU, OS or tile permission): its pass cannot run")
    before = pf.simd.active()
    pf.simd.set_level("avx512")
    pf.simd.set_bf16_prefilter(True)
    pf.simd.set_amx(amx)
    try:
        if not _core.bf16_prefilter_active():
            pytest.skip("this CPU has no AVX512_BF16: the bf16 first pass does not run here")
        assert _core.amx_active() is amx
        yield
    finally:
        pf.simd.set_amx(True)
        pf.simd.set_level(before)


def ref_topk(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q.astype(np.float64) @ g.astype(np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize("d", [7, 8, 33, 64, 97, 128, 255, 512, 515])
@pytest.mark.parametrize("spread", [0, 6])
def test_bf16_pass_keeps_a_true_kth_row_that_rounding_pushes_below_its_neighbour(
    bf16_on: None, d: int, spread: int
) -> None:
    rng = np.random.default_rng(1000 + d + spread)
    for k in (1, 2, 5):
        q, g, ia, ic = adversarial(d, k, rng, spread)
        exact = q[0].astype(np.float64) @ g.astype(np.float64).T
        approx = bf16_round(q[0]) @ bf16_round(g).T
        # the construction: A truly above C, yet bf16 ranks C above A by more than twice the
        # bound this code once had (2^-8 |q| max|g|), which therefore pruned A
        assert exact[ia] > exact[ic]
        if spread == 0:
            scale = float(np.linalg.norm(q[0])) * float(np.linalg.norm(g, axis=1).max())
            assert approx[ic] - approx[ia] > 2 * 2.0**-8 * scale
        ref_s, ref_i = ref_topk(q, g, k)
        assert ref_i[0, k - 1] == ia
        s, i = pf.topk(q, g, k)
        assert (i == ref_i).all(), f"d={d} k={k}: got {i[0].tolist()}, want {ref_i[0].tolist()}"
        np.testing.assert_allclose(s, ref_s, rtol=0, atol=1e-6 * float(np.abs(ref_s).max()))


def test_bf16_pass_agrees_with_float64_on_random_near_ties(bf16_on: None) -> None:
    # Rows a few bf16 rounding steps apart around one face: the k best must be the float64 ones
    # (up to float32's own near-ties), with scores to float32 precision.
    rng = np.random.default_rng(5)
    for d in (7, 64, 131, 515):
        base = rng.standard_normal(d).astype(np.float32)
        steps = rng.integers(-3, 4, (300, d)) * (np.abs(base) * 2.0**-8).astype(np.float32)
        g = (base + steps).astype(np.float32)
        q = (base + rng.standard_normal((BATCH, d)).astype(np.float32) * 0.05).astype(np.float32)
        k = 10
        s, i = pf.topk(q, g, k)
        exact = q.astype(np.float64) @ g.astype(np.float64).T
        ref_s, ref_i = ref_topk(q, g, k)
        tol = 4e-7 * float(np.abs(ref_s).max())
        np.testing.assert_allclose(s, ref_s, rtol=0, atol=tol)
        got = np.take_along_axis(exact, i, 1)  # exact scores of the rows returned
        np.testing.assert_allclose(got, ref_s, rtol=0, atol=tol)


@pytest.mark.parametrize("big", [1e20, 1e30, 3e38])
def test_bf16_pass_with_a_huge_probe_and_zero_rows(bf16_on: None, big: float) -> None:
    # |q|² overflows float32, the block's rows are all zero: the bound was inf × 0 = NaN and the
    # pass admitted no row, so topk answered index -1 for finite inputs (found by fuzz_core).
    rng = np.random.default_rng(3)
    q = (rng.choice([-1.0, 1.0], (BATCH, 33)) * big).astype(np.float32)
    assert np.isfinite(q).all()
    g = np.zeros((40, 33), np.float32)
    s, i = pf.topk(q, g, 3)
    assert (i == [0, 1, 2]).all()
    assert (s == 0).all()
