"""pytest-benchmark micro-benchmarks of the hot calls, each next to its baseline in one group.

Outside the normal test run (the project's ``testpaths`` is ``tests``); run by naming the file::

    pytest bench/test_micro.py                       # all groups
    pytest bench/test_micro.py -k topk --benchmark-columns=median,ops
    pytest bench/test_micro.py --benchmark-json out.json

Groups: cosine (pyfacematch vs numpy.dot), topk-b1 / topk-b64 over 100,000 × 512 (vs numpy
matmul + argpartition and FAISS IndexFlatIP), masked_topk (vs plain topk on the same data),
rerank (256 candidates per probe), hamming_topk (1-bit codes vs FAISS IndexBinaryFlat),
KeyModel.encode (10,000 dense200 faces vs the numpy pipeline on 1,000), Gallery.identify
(binary backend, batch 1 and 64, vs the exact backend).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.bench.scoring import numpy_topk
from pyfacematch.bench.synthdata import SyntheticIdentities
from pyfacematch.bench.util import unit_rows

N, D, K = 100_000, 512, 10

pytest.importorskip("pytest_benchmark")


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    return unit_rows(N, D, seed=1)


@pytest.fixture(scope="module")
def probes() -> np.ndarray:
    return unit_rows(64, D, seed=2)


@pytest.fixture(scope="module")
def faiss_flat(gallery: np.ndarray) -> Any:
    faiss = pytest.importorskip("faiss")
    idx = faiss.IndexFlatIP(D)
    idx.add(gallery)
    return idx


# ------------------------------------------------------------------------ 1:1


@pytest.mark.benchmark(group="cosine d=512")
def test_cosine_pyfacematch(benchmark: Any) -> None:
    a, b = unit_rows(2, D, seed=3)
    r = benchmark(pf.cosine, a, b)
    assert abs(r - float(np.dot(a.astype(np.float64), b))) < 1e-5


@pytest.mark.benchmark(group="cosine d=512")
def test_cosine_numpy_dot(benchmark: Any) -> None:
    a, b = unit_rows(2, D, seed=3)
    benchmark(np.dot, a, b)


# ------------------------------------------------------------------------ 1:N top-k


@pytest.mark.parametrize("batch", [1, 64])
def test_topk_pyfacematch(
    benchmark: Any, gallery: np.ndarray, probes: np.ndarray, batch: int
) -> None:
    benchmark.group = f"topk N={N} d={D} batch={batch}"
    q = np.ascontiguousarray(probes[:batch])
    _, i = benchmark(pf.topk, q, gallery, K)
    np.testing.assert_array_equal(i[:, 0], numpy_topk(q, gallery, K)[1][:, 0])


@pytest.mark.parametrize("batch", [1, 64])
def test_topk_numpy(benchmark: Any, gallery: np.ndarray, probes: np.ndarray, batch: int) -> None:
    benchmark.group = f"topk N={N} d={D} batch={batch}"
    benchmark(numpy_topk, np.ascontiguousarray(probes[:batch]), gallery, K)


@pytest.mark.parametrize("batch", [1, 64])
def test_topk_faiss(benchmark: Any, faiss_flat: Any, probes: np.ndarray, batch: int) -> None:
    benchmark.group = f"topk N={N} d={D} batch={batch}"
    benchmark(faiss_flat.search, np.ascontiguousarray(probes[:batch]), K)


# ------------------------------------------------------------------------ masked, rerank, codes

BLOCKS = np.array([0, 64, 128, 192, 256, 320, 384, 448, 512], np.int64)


@pytest.fixture(scope="module")
def masks() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    full = (1 << 8) - 1
    gm = np.where(rng.random(N) < 0.3, full & ~np.uint64(0b11110000), full).astype(np.uint64)
    pm = np.where(rng.random(64) < 0.5, full & ~np.uint64(0b00001111), full).astype(np.uint64)
    return pm, gm


@pytest.mark.benchmark(group=f"masked_topk N={N} d={D} batch=64")
def test_masked_topk(benchmark: Any, gallery: np.ndarray, probes: np.ndarray, masks: Any) -> None:
    pm, gm = masks
    s, _ = benchmark(pf.masked_topk, probes, gallery, K, pm, gm, BLOCKS)
    assert np.isfinite(s[:, 0]).all()


@pytest.mark.benchmark(group=f"masked_topk N={N} d={D} batch=64")
def test_masked_topk_baseline_plain_topk(
    benchmark: Any, gallery: np.ndarray, probes: np.ndarray
) -> None:
    benchmark(pf.topk, probes, gallery, K)


@pytest.mark.benchmark(group="rerank 64 probes x 256 candidates d=512")
def test_rerank(benchmark: Any, gallery: np.ndarray, probes: np.ndarray) -> None:
    cand = np.random.default_rng(5).integers(0, N, (64, 256)).astype(np.int64)
    s, i = benchmark(pf.rerank, probes, gallery, cand, K)
    ref = np.take_along_axis(
        cand, np.argmax(np.einsum("md,mcd->mc", probes, gallery[cand]), 1)[:, None], 1
    )
    np.testing.assert_array_equal(i[:, 0], ref[:, 0])


@pytest.mark.benchmark(group="rerank 64 probes x 256 candidates d=512")
def test_rerank_numpy(benchmark: Any, gallery: np.ndarray, probes: np.ndarray) -> None:
    cand = np.random.default_rng(5).integers(0, N, (64, 256)).astype(np.int64)

    def run() -> np.ndarray:
        sc = np.einsum("md,mcd->mc", probes, gallery[cand])
        part = np.argpartition(-sc, K - 1, axis=1)[:, :K]
        return np.take_along_axis(cand, part, 1)

    benchmark(run)


@pytest.fixture(scope="module")
def codes(gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    center = gallery.mean(0)
    return pf.pack_signs(gallery, center=center), center


@pytest.mark.benchmark(group=f"hamming_topk N={N} 512 bits batch=64 k=32")
def test_hamming_topk(benchmark: Any, codes: Any, probes: np.ndarray) -> None:
    gc, center = codes
    pc = pf.pack_signs(probes, center=center)
    dist, _ = benchmark(pf.hamming_topk, pc, gc, 32)
    assert (np.diff(dist, axis=1) >= 0).all()


@pytest.mark.benchmark(group=f"hamming_topk N={N} 512 bits batch=64 k=32")
def test_hamming_faiss_binary_flat(benchmark: Any, codes: Any, probes: np.ndarray) -> None:
    faiss = pytest.importorskip("faiss")
    gc, center = codes
    idx = faiss.IndexBinaryFlat(gc.shape[1] * 8)
    idx.add(gc)
    benchmark(idx.search, pf.pack_signs(probes, center=center), 32)


# ------------------------------------------------------------------------ keys


@pytest.fixture(scope="module")
def key_data() -> tuple[Any, Any]:
    from pyfacematch.bench.keys import fit_model

    model, syn, _ = fit_model(100, 1100)
    faces = syn.sample(np.arange(10_000) % 1000, seed=1, dims=2, occluder="random")
    return model, faces


@pytest.mark.benchmark(group="KeyModel.encode dense200 2-D (per call; see the face counts)")
def test_keymodel_encode_10000_faces(benchmark: Any, key_data: Any) -> None:
    model, f = key_data
    keys, _ = benchmark(model.encode, f.landmarks, f.visibility, on_error="flag")
    assert keys.shape == (10_000, model.dim)


@pytest.mark.benchmark(group="KeyModel.encode dense200 2-D (per call; see the face counts)")
def test_numpy_encode_1000_faces(benchmark: Any, key_data: Any) -> None:
    from pyfacematch.bench.keys import numpy_encode

    model, f = key_data
    x, v = f.landmarks[:1000], f.visibility[:1000]
    k, _, st = model.encode(x, v, on_error="flag", return_status=True)
    ok = st == 0
    ref = benchmark(numpy_encode, model, x[ok], v[ok])
    np.testing.assert_allclose(ref, k[ok], atol=1e-4)


# ------------------------------------------------------------------------ Gallery.identify


@pytest.fixture(scope="module")
def galleries() -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    syn = SyntheticIdentities(20_000, D, seed=6)
    g = syn.gallery()
    names = [f"id{i}" for i in range(len(g))]
    out = {}
    for backend in ("binary", "exact"):
        gal = pf.Gallery(dim=D, backend=backend, tune_probes=300)
        gal.enroll_many(names, g)
        out[backend] = gal
    p, _ = syn.mated_probes(64, seed=1)
    yield out, p
    for gal in out.values():
        gal.close()


@pytest.mark.parametrize("backend", ["binary", "exact"])
@pytest.mark.parametrize("batch", [1, 64])
def test_gallery_identify(benchmark: Any, galleries: Any, backend: str, batch: int) -> None:
    gals, p = galleries
    benchmark.group = f"Gallery.identify N=20000 d={D} batch={batch}"
    res = benchmark(gals[backend].identify, p[:batch], 1)
    assert len(res) == batch
