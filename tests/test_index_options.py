"""Backend options and stored tuning: validated before they reach a backend (issue 12, defect 6)."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pyfacematch.errors import BackendOptionError, InputError, PyFaceMatchError
from pyfacematch.gallery import Gallery
from pyfacematch.index import BACKEND_OPTIONS, BACKENDS, BinaryBackend, FaissBackend, make_backend


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_bad_hnsw_degree_is_refused_without_harming_the_process():
    # Before: 0 aborted the process (FAISS assertion), 1 segfaulted, -1 allocated without bound.
    # Run in a child with capped memory so a regression fails this test instead of the suite.
    code = textwrap.dedent(
        """
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        import numpy as np
        from pyfacematch.errors import BackendOptionError
        from pyfacematch.gallery import Gallery
        x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
        for m in (0, 1, -1):
            try:
                g = Gallery(dim=16, backend="hnsw", backend_options={"hnsw_m": m}, tune_probes=50)
                g.enroll_many([f"id{i}" for i in range(300)], x)
                print(m, "accepted")
            except BackendOptionError as exc:
                print(m, "refused:", exc)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    lines = r.stdout.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["0", "1", "-1"]
    for ln in lines:
        assert "refused:" in ln and "'hnsw_m'" in ln and "[2, 256]" in ln and "'hnsw'" in ln, ln


# hnsw_m 0, 1 and -1 are tried in a child process above: before the fix they killed the process.
@pytest.mark.parametrize(
    ("backend", "option", "value", "allowed"),
    [
        ("hnsw", "hnsw_m", 257, "[2, 256]"),
        ("hnsw", "hnsw_m", 32.0, "an integer"),
        ("hnsw", "hnsw_m", True, "an integer"),
        ("hnsw", "hnsw_m", "32", "an integer"),
        ("hnsw", "ef_construction", 0, "[1, 8192]"),
        ("ivfpq", "pq_shortlist", 0, "[1, 65536]"),
        ("ivfpq", "pq_shortlist", 10**9, "[1, 65536]"),
        ("binary", "safety", float("nan"), "[1, 64]"),
        ("binary", "safety", float("inf"), "[1, 64]"),
        ("binary", "safety", 0.5, "[1, 64]"),
        ("binary", "safety", "2", "a finite number"),
        ("binary", "min_shortlist", 0, "[1, 65536]"),
        ("binary", "min_shortlist", -5, "[1, 65536]"),
        ("binary", "min_scan", 0, "[1, 1048576]"),
    ],
)
def test_out_of_range_option_names_backend_option_and_range(backend, option, value, allowed):
    with pytest.raises(BackendOptionError) as info:
        Gallery(dim=16, backend=backend, backend_options={option: value})
    err = info.value
    assert isinstance(err, PyFaceMatchError) and isinstance(err, ValueError)
    assert (err.backend, err.option) == (backend, option)
    msg = str(err)
    assert f"'{backend}'" in msg and f"'{option}'" in msg and allowed in msg and repr(value) in msg


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_option_is_refused_by_every_backend(backend):
    # Before: exact, flat and ivf ignored unknown options silently; binary raised a bare TypeError.
    with pytest.raises(BackendOptionError, match=f"backend '{backend}' has no option 'bogus'"):
        make_backend(backend, bogus=1)
    with pytest.raises(BackendOptionError) as info:
        Gallery(dim=16, backend=backend, backend_options={"bogus": 1})
    assert info.value.option == "bogus"


def test_unknown_option_message_lists_the_known_ones():
    with pytest.raises(BackendOptionError, match="did you mean 'hnsw_m'") as info:
        make_backend("hnsw", hnsw_n=16)
    assert "ef_construction (an integer in [1, 8192])" in str(info.value)
    with pytest.raises(BackendOptionError, match="it takes no options"):
        make_backend("flat", hnsw_m=16)  # an option of another backend


