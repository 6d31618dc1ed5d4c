"""Scoring kernels against float64 numpy and the serial oracle, on every SIMD level."""

from __future__ import annotations

import array
import threading
from collections.abc import Iterator

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.errors import (
    DimensionError,
    DTypeError,
    EmptyInputError,
    InputError,
    NonFiniteError,
    PyFaceMatchError,
    ZeroVectorError,
)

DIMS = [1, 7, 97, 128, 512, 515]


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def ref_topk(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in float64: sort by score descending, ties by lower index (stable argsort)."""
    s = q.astype(np.float64) @ g.astype(np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("m", [1, 5, 6, 13])
def test_scores_and_topk_match_float64_numpy(simd_level: str, rng, d: int, m: int) -> None:
    q, g = unit(rng, m, d), unit(rng, 700, d)
    ref = q.astype(np.float64) @ g.astype(np.float64).T
    assert np.abs(pf.scores(q, g) - ref).max() <= 1e-5
    s, i = pf.topk(q, g, 10)
    rs, ri = ref_topk(q, g, 10)
    if d > 1:  # at d = 1 every score is ±1: ties everywhere, covered by the integer test below
        np.testing.assert_array_equal(i, ri)
    assert np.abs(s - rs).max() <= 1e-5
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (m, 10)


@pytest.mark.parametrize("d", DIMS)
def test_levels_agree_with_serial_oracle(rng, d: int) -> None:
    q, g = unit(rng, 9, d), unit(rng, 301, d)
    before = pf.simd.active()
    try:
        pf.simd.set_level("serial")
        ref_s = pf.scores(q, g)
        ref_c = pf.cosine(q[0], g[0])
        for level in pf.simd.available():
            pf.simd.set_level(level)
            assert np.abs(pf.scores(q, g) - ref_s).max() <= 1e-5, level
            assert abs(pf.cosine(q[0], g[0]) - ref_c) <= 1e-5, level
    finally:
        pf.simd.set_level(before)


@pytest.mark.parametrize("d", [7, 97, 515])
def test_topk_ties_go_to_the_lower_index(simd_level: str, rng, d: int) -> None:
    # Small integers: every dot product is exact in float32, so ties are exact and plentiful.
    q = rng.integers(-2, 3, size=(20, d)).astype(np.float32)
    g = rng.integers(-2, 3, size=(300, d)).astype(np.float32)
    g[150:] = g[:150]  # every row duplicated at a higher index
    s, i = pf.topk(q, g, 25)
    rs, ri = ref_topk(q, g, 25)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(s, rs.astype(np.float32))


def test_topk_large_batch_crosses_blocks_and_threads(rng) -> None:
    q, g = unit(rng, 37, 64), unit(rng, 9000, 64)
    for threads in (1, 2, 3):
        pf.set_num_threads(threads)
        s, i = pf.topk(q, g, 7)
        rs, ri = ref_topk(q, g, 7)
        np.testing.assert_array_equal(i, ri)
    pf.set_num_threads(2)


def test_k_larger_than_gallery_returns_all_rows(rng) -> None:
    q, g = unit(rng, 3, 16), unit(rng, 5, 16)
    s, i = pf.topk(q, g, 50)
    assert s.shape == (3, 5)
    np.testing.assert_array_equal(np.sort(i, axis=1), np.tile(np.arange(5), (3, 1)))


def test_one_dimensional_probe_gives_one_dimensional_results(rng) -> None:
    g = unit(rng, 40, 12)
    s, i = pf.topk(g[3], g, 4)
    assert s.shape == (4,) and i[0] == 3 and s[0] == pytest.approx(1.0, abs=1e-6)
    assert pf.scores(g[3], g).shape == (40,)


def test_cosine_is_true_cosine_and_converts_other_dtypes(rng) -> None:
    a, b = rng.standard_normal(33), rng.standard_normal(33)
    want = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert pf.cosine(a.astype(np.float32), b.astype(np.float32)) == pytest.approx(want, abs=1e-6)
    assert pf.cosine(a, b) == pytest.approx(want, abs=1e-6)  # float64 takes the converting path
    assert pf.cosine(list(a), list(b)) == pytest.approx(want, abs=1e-6)
    assert pf.cosine(a.astype(np.float32)[::-1], b.astype(np.float32)[::-1]) == pytest.approx(
        want, abs=1e-6
    )
    assert pf.cosine(a.astype(">f4"), b.astype(np.float32)) == pytest.approx(
        want, abs=1e-6
    )  # big-endian
    fa, fb = array.array("f", a.astype(np.float32)), array.array("f", b.astype(np.float32))
    assert pf.cosine(fa, fb) == pytest.approx(want, abs=1e-6)  # buffer protocol, not numpy


def test_normalize(rng) -> None:
    x = rng.standard_normal((10, 20))
    y = pf.normalize(x)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(y, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)
    assert pf.normalize(x[0]).shape == (20,)


def test_many_python_threads_share_arrays_and_get_the_serial_answer(rng) -> None:
    q, g = unit(rng, 64, 128), unit(rng, 20000, 128)
    before = pf.simd.active()
    pf.simd.set_level("serial")
    want_s, want_i = pf.topk(q, g, 10)
    pf.simd.set_level(before)
    errors: list[str] = []

    def work(t: int) -> None:
        for rep in range(4):
            rows = slice(t % 4, 64, 3) if rep % 2 else slice(None)
            s, i = pf.topk(q[rows], g, 10)
            if not np.array_equal(i, want_i[rows]) or np.abs(s - want_s[rows]).max() > 1e-5:
                errors.append(f"thread {t} rep {rep}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_gil_is_released_during_topk(rng) -> None:
    # A Python thread keeps counting while topk runs: with the GIL held it could not.
    g = unit(rng, 200_000, 256)
    q = unit(rng, 64, 256)
    count = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal count
        while not stop.is_set():
            count += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        before = count
        pf.topk(q, g, 5)
        during = count - before
    finally:
        stop.set()
        t.join()
    assert during > 1000


# --- bad input ---------------------------------------------------------------------------------


def test_errors_are_typed_and_also_builtins() -> None:
    assert issubclass(DimensionError, ValueError) and issubclass(DimensionError, PyFaceMatchError)
    assert issubclass(DTypeError, TypeError)


def test_dimension_mismatch_names_both(rng) -> None:
    with pytest.raises(DimensionError, match="dimension 128.*dimension 512"):
        pf.topk(unit(rng, 2, 128), unit(rng, 5, 512), 3)
    with pytest.raises(DimensionError, match="3.*4"):
        pf.cosine(np.ones(3, np.float32), np.ones(4, np.float32))


def test_gallery_with_wrong_dtype_or_layout_is_refused_with_the_fix(rng) -> None:
    g64 = rng.standard_normal((10, 8))
    with pytest.raises(DTypeError, match="as_templates"):
        pf.topk(g64[0], g64, 3)
    gF = np.asfortranarray(g64.astype(np.float32))
    with pytest.raises(DTypeError, match="C-contiguous"):
        pf.scores(g64[0], gF)
    s, i = pf.topk(g64[0], pf.as_templates(g64), 3)  # the fix works
    assert i[0] == 0
    with pytest.raises(DTypeError, match="real numbers"):
        pf.topk(np.array(["a", "b"]), pf.as_templates(g64), 1)


@pytest.mark.parametrize("k", [0, -3])
def test_bad_k(rng, k: int) -> None:
    with pytest.raises(InputError, match="k must be >= 1"):
        pf.topk(unit(rng, 1, 4), unit(rng, 4, 4), k)


def test_empty_gallery_or_batch(rng) -> None:
    with pytest.raises(EmptyInputError, match="gallery is empty"):
        pf.topk(unit(rng, 1, 4), np.zeros((0, 4), np.float32), 1)
    with pytest.raises(EmptyInputError, match="probes batch is empty"):
        pf.scores(np.zeros((0, 4), np.float32), unit(rng, 3, 4))


def test_nan_and_inf_name_the_row(rng, simd_level: str) -> None:
    g = unit(rng, 50, 32)
    q = unit(rng, 4, 32)
    bad_q = q.copy()
    bad_q[2, 5] = np.nan
    with pytest.raises(NonFiniteError, match="probes row 2"):
        pf.topk(bad_q, g, 3)
    bad_g = g.copy()
    bad_g[37, 0] = np.inf
    with pytest.raises(NonFiniteError, match="gallery row 37"):
        pf.topk(q, bad_g, 3)
    with pytest.raises(NonFiniteError, match="gallery row 37"):
        pf.topk(unit(rng, 8, 32), bad_g, 3)  # the blocked (gemm) path
    with pytest.raises(NonFiniteError, match="gallery row 37"):
        pf.scores(q, bad_g)
    with pytest.raises(NonFiniteError, match="vector b"):
        pf.cosine(q[0], bad_g[37])


def test_zero_vectors(rng) -> None:
    x = rng.standard_normal((5, 6))
    x[3] = 0
    with pytest.raises(ZeroVectorError, match="row 3"):
        pf.normalize(x)
    with pytest.raises(ZeroVectorError, match="vector a"):
        pf.cosine(np.zeros(6, np.float32), np.ones(6, np.float32))


def test_cosine_refuses_batches_and_bad_arity(rng) -> None:
    with pytest.raises(InputError, match="1-D"):
        pf.cosine(unit(rng, 2, 3), unit(rng, 2, 3))
    with pytest.raises(TypeError, match="2 positional"):
        pf.cosine(np.ones(3, np.float32))  # type: ignore[call-arg]


def _child_topk(args: tuple[np.ndarray, int]) -> int:
    g, i = args
    return int(pf.topk(g[i : i + 8], g, 3)[1][0, 0])


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_topk_works_in_forked_worker_processes(rng) -> None:
    # Bulk jobs fan out with multiprocessing; a child forked after the core's threads started
    # must still complete calls (the calling thread does the work the missing workers would).
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("this platform cannot fork")
    g = unit(rng, 20000, 64)
    pf.topk(g[:8], g, 3)  # start the pool's threads in the parent
    with mp.get_context("fork").Pool(2) as pool:
        assert pool.map(_child_topk, [(g, i) for i in range(4)], chunksize=1) == [0, 1, 2, 3]


# ------------------------------------------------------------------ bf16 first pass of large batches
@pytest.fixture(params=["avx512_bf16", "amx"])
def bf16_on(request: pytest.FixtureRequest) -> Iterator[None]:
    """The bf16 first pass is on (it is used from 48 probes on where the CPU has AVX512_BF16),
    once on AVX-512 BF16 and once on AMX tiles (where the build and CPU have them)."""
    if not pf.simd.info()["bf16_prefilter"]:
        pytest.skip("this CPU has no AVX512_BF16: topk uses float32 only")
    amx = request.param == "amx"
    if amx and not (pf.simd.info()["amx"]["compiled"] and pf.simd.info()["amx"]["cpu"]):  # type: ignore[index]
        pytest.skip("no AMX-BF16 here (build, CPU, OS or tile permission): its pass cannot run")
    pf.simd.set_amx(amx)
    assert pf.simd.info()["amx"]["active"] is amx  # type: ignore[index]
    try:
        yield
    finally:
        pf.simd.set_bf16_prefilter(True)
        pf.simd.set_amx(True)


@pytest.mark.parametrize("m", [48, 49, 77])
@pytest.mark.parametrize("n", [47, 1003])
@pytest.mark.parametrize("d", [33, 97, 515])
def test_bf16_first_pass_at_awkward_sizes(bf16_on, rng, m: int, n: int, d: int) -> None:
    # m, n not multiples of 16 or 32 (tiles, panels), d not a multiple of 32 (tile steps) or odd
    q, g = unit(rng, m, d), unit(rng, n, d)
    s, i = pf.topk(q, g, 7)
    rs, ri = ref_topk(q, g, 7)
    np.testing.assert_array_equal(i, ri)
    assert np.abs(s - rs).max() <= 1e-5
    before = pf.simd.active()
    pf.simd.set_level("serial")
    try:
        ss, si = pf.topk(q, g, 7)
    finally:
        pf.simd.set_level(before)
    np.testing.assert_array_equal(i, si)
    assert np.abs(s - ss).max() <= 1e-5


@pytest.mark.parametrize("d", [7, 97, 512, 515])
def test_bf16_first_pass_gives_the_float32_answer(bf16_on, rng, d: int) -> None:
    q, g = unit(rng, 64, d), unit(rng, 3000, d)
    s, i = pf.topk(q, g, 10)
    rs, ri = ref_topk(q, g, 10)
    np.testing.assert_array_equal(i, ri)
    assert np.abs(s - rs).max() <= 1e-5
    pf.simd.set_bf16_prefilter(False)
    s32, i32 = pf.topk(q, g, 10)
    np.testing.assert_array_equal(i, i32)


def test_bf16_first_pass_keeps_exact_ties_and_any_norm(bf16_on, rng) -> None:
    q = rng.integers(-2, 3, size=(50, 97)).astype(np.float32)
    g = rng.integers(-2, 3, size=(600, 97)).astype(np.float32)
    g[300:] = g[:300]  # every row duplicated at a higher index
    s, i = pf.topk(q, g, 25)
    rs, ri = ref_topk(q, g, 25)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(s, rs.astype(np.float32))
    # rows of very different norms: the error bound scales with them
    q2 = unit(rng, 60, 128) * rng.uniform(1e-3, 1e3, (60, 1)).astype(np.float32)
    g2 = unit(rng, 2000, 128) * rng.uniform(1e-3, 1e3, (2000, 1)).astype(np.float32)
    s2, i2 = pf.topk(q2, g2, 5)
    np.testing.assert_array_equal(i2, ref_topk(q2, g2, 5)[1])


def test_bf16_candidates_overflow_falls_back_to_float32(bf16_on, rng) -> None:
    # 3000 identical rows: every one ties, far more candidates than the buffer holds
    g = np.tile(rng.integers(-2, 3, size=(1, 64)).astype(np.float32), (3000, 1))
    g[1234] += 1.0  # one row better for some probes
    q = rng.integers(-2, 3, size=(48, 64)).astype(np.float32)
    for threads in (1, 2, 3):
        pf.set_num_threads(threads)
        s, i = pf.topk(q, g, 8)
        rs, ri = ref_topk(q, g, 8)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_array_equal(s, rs.astype(np.float32))
    pf.set_num_threads(2)


def test_bf16_first_pass_still_names_non_finite_rows(bf16_on, rng) -> None:
    g = unit(rng, 500, 32)
    g[321, 3] = np.nan
    with pytest.raises(NonFiniteError, match="gallery row 321"):
        pf.topk(unit(rng, 64, 32), g, 3)


def test_topk_scores_do_not_depend_on_batch_size_or_gallery_split() -> None:
    # The scan forms (streaming, packed GEMM, bf16/AMX first pass) round differently and which
    # one runs depends on the batch and the thread split; every reported score is re-computed by
    # one kernel, so a probe/row pair is scored alike in any batch and in any part of a gallery.
    rng = np.random.default_rng(44)
    g = rng.standard_normal((516, 128)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = rng.standard_normal((100, 128)).astype(np.float32)
    ref_s, ref_i = pf.topk(q[:1], g, 5)
    for m in (1, 5, 6, 44, 48, 100):
        s, i = pf.topk(q[:m], g, 5)
        np.testing.assert_array_equal(s[0], ref_s[0])
        np.testing.assert_array_equal(i[0], ref_i[0])
    whole_s, whole_i = pf.topk(q[:44], g, 3)
    half = np.arange(0, 516, 2)
    part_s, part_i = pf.topk(q[:44], g[half], 516)
    for p in range(44):
        by_row = dict(zip(half[part_i[p]].tolist(), part_s[p].tolist()))
        for s, r in zip(whole_s[p], whole_i[p]):
            if r in by_row:
                assert by_row[r] == s, (p, r)
