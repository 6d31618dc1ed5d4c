"""Masked cosine, re-ranking and 1-bit codes against numpy references on every SIMD level."""

from __future__ import annotations

import heapq

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.errors import DimensionError, DTypeError, InputError, NonFiniteError

BLOCKS = np.array([0, 20, 45, 50, 97], dtype=np.int64)  # uneven blocks, d = 97


def ref_masked(q, mq, g, mg, blocks, min_fraction):
    """float64 reference: score over blocks valid in both, NaN when they cover too little."""
    d = blocks[-1]
    out = np.full((len(q), len(g)), np.nan)
    for a in range(len(q)):
        for b in range(len(g)):
            sh = int(mq[a]) & int(mg[b])
            sel = np.zeros(d, bool)
            for j in range(len(blocks) - 1):
                if sh >> j & 1:
                    sel[blocks[j] : blocks[j + 1]] = True
            if sel.sum() < max(1, np.ceil(min_fraction * d - 1e-9)):
                continue
            x, y = q[a, sel].astype(np.float64), g[b, sel].astype(np.float64)
            out[a, b] = x @ y / np.sqrt((x @ x) * (y @ y))
    return out


def data(rng, m=7, n=60, d=97):
    q = pf.normalize(rng.standard_normal((m, d)))
    g = pf.normalize(rng.standard_normal((n, d)))
    mq = rng.integers(0, 16, size=m).astype(np.uint64)
    mg = rng.integers(0, 16, size=n).astype(np.uint64)
    mq[0] = mg[0] = 15
    return q, mq, g, mg


def test_masked_scores_match_numpy(simd_level: str, rng) -> None:
    q, mq, g, mg = data(rng)
    ref = ref_masked(q, mq, g, mg, BLOCKS, 0.3)
    got = pf.masked_scores(q, g, mq, mg, BLOCKS, 0.3)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    assert np.abs(got[ok] - ref[ok]).max() <= 1e-5
    assert pf.masked_cosine(q[1], g[2], mq[1], mg[2], BLOCKS, 0.3) == pytest.approx(
        ref[1, 2], abs=1e-5, nan_ok=True
    )


def test_masked_topk_matches_numpy_and_pads(simd_level: str, rng) -> None:
    q, mq, g, mg = data(rng)
    ref = ref_masked(q, mq, g, mg, BLOCKS, 0.5)
    s, i = pf.masked_topk(q, g, 12, mq, mg, BLOCKS, 0.5)
    for a in range(len(q)):
        valid = np.flatnonzero(~np.isnan(ref[a]))
        order = valid[np.argsort(-ref[a, valid], kind="stable")][:12]
        np.testing.assert_array_equal(i[a, : len(order)], order)
        assert np.all(i[a, len(order) :] == -1) and np.all(np.isnan(s[a, len(order) :]))
        assert np.abs(s[a, : len(order)] - ref[a, order]).max(initial=0) <= 1e-5


def test_full_masks_equal_plain_cosine(rng) -> None:
    q, _, g, _ = data(rng)
    full_q = np.full(len(q), 15, np.uint64)
    full_g = np.full(len(g), 15, np.uint64)
    np.testing.assert_allclose(
        pf.masked_scores(q, g, full_q, full_g, BLOCKS, 1.0), pf.scores(q, g), atol=1e-5
    )


def test_rerank_equals_brute_force_on_the_shortlist(simd_level: str, rng) -> None:
    q, mq, g, mg = data(rng, m=5, n=200)
    cand = rng.integers(-1, 200, size=(5, 30))
    cand[:, 5] = cand[:, 4]  # duplicates are ignored
    s, i = pf.rerank(q, g, cand, 8)
    full = q.astype(np.float64) @ g.astype(np.float64).T
    for a in range(5):
        c = np.unique(cand[a][cand[a] >= 0])
        order = c[np.argsort(-full[a, c], kind="stable")][:8]
        np.testing.assert_array_equal(i[a, : len(order)], order)
        assert np.abs(s[a, : len(order)] - full[a, order]).max() <= 1e-5
    # masked re-ranking agrees with masked scores
    s2, i2 = pf.rerank(q, g, cand, 8, mq, mg, BLOCKS, 0.5)
    ref = ref_masked(q, mq, g, mg, BLOCKS, 0.5)
    for a in range(5):
        c = np.unique(cand[a][cand[a] >= 0])
        c = c[~np.isnan(ref[a, c])]
        order = c[np.argsort(-ref[a, c], kind="stable")][:8]
        np.testing.assert_array_equal(i2[a, : len(order)], order)


