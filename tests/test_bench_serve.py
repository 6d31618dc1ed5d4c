"""The service benchmark's load generators against a real server (small gallery, ~1 s each).

wrk (skipped where it is not installed: ``apt-get install wrk``) and the asyncio fallback must
agree on what they count: answered requests, 4xx answers as errors, ordered percentiles, and the
server's batch sizes read from its metrics.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from pyfacematch.bench import serve as bench  # noqa: E402
from pyfacematch.bench.loadgen import have_wrk  # noqa: E402
from pyfacematch.bench.util import unit_rows  # noqa: E402

N, DIM = 300, 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = Path(tmp_path_factory.mktemp("bench")) / "g.db"
    bench.build_gallery(path, N, DIM, log=lambda *a: None)
    url, proc = bench._serve(path, True, ["--log-level", "warning"])
    yield url, proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


@pytest.mark.parametrize(
    "generator",
    [
        pytest.param(
            "wrk", marks=pytest.mark.skipif(not have_wrk(), reason="wrk is not installed")
        ),
        "async",
    ],
)
def test_load_generator_counts_answers_errors_and_batches(server, generator):  # type: ignore[no-untyped-def]
    url, proc = server
    probes = unit_rows(16, DIM, seed=5)
    ids = [f"id{i}" for i in range(16)]
    r = bench.run_load(url, proc.pid, "identify", "binary", probes, ids, 8, 1.0, generator)
    assert r["generator"] == ("wrk" if generator == "wrk" else "asyncio")
    assert r["requests"] > 10 and r["errors"] == 0
    assert 0 < r["p50"] <= r["p90"] <= r["p99"] <= r["max"]
    assert r["rows_per_call"] >= 1.0 and r["server_cpu_ms_per_request"] > 0
    assert 0 <= r["client_cpu"] < 2.5
    assert 20 < r["server_peak_mib"] < 64 * 1024  # the server's VmHWM, MiB
    j = bench.run_load(url, proc.pid, "identify", "json", probes, ids, 8, 1.0, generator)
    assert j["requests"] > 10 and j["errors"] == 0
    # verify against identities that do not exist: every answer is a 404, counted as an error
    bad = [f"nobody{i}" for i in range(16)]
    v = bench.run_load(url, proc.pid, "verify", "binary", probes, bad, 8, 1.0, generator)
    assert v["requests"] > 10 and v["errors"] == v["requests"]
    assert np.isfinite(v["p99"])