def test_valid_options_are_converted_and_used():
    b = make_backend("hnsw", hnsw_m=np.int64(8), ef_construction=40)
    assert isinstance(b, FaissBackend) and (b.hnsw_m, b.ef_construction) == (8, 40)
    assert type(b.hnsw_m) is int
    bb = make_backend("binary", safety=np.float32(1.5), min_shortlist=4)
    assert isinstance(bb, BinaryBackend) and (bb.safety, bb.min_shortlist, bb.min_scan) == (
        1.5,
        4,
        64,
    )
    rng = np.random.default_rng(2)
    g = Gallery(dim=16, backend="hnsw", backend_options={"hnsw_m": 6}, tune_probes=50)
    g.enroll_many([f"id{i}" for i in range(300)], unit(rng, 300, 16))
    assert g.index_info()["M"] == 6
    # every declared default is a valid value of its own option
    for name, spec in BACKEND_OPTIONS.items():
        for o in spec:
            assert o.check(name, o.default) == o.default


def test_unknown_faiss_kind_is_typed():
    with pytest.raises(InputError, match="unknown FAISS backend 'annoy'"):
        FaissBackend("annoy")


@pytest.mark.parametrize(
    "bad",
    [
        {"depth": "abc", "tuned_size": 10},
        {"depth": -3, "tuned_size": 10},
        {"depth": 8, "tuned_size": 10, "measured_recall": float("nan")},
        {"depth": 8, "tuned_size": 10, "scan_depth": 0},
        {"depth": 8, "tuned_size": 10, "center": [float("nan")] * 16},
        {"depth": 8, "tuned_size": 10, "center": [1e300] * 16},
        {"depth": 8, "tuned_size": 10, "center": "zero"},
        ["not", "an", "object"],
    ],
)
def test_malformed_stored_tuning_is_ignored_not_trusted(bad):
    b = BinaryBackend()
    b.load_params(bad)
    assert b.tuned_size == 0 and b.center is None and b.depth == 64 and b.scan_depth == 256
    f = FaissBackend("ivfpq")
    f.load_params({"depth": 4, "tuned_size": 10, "pq_shortlist": -1})
    assert f.tuned_size == 0 and f.pq_shortlist == 64


def test_good_stored_tuning_is_restored():
    b = BinaryBackend()
    b.load_params({"depth": 8, "tuned_size": 10, "scan_depth": 128, "center": [0.5] * 4})
    assert (b.depth, b.tuned_size, b.scan_depth) == (8, 10, 128)
    np.testing.assert_array_equal(b.center, np.full(4, 0.5, np.float32))


def test_nan_code_centre_in_the_file_is_re_derived(tmp_path):
    # Before: a NaN centre stored with the binary tuning was packed into every code on reopen
    # (all bits 0, every distance 0), so the shortlist was the first rows whatever the probe.
    rng = np.random.default_rng(4)
    n, d = 1000, 64
    t = unit(rng, n, d)
    p = tmp_path / "g.db"
    with Gallery.open(p, dim=d, backend="binary", tune_probes=200, tune_similarity=0.8) as g:
        g.enroll_many([f"id{i}" for i in range(n)], t)
        depth = g.index_info()["shortlist"]
    assert depth < n // 2  # else the first rows would hold every mate below
    con = sqlite3.connect(p)
    (raw,) = con.execute("SELECT value FROM meta WHERE key='tuning:binary'").fetchone()
    params = json.loads(raw)
    params["center"] = [math.nan] * d
    with con:
        con.execute("UPDATE meta SET value=? WHERE key='tuning:binary'", (json.dumps(params),))
    con.close()
    mates = np.arange(n // 2, n)
    noise = rng.standard_normal((mates.size, d)).astype(np.float32) * 0.3 / np.sqrt(d)
    with Gallery.open(p) as g2:
        res = g2.identify_arrays(t[mates] + noise, k=1)
        top = np.array([int(x[2:]) for x in res.identities[:, 0]])
        assert np.mean(top == mates) >= 0.99
        g2.verify_integrity()