def test_rerank_rejects_out_of_range_candidates(rng) -> None:
    q, _, g, _ = data(rng)
    with pytest.raises(InputError, match="outside the gallery"):
        pf.rerank(q, g, np.full((len(q), 3), 60), 2)


def test_masked_bad_input(rng) -> None:
    q, mq, g, mg = data(rng)
    with pytest.raises(InputError, match="blocks must be"):
        pf.masked_topk(q, g, 3, mq, mg, [0, 50, 40, 97])
    with pytest.raises(InputError, match="blocks must be"):
        pf.masked_topk(q, g, 3, mq, mg, [0, 50, 96])
    with pytest.raises(DimensionError, match="one mask per row"):
        pf.masked_topk(q, g, 3, mq[:3], mg, BLOCKS)
    with pytest.raises(InputError, match="min_fraction"):
        pf.masked_topk(q, g, 3, mq, mg, BLOCKS, 1.5)
    bad = g.copy()
    bad[9, 3] = np.nan
    with pytest.raises(NonFiniteError, match="gallery row 9"):
        pf.masked_topk(q, bad, 3, mq, mg, BLOCKS)


def unpacked_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ua, ub = np.unpackbits(a, axis=1), np.unpackbits(b, axis=1)
    return (ua[:, None, :] != ub[None, :, :]).sum(-1)


