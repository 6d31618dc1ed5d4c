"""Compact stores in the gallery: the exact backend scanning int8 / bf16 (``store``) and the binary
backend pruning its shortlist on them (``rerank_store``) give the float32 answer."""

from __future__ import annotations

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.errors import BackendOptionError


def _data(rng: np.random.Generator, n: int = 3000, d: int = 128) -> tuple[list[str], np.ndarray]:
    return [f"id{j}" for j in range(n)], pf.normalize(rng.standard_normal((n, d)))


def _probes(rng: np.random.Generator, x: np.ndarray, m: int = 40) -> np.ndarray:
    rows = rng.choice(x.shape[0], m, replace=False)
    return pf.normalize(x[rows] + 0.05 * rng.standard_normal((m, x.shape[1])).astype(np.float32))


@pytest.mark.parametrize("store", ["int8", "bf16"])
def test_exact_backend_with_compact_store_answers_as_float32(
    store: str, rng: np.random.Generator
) -> None:
    ids, x = _data(rng)
    q = _probes(rng, x)
    ref = pf.Gallery(dim=x.shape[1], backend="exact")
    g = pf.Gallery(dim=x.shape[1], backend="exact", backend_options={"store": store})
    for gal in (ref, g):
        gal.enroll_many(ids, x)
    a, b = ref.identify_arrays(q, k=10), g.identify_arrays(q, k=10)
    np.testing.assert_array_equal(a.identities, b.identities)
    np.testing.assert_allclose(a.scores, b.scores, atol=2e-6)
    assert g.index_info()["store"] == store
    # removal: never returned again, and the compact copy follows the moved rows
    for j in range(0, 3000, 7):
        g.remove(ids[j])
        ref.remove(ids[j])
    a, b = ref.identify_arrays(q, k=10), g.identify_arrays(q, k=10)
    np.testing.assert_array_equal(a.identities, b.identities)
    assert not any(i in {ids[j] for j in range(0, 3000, 7)} for i in b.identities.ravel())
    g.close()
    ref.close()


@pytest.mark.parametrize("store", ["int8", "bf16"])
def test_binary_backend_rerank_store_is_byte_identical(
    store: str, rng: np.random.Generator
) -> None:
    ids, x = _data(rng, n=6000)
    q = _probes(rng, x)
    ref = pf.Gallery(dim=x.shape[1], backend="binary")
    g = pf.Gallery(dim=x.shape[1], backend="binary", backend_options={"rerank_store": store})
    for gal in (ref, g):
        gal.enroll_many(ids, x)
    a, b = ref.identify_arrays(q, k=5), g.identify_arrays(q, k=5)
    assert g.index_info()["search"] == "shortlist+exact-rerank"
    np.testing.assert_array_equal(a.identities, b.identities)
    np.testing.assert_array_equal(a.scores, b.scores)  # the same float32 re-score
    g.close()
    ref.close()


def test_store_option_is_checked() -> None:
    with pytest.raises(BackendOptionError, match="one of"):
        pf.Gallery(dim=8, backend="exact", backend_options={"store": "int4"})
    with pytest.raises(BackendOptionError, match="rerank_store"):
        pf.Gallery(dim=8, backend="binary", backend_options={"rerank_store": 8})
