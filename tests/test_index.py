"""Every search backend against a float64 brute-force search."""

from __future__ import annotations

import numpy as np
import pytest

from pyfacematch.errors import IndexTrainingError, InputError
from pyfacematch.gallery import Gallery
from pyfacematch.index import FaissBackend, TemplateMatrix, make_backend


def synth(n: int, d: int, seed: int, probes_per: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Identity templates as in the issue: normalise(centre + 0.734 g / sqrt(d))."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n, d))
    c /= np.linalg.norm(c, axis=1, keepdims=True)

    def tmpl() -> np.ndarray:
        x = c + 0.734 * rng.standard_normal((n, d)) / np.sqrt(d)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return tmpl(), tmpl()


def brute(probes: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    p = probes.astype(np.float64)
    g = gallery.astype(np.float64)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    s = p @ g.T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, 1), idx


@pytest.mark.parametrize(
    ("backend", "n", "d"),
    [
        ("exact", 1500, 128),
        ("binary", 3000, 128),
        ("binary", 3000, 512),  # two-stage code scan
        ("flat", 1500, 128),
        ("hnsw", 3000, 128),
        ("ivf", 3000, 128),
        ("ivfpq", 10000, 64),
    ],
)
def test_backend_against_brute_force(backend, n, d):
    gal, probes = synth(n, d, seed=7)
    probes = probes[:300]
    g = Gallery(dim=d, backend=backend, tune_probes=400)
    g.enroll_many([f"id{i}" for i in range(n)], gal)
    res = g.identify_arrays(probes, k=5)
    ref_s, ref_i = brute(probes, gal, 5)
    got_top = np.array([int(x[2:]) for x in res.identities[:, 0]])
    agree = np.mean(got_top == ref_i[:, 0])
    # every returned score is the exact cosine of the returned identity (re-ranked exactly)
    for i in range(len(probes)):
        for name, sc in zip(res.identities[i], res.scores[i]):
            j = int(name[2:])
            exact = float(gal[j].astype(np.float64) @ probes[i] / np.linalg.norm(probes[i]))
            assert abs(sc - exact) < 1e-4
    info = g.index_info()
    if backend in ("exact", "flat"):
        assert agree == 1.0
        np.testing.assert_allclose(res.scores, ref_s, atol=1e-5)
        assert [[int(x[2:]) for x in row] for row in res.identities] == ref_i.tolist()
    else:
        assert agree >= 0.99, (backend, agree, info)
        assert info["search"] == "shortlist+exact-rerank"
        assert info["measured_recall_at_1"] >= 0.99
        assert info["tuned_at_size"] == n


def test_ivf_without_enough_data_falls_back_and_says_so():
    gal, probes = synth(100, 32, seed=3)
    g = Gallery(dim=32, backend="ivf")
    g.enroll_many([f"id{i}" for i in range(100)], gal)
    info = g.index_info()
    assert info["search"] == "exact" and "624" in info["fallback"]
    res = g.identify_arrays(probes, k=1)
    _, ref_i = brute(probes, gal, 1)
    assert [int(x[2:]) for x in res.identities[:, 0]] == ref_i[:, 0].tolist()
    with pytest.raises(IndexTrainingError, match="624"):
        g.rebuild_index()
    assert g.index_info()["search"] == "exact"  # still answering
    m = TemplateMatrix(32, masked=False)
    m.append(gal, np.arange(100), np.arange(100), None)
    with pytest.raises(IndexTrainingError, match="624"):
        FaissBackend("ivf").train(m, strict=True)
    with pytest.raises(IndexTrainingError, match="9984"):
        FaissBackend("ivfpq").train(m, strict=True)


def test_hnsw_tombstones_never_returned_and_compacted():
    n, d = 1200, 64
    gal, _ = synth(n, d, seed=5)
    g = Gallery(dim=d, backend="hnsw", tune_probes=200)
    g.enroll_many([f"id{i}" for i in range(n)], gal)
    removed = list(range(0, 200))
    for i in removed:
        g.remove(f"id{i}")
    info = g.index_info()
    assert 0 < info["tombstones"] <= 0.2 * n  # tombstoned, not yet compacted
    res = g.identify_arrays(gal[removed], k=5)
    returned = {x for row in res.identities for x in row if x is not None}
    assert returned.isdisjoint({f"id{i}" for i in removed})
    g.verify_integrity()
    for i in range(200, 320):  # past 20% of the graph: rebuilt without tombstones
        g.remove(f"id{i}")
    assert g.index_info()["tombstones"] < 0.2 * g.n_templates
    res = g.identify_arrays(gal[320:400], k=1)
    assert [int(x[2:]) for x in res.identities[:, 0]] == list(range(320, 400))


def test_template_matrix_swap_with_last_matches_model():
    rng = np.random.default_rng(11)
    m = TemplateMatrix(8, masked=True, capacity=2)
    model: dict[int, np.ndarray] = {}
    next_tid = 1
    for _ in range(300):
        if model and rng.random() < 0.4:
            victims = rng.choice(sorted(model), size=min(len(model), 3), replace=False)
            m.remove_tids(victims)
            for v in victims:
                del model[int(v)]
        else:
            k = int(rng.integers(1, 4))
            x = rng.standard_normal((k, 8)).astype(np.float32)
            tids = np.arange(next_tid, next_tid + k)
            next_tid += k
            m.append(x, tids, tids, tids.astype(np.uint64))
            for t, row in zip(tids, x):
                model[int(t)] = row
        assert m.n == len(model)
        for row in range(m.n):
            t = int(m.tids[row])
            np.testing.assert_array_equal(m.data[row], model[t])
            assert m.tid_to_row[t] == row and m.masks[row] == t and m.owner[row] == t
        assert not m.data[m.n :].any()  # erased rows do not linger in spare capacity


def test_unknown_backend():
    with pytest.raises(InputError, match="binary"):
        make_backend("annoy")
    with pytest.raises(InputError):
        Gallery(dim=4, backend="annoy")
