"""Compact (int8 / bf16) templates: kernels on every SIMD level against the serial oracle and float64
numpy, the proven error bound, and compact scan + exact re-score = the float32 top-k exactly."""

from __future__ import annotations

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.errors import (
    DimensionError,
    DTypeError,
    EmptyInputError,
    InputError,
    NonFiniteError,
)

KINDS = ["int8", "bf16"]


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return pf.normalize(rng.standard_normal((n, d)))


def _exact_all(q: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The float32 reference: rerank over every row (the exact kernel, ties → lower row)."""
    cand = np.tile(np.arange(x.shape[0], dtype=np.int64), (q.shape[0], 1))
    return pf.rerank(q, x, cand, k)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d", [1, 7, 97, 512, 515])
def test_bound_holds_against_float64_on_every_level(
    simd_level: str, kind: str, d: int, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((131, d)).astype(np.float32) * rng.uniform(0.01, 5, (131, 1)).astype(
        np.float32
    )
    q = rng.standard_normal((5, d)).astype(np.float32)
    c = pf.CompactMatrix.from_float32(x, kind)
    a, e = c.scores(q)
    t = q.astype(np.float64) @ x.astype(np.float64).T
    assert (np.abs(a - t) <= e).all()
    # the bound is a bound, not a guess: it is within ~30x of the worst error seen
    assert e.max() < 60 * max(np.abs(a - t).max(), 1e-6)


@pytest.mark.parametrize("d", [1, 7, 97, 512, 515])
def test_int8_scores_equal_the_integer_oracle_on_every_level(
    simd_level: str, d: int, rng: np.random.Generator
) -> None:
    x = _unit(rng, 1031, d)
    q = _unit(rng, 3, d)
    c = pf.CompactMatrix.from_float32(x, "int8")
    cq = pf.CompactMatrix.from_float32(q, "int8")  # the probes quantised the same way
    i = cq.codes.astype(np.int64) @ c.codes.astype(np.int64).T  # exact integer dots
    want = i.astype(np.float32) * (cq.scale[:, None] * c.scale[None, :])
    a, _ = c.scores(q)
    np.testing.assert_array_equal(a, want)


def _amx_int8_or_skip() -> None:
    from pyfacematch import _core

    if not _core.amx_int8_compiled():
        pytest.skip("this build has no AMX-INT8 kernel (the compiler lacked -mamx-int8)")
    if not _core.cpu_has_amx_int8():
        pytest.skip("this CPU or OS has no AMX-INT8 tiles (or Linux refused the tile permission)")
    if "avx512" not in pf.simd.available():
        pytest.skip("AMX runs under the avx512 level, which this CPU cannot run")


@pytest.mark.parametrize(
    ("n", "d", "m"),
    [(1031, 97, 16), (1031, 512, 17), (33, 515, 37), (2000, 7, 64), (100, 64, 33), (4099, 130, 50)],
)
def test_int8_amx_tiles_give_the_integer_oracle_and_vnni_answer(
    n: int, d: int, m: int, rng: np.random.Generator
) -> None:
    """AMX-INT8 (TDPBSSD) scans of a batch: the exact integer dots, so the same approximate scores
    and bounds as the VNNI kernel and the serial oracle, and the same exact top-k, at awkward sizes
    (probes and rows not multiples of the 16 × 16 tiles, d not a multiple of 64)."""
    from pyfacematch import _core

    _amx_int8_or_skip()
    x = _unit(rng, n, d)
    q = _unit(rng, m, d)
    c = pf.CompactMatrix.from_float32(x, "int8", exact=x)
    cq = pf.CompactMatrix.from_float32(q, "int8")
    want = (cq.codes.astype(np.int64) @ c.codes.astype(np.int64).T).astype(np.float32) * (
        cq.scale[:, None] * c.scale[None, :]
    )
    before = pf.simd.active()
    pf.simd.set_level("avx512")
    try:
        pf.simd.set_amx(True)
        assert _core.amx_int8_active()
        a1, e1 = c.scores(q)
        s1, i1 = pf.topk(q, c, min(10, n))
        pf.simd.set_amx(False)
        assert not _core.amx_int8_active()
        a0, e0 = c.scores(q)
        s0, i0 = pf.topk(q, c, min(10, n))
        pf.simd.set_level("serial")
        a_ser, _ = c.scores(q)
    finally:
        pf.simd.set_amx(True)
        pf.simd.set_level(before)
    np.testing.assert_array_equal(a1, want)
    np.testing.assert_array_equal(a1, a0)
    np.testing.assert_array_equal(e1, e0)
    np.testing.assert_array_equal(a1, a_ser)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(s1, s0)
    ws, wi = _exact_all(q, x, min(10, n))
    np.testing.assert_array_equal(i1, wi)
    np.testing.assert_array_equal(s1, ws)


@pytest.mark.parametrize("d", [1, 7, 97, 512, 515])
def test_bf16_scores_match_the_serial_oracle(
    simd_level: str, d: int, rng: np.random.Generator
) -> None:
    x = _unit(rng, 1031, d)
    q = _unit(rng, 3, d)
    c = pf.CompactMatrix.from_float32(x, "bf16")
    a, _ = c.scores(q)
    pf.simd.set_level("serial")
    try:
        oracle, _ = c.scores(q)
    finally:
        pf.simd.set_level(simd_level)
    # float32 accumulation vs double: γ_d · Σ|q̂ ĝ| ≤ γ_d (unit rows, bf16 rounding aside)
    gamma = d * 2.0**-24 / (1 - d * 2.0**-24)
    assert np.abs(a - oracle).max() <= gamma * 1.02 + 1e-7


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [1, 7, 60])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_compact_then_exact_is_the_float32_topk(
    simd_level: str, kind: str, m: int, k: int, rng: np.random.Generator
) -> None:
    x = _unit(rng, 20011, 97)
    q = _unit(rng, m, 97)
    q[0] = x[123]  # a genuine match
    c = pf.CompactMatrix.from_float32(x, kind, exact=x)
    s, i, nc = c.topk(q, k, return_shortlist=True)
    es, ei = _exact_all(q, x, k)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(s, es)
    assert i[0, 0] == 123
    assert (nc >= k).all() and (nc < x.shape[0]).all()  # the bound pruned, and kept enough
    # and the same rows as the float32 scan (scores of the two exact kernels agree to rounding)
    ts, ti = pf.topk(q, x, k)
    np.testing.assert_allclose(s, ts, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_near_ties_and_duplicates(simd_level: str, kind: str, rng: np.random.Generator) -> None:
    """Rows whose float32 scores tie or differ by an ulp, and whose compact codes may order them the
    other way: the answer must still be the float32 order with ties to the lower row."""
    d = 128
    q = _unit(rng, 1, d)
    base = rng.standard_normal((1, d)).astype(np.float32)
    noise = rng.standard_normal((3000, d)).astype(np.float32)
    x = pf.normalize(base + noise * np.float32(1e-6))  # 3000 near-identical rows
    x[100:120] = x[7]  # exact duplicates: ties, lower row first
    x[2000:2010] = pf.normalize(q + rng.standard_normal((10, d)).astype(np.float32) * 1e-7)
    filler = _unit(rng, 5000, d)
    g = np.ascontiguousarray(np.vstack([filler[:2500], x, filler[2500:]]))
    c = pf.CompactMatrix.from_float32(g, kind, exact=g)
    for k in (1, 5, 25, 200):
        s, i = c.topk(q, k)
        es, ei = _exact_all(q, g, k)
        np.testing.assert_array_equal(i, ei)
        np.testing.assert_array_equal(s, es)


def test_overflowing_shortlist_is_scanned_again(rng: np.random.Generator) -> None:
    """Every row within the bound of the k-th: the candidate buffers overflow, the probe is scanned
    again with larger buffers (never a wrong answer)."""
    d = 64
    base = _unit(rng, 1, d)
    g = pf.normalize(base + rng.standard_normal((40000, d)).astype(np.float32) * np.float32(1e-4))
    c = pf.CompactMatrix.from_float32(g, "int8", exact=g)
    s, i, nc = c.topk(base, 3, return_shortlist=True)
    es, ei = _exact_all(base, g, 3)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(s, es)
    assert nc[0] > 4 * 3 + 1024  # more candidates than the first buffer held


@pytest.mark.parametrize("kind", KINDS)
def test_rerank_of_a_shortlist_equals_rerank(
    simd_level: str, kind: str, rng: np.random.Generator
) -> None:
    x = _unit(rng, 5003, 97)
    q = _unit(rng, 9, 97)
    cand = rng.integers(-1, x.shape[0], size=(9, 400))
    cand[:, 5] = cand[:, 4]  # duplicates are ignored
    c = pf.CompactMatrix.from_float32(x, kind, exact=x)
    for k in (1, 10, 50):
        s, i = c.rerank(q, cand, k)
        es, ei = pf.rerank(q, x, cand, k)
        np.testing.assert_array_equal(i, ei)
        np.testing.assert_array_equal(s, es)


@pytest.mark.parametrize("kind", KINDS)
def test_without_float32_the_approximate_topk(kind: str, rng: np.random.Generator) -> None:
    x = _unit(rng, 3001, 64)
    q = _unit(rng, 4, 64)
    c = pf.CompactMatrix.from_float32(x, kind)
    a, _ = c.scores(q)
    s, i = pf.topk(q, c, 7)
    want = np.argsort(-a, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(i, want)
    np.testing.assert_array_equal(s, np.take_along_axis(a, want, 1))


def test_memmapped_float32_source(tmp_path: object, rng: np.random.Generator) -> None:
    import pathlib

    x = _unit(rng, 4001, 96)
    path = pathlib.Path(str(tmp_path)) / "x.f32"
    x.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)
    c = pf.CompactMatrix.from_float32(x, "int8", exact=mm)
    s, i = c.topk(x[:5], 10)
    es, ei = _exact_all(x[:5], x, 10)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(s, es)
    assert c.bytes_per_row == 128 + 16


def test_typed_errors(rng: np.random.Generator) -> None:
    x = _unit(rng, 50, 16)
    with pytest.raises(InputError, match="kind"):
        pf.CompactMatrix.from_float32(x, "int4")
    with pytest.raises(EmptyInputError):
        pf.CompactMatrix.from_float32(np.zeros((0, 16), np.float32))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(NonFiniteError, match="row 3"):
        pf.CompactMatrix.from_float32(bad)
    for kind in KINDS:
        with pytest.raises(NonFiniteError, match="too large"):
            pf.CompactMatrix.from_float32(np.full((2, 16), 3e38, np.float32), kind)
    c = pf.CompactMatrix.from_float32(x, "int8", exact=x)
    with pytest.raises(DimensionError, match="dimension"):
        c.topk(rng.standard_normal((2, 17)), 3)
    with pytest.raises(DimensionError, match="same rows"):
        c.attach_exact(x[:10])
    with pytest.raises(InputError):
        c.topk(x[:2], 0)
    with pytest.raises(InputError, match="outside"):
        c.rerank(x[:1], [[0, 50]], 1)
    with pytest.raises(DTypeError):
        pf.CompactMatrix(
            "int8",
            16,
            np.zeros((3, 16), np.int8),
            *([np.zeros(3, np.float32)] * 3),
            np.zeros(3, np.int32),
        )
    with pytest.raises(DimensionError):
        pf.CompactMatrix(
            "int8",
            16,
            np.zeros((3, 64), np.int8),
            *([np.zeros(2, np.float32)] * 3),
            np.zeros(3, np.int32),
        )
    nan_probe = x[:1].copy()
    nan_probe[0, 0] = np.inf
    with pytest.raises(NonFiniteError):
        c.topk(nan_probe, 1)
