"""``pyfacematch serve`` operations: readiness during a slow gallery open, per-purpose metrics.

The real server in a subprocess; the slow open is real too: another SQLite connection holds an
exclusive lock on the gallery file (as a backup or a migration tool would), so the server's open
waits in SQLite's busy handler until the lock is released.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from test_serve import _free_port, _keys_toml, _start, _stop  # noqa: E402

from pyfacematch.gallery import Gallery  # noqa: E402
from pyfacematch.serve.auth import new_api_key  # noqa: E402

DIM = 16


def test_readyz_503_while_the_gallery_opens_slowly(tmp_path):
    path = tmp_path / "slow.db"
    t = np.random.default_rng(3).standard_normal((20, DIM)).astype(np.float32)
    with Gallery.open(path, dim=DIM, backend="exact") as g:
        g.enroll_many([f"p{i}" for i in range(20)], t)
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the server's open now waits (SQLite busy timeout: 5 s)
    port = _free_port()
    log = tmp_path / "s.log"
    cmd = [sys.executable, "-m", "pyfacematch", "serve", "--port", str(port),
           "--gallery", f"shop={path}"]  # fmt: skip
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    released = False
    try:
        t0 = time.monotonic()
        while True:  # the server listens before its galleries are open
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() - t0 < 30, "server did not listen"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        r = httpx.get(url + "/readyz")
        assert r.status_code == 503, r.text
        assert r.json() == {
            "status": "starting",
            "galleries": {"shop": {"state": "opening", "tuned": False}},
        }
        r = httpx.post(url + "/v1/galleries/shop/identify", json={"probes": [t[0].tolist()]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["type"] == "urn:pyfacematch:problem:gallery-starting"
        lock.execute("COMMIT")
        released = True
        for _ in range(100):
            r = httpx.get(url + "/readyz")
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.status_code == 200 and r.json()["galleries"]["shop"]["state"] == "open"
        r = httpx.post(url + "/v1/galleries/shop/identify", json={"probes": [t[5].tolist()]})
        assert r.json()["results"][0]["candidates"][0]["identity"] == "p5"
    finally:
        if not released:
            lock.execute("COMMIT")
        lock.close()
        assert _stop(proc) in (0, -signal.SIGTERM)
    text = log.read_text()
    assert "Traceback" not in text  # a 503 while starting is not logged as a fault


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(1))))
            out[labels] = float(m.group(2))
    return out


def test_metrics_per_purpose(tmp_path):
    path = tmp_path / "shop.db"
    t = np.random.default_rng(4).standard_normal((10, DIM)).astype(np.float32)
    with Gallery.open(path, dim=DIM, backend="exact") as g:
        g.enroll_many([f"p{i}" for i in range(10)], t, purpose=["access", "payment"])
    url, proc, _ = _start(tmp_path, path, None, [])
    u = url + "/v1/galleries/shop"
    try:
        sent = {("identify", "access", "200"): 3, ("identify", "payment", "200"): 2,
                ("identify", "default", "200"): 1, ("verify", "payment", "200"): 2,
                ("verify", "access", "404"): 1}  # fmt: skip
        for _ in range(3):
            httpx.post(u + "/identify", json={"probes": [t[0].tolist()], "purpose": "access"})
        for _ in range(2):
            httpx.post(u + "/identify", json={"probes": [t[1].tolist()], "purpose": "payment"})
            r = httpx.post(
                u + "/verify", json={"identity": "p2", "probe": t[2].tolist(), "purpose": "payment"}
            )
            assert r.status_code == 200
        httpx.post(u + "/identify", json={"probes": [t[0].tolist()]})
        r = httpx.post(
            u + "/verify", json={"identity": "nobody", "probe": t[2].tolist(), "purpose": "access"}
        )
        assert r.status_code == 404
        r = httpx.post(
            u + "/identify", json={"probes": [t[0].tolist()], "purpose": "Not A Purpose!"}
        )
        assert r.status_code == 422
        # an unknown gallery makes no label
        httpx.post(url + "/v1/galleries/nope/identify", json={"probes": [t[0].tolist()]})
        m = httpx.get(url + "/metrics").text
    finally:
        _stop(proc)
    got = _samples(m, "pfm_purpose_requests_total")
    want = {
        (("endpoint", ep), ("gallery", "shop"), ("purpose", p), ("status", st)): float(n)
        for (ep, p, st), n in sent.items()
    }
    want[
        (("endpoint", "identify"), ("gallery", "shop"), ("purpose", "invalid"), ("status", "422"))
    ] = 1.0
    assert got == want, got
    counts = _samples(m, "pfm_purpose_request_seconds_count")
    assert counts[(("endpoint", "identify"), ("gallery", "shop"), ("purpose", "access"))] == 3.0


def test_calibrate_is_recorded_under_the_key(tmp_path):
    """Every write of a request is audited under its key id, calibrations included."""
    path = tmp_path / "shop.db"
    t = np.random.default_rng(5).standard_normal((10, DIM)).astype(np.float32)
    with Gallery.open(path, dim=DIM, backend="exact", actor="setup") as g:
        g.enroll_many([f"p{i}" for i in range(10)], t)
    tok, h = new_api_key()
    keys = tmp_path / "keys.toml"
    keys.write_text(_keys_toml({"cal-1": (h, {"shop": ["admin"]}, 0.0, False)}))
    url, proc, _ = _start(tmp_path, path, keys, [])
    try:
        scores = np.random.default_rng(6).uniform(-0.3, 0.3, 1000).tolist()
        r = httpx.post(
            url + "/v1/galleries/shop/calibrate",
            json={"fmr": 0.01, "impostor_scores": scores},
            headers={"Authorization": f"Bearer {tok}"},
        )
        assert r.status_code == 200, r.text
    finally:
        _stop(proc)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT actor, action FROM audit").fetchall()
    assert [a for a, act in rows if act == "calibrate"] == ["cal-1"], rows