@pytest.mark.parametrize("d", [7, 64, 97, 256, 512, 515, 1030])
def test_pack_signs_and_hamming_topk(simd_level: str, rng, d: int) -> None:
    x = rng.standard_normal((300, d)).astype(np.float32)
    center = rng.standard_normal(d).astype(np.float32) * 0.1
    codes = pf.pack_signs(x, center)
    assert codes.shape == (300, (d + 7) // 8)
    bits = np.unpackbits(codes, axis=1, bitorder="little")[:, :d]
    np.testing.assert_array_equal(bits, (x - center > 0).astype(np.uint8))
    dist, idx = pf.hamming_topk(codes[:9], codes, 15)
    ref = unpacked_hamming(codes[:9], codes)
    order = np.argsort(ref, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(dist, np.take_along_axis(ref, order, 1))
    assert np.all(idx[:, 0] == np.arange(9)) and np.all(dist[:, 0] == 0)


@pytest.mark.parametrize("d", [300, 512, 1030])
def test_two_plane_hamming_scan(simd_level: str, rng, d: int) -> None:
    """hamming_topk2 = the full-code scan when every row is admitted, and with a short admission
    rank its distances are still full-code distances of rows among the best on the first plane."""
    codes = pf.pack_signs(rng.standard_normal((700, d)).astype(np.float32))
    a, b = np.ascontiguousarray(codes[:, :32]), np.ascontiguousarray(codes[:, 32:])
    ref = unpacked_hamming(codes[:11], codes)
    dist, idx = pf.hamming_topk2(codes[:11], a, b, 20, scan=700)
    order = np.argsort(ref, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(dist, np.take_along_axis(ref, order, 1))
    # One thread: the admission rule replayed in Python (a row is admitted while its first-plane
    # distance is below the scan-th smallest admitted so far) gives the same answer.
    ref_a = unpacked_hamming(codes[:11, :32], a)
    threads = pf.get_num_threads()
    pf.set_num_threads(1)
    try:
        dist, idx = pf.hamming_topk2(codes[:11], a, b, 10, scan=40)
    finally:
        pf.set_num_threads(threads)
    for i in range(11):
        admitted: list[int] = []
        rows: list[int] = []
        for r in range(len(codes)):
            bound = sorted(admitted)[39] if len(admitted) >= 40 else 1 << 30
            if ref_a[i, r] < bound:
                admitted.append(int(ref_a[i, r]))
                rows.append(r)
        best = sorted(rows, key=lambda r: (ref[i, r], r))[:10]
        assert idx[i].tolist() == best
        assert dist[i].tolist() == [int(ref[i, r]) for r in best]
        assert len(rows) < len(codes)  # the admission rule did filter


def replay_two_plane(full: np.ndarray, first: np.ndarray, k: int, scan: int) -> list[list[int]]:
    """The two-plane admission rule for one part scanning every row in order: a row is admitted
    while its first-plane distance is below the scan-th smallest admitted so far; the k best
    admitted rows by (full distance, row)."""
    out = []
    for i in range(full.shape[0]):
        kept: list[int] = []  # max-heap (negated) of the scan smallest admitted distances
        rows: list[int] = []
        for r in range(full.shape[1]):
            v = int(first[i, r])
            if len(kept) < scan or v < -kept[0]:
                heapq.heappush(kept, -v)
                if len(kept) > scan:
                    heapq.heappop(kept)
                rows.append(r)
        out.append(sorted(rows, key=lambda r: (full[i, r], r))[:k])
    return out


@pytest.mark.parametrize("d", [512, 1030])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_two_plane_scan_batches(simd_level: str, rng, d: int, ties: bool, threads: int) -> None:
    """Batches of probes (8 or more per part: the AVX-512 scan then transposes each block of
    first-plane codes once and scores eight rows per register without lane shuffles) give the
    answer of the admission rule replayed in Python, on random codes and on near-ties (a few
    distinct codes with a few bits flipped: most distances tie and the lower row must win), with
    a row count that is not a multiple of 8 or of the scan's block."""
    n, m = 1003, 64
    x = rng.standard_normal((n, d)).astype(np.float32)
    if ties:
        x = x[rng.integers(0, 6, n)] + np.float32(0.02) * rng.standard_normal((n, d), np.float32)
    codes = pf.pack_signs(x)
    q = codes[rng.integers(0, n, m)].copy()
    q[::3] = pf.pack_signs(rng.standard_normal((len(q[::3]), d)).astype(np.float32))
    a, b = np.ascontiguousarray(codes[:, :32]), np.ascontiguousarray(codes[:, 32:])
    full, first = unpacked_hamming(q, codes), unpacked_hamming(q[:, :32], a)
    before = pf.get_num_threads()
    pf.set_num_threads(threads)
    try:
        dist, idx = pf.hamming_topk2(q, a, b, 10, scan=40)
        dist_all, idx_all = pf.hamming_topk2(q, a, b, 25, scan=n)
    finally:
        pf.set_num_threads(before)
    best = replay_two_plane(full, first, 10, 40)
    assert idx.tolist() == best
    np.testing.assert_array_equal(dist, np.take_along_axis(full, idx, 1))
    order = np.argsort(full, axis=1, kind="stable")[:, :25]  # every row admitted: exact top-25
    np.testing.assert_array_equal(idx_all, order)
    np.testing.assert_array_equal(dist_all, np.take_along_axis(full, order, 1))


def test_hamming_topk2_bad_input(rng) -> None:
    codes = pf.pack_signs(rng.standard_normal((50, 512)).astype(np.float32))
    a, b = np.ascontiguousarray(codes[:, :32]), np.ascontiguousarray(codes[:, 32:])
    with pytest.raises(DimensionError, match="32 \\+ 32"):
        pf.hamming_topk2(codes[:2, :40], a, b, 5, scan=10)
    with pytest.raises(InputError, match="k must be"):
        pf.hamming_topk2(codes[:2], a, b, 0, scan=10)
    with pytest.raises(DTypeError, match="uint8"):
        pf.hamming_topk2(codes[:2], a.astype(np.int16), b, 5, scan=10)
