"""``pyfacematch serve``: the real server in a subprocess, talked to over HTTP.

References are independent of the service: a read-only in-process :class:`Gallery` on the same
file (same ids, order, scores), float64 numpy cosines, the keys and limits written here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from pyfacematch.client import Client, ServiceError, npy_bytes  # noqa: E402
from pyfacematch.errors import (  # noqa: E402
    DimensionError,
    DuplicateIdentityError,
    NonFiniteError,
    UnknownIdentityError,
)
from pyfacematch.gallery import Gallery  # noqa: E402
from pyfacematch.serve.auth import hash_token, new_api_key  # noqa: E402

DIM = 32
N = 300
OCTET = {"Content-Type": "application/octet-stream"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    path: Path
    keys_path: Path
    tokens: dict[str, str]
    log: Path

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def _keys_toml(keys: dict[str, tuple[str, dict[str, list[str]], float, bool]]) -> str:
    out = []
    for kid, (h, scopes, rate, revoked) in keys.items():
        sc = ", ".join(f'"{g}" = {json.dumps(s)}' for g, s in scopes.items())
        out.append(
            f'[[keys]]\nid = "{kid}"\nsha256 = "{h}"\nscopes = {{ {sc} }}\n'
            f"rate = {rate}\nburst = 2\nrevoked = {str(revoked).lower()}\n"
        )
    return "\n".join(out)


def _start(
    tmp: Path,
    gallery: Path,
    keys: Path | None,
    extra: list[str],
    config: Path | None = None,
    ca: Path | None = None,
) -> tuple[str, subprocess.Popen[bytes], Path]:
    port = _free_port()
    log = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "pyfacematch", "serve", "--port", str(port)]
    cmd += ["--gallery", f"shop={gallery}"] if gallery is not None else []
    cmd += ["--keys", str(keys)] if keys is not None else []
    cmd += ["--config", str(config)] if config is not None else []
    with log.open("wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd + extra, stdout=subprocess.DEVNULL, stderr=err)
    url = f"{'http' if ca is None else 'https'}://127.0.0.1:{port}"
    verify: bool | ssl.SSLContext = True if ca is None else ssl.create_default_context(cafile=ca)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 30:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/readyz", timeout=1, verify=verify).status_code == 200:
                    return url, proc, log
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready in 30 s")
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(2026)
    ids = [f"p{i:04d}" for i in range(N)]
    return ids, rng.standard_normal((N, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    path = tmp / "shop.db"
    ids, t = data
    with Gallery.open(path, dim=DIM, backend="exact") as g:
        g.enroll_many(ids, t)
    tokens: dict[str, str] = {}
    spec: dict[str, tuple[str, dict[str, list[str]], float, bool]] = {}
    for kid, scopes, rate, revoked in [
        ("admin", {"*": ["admin"]}, 0.0, False),
        ("reader", {"shop": ["identify", "verify"]}, 0.0, False),
        ("other", {"elsewhere": ["identify"]}, 0.0, False),
        ("old", {"*": ["admin"]}, 0.0, True),
        ("slow", {"shop": ["identify"]}, 0.5, False),
        ("live", {"shop": ["identify"]}, 0.0, False),
    ]:
        tok, h = new_api_key()
        tokens[kid] = tok
        spec[kid] = (h, scopes, rate, revoked)
    keys = tmp / "keys.toml"
    keys.write_text(_keys_toml(spec))
    # a configuration file equivalent to flags: relative paths are relative to it
    cfg = tmp / "serve.toml"
    cfg.write_text('keys = "keys.toml"\nmax_wait_ms = 20.0\nmax_body_bytes = 65536\n')
    url, proc, log = _start(tmp, path, None, [], config=cfg)
    try:
        yield Server(url, proc, path, keys, tokens, log)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def ref(server: Server) -> Iterator[Gallery]:
    g = Gallery.open(server.path, read_only=True)  # no lock; follows the server's writes
    yield g
    g.close()


def _cands(res: dict) -> list[list[tuple[str, float]]]:
    return [[(c["identity"], c["score"]) for c in r["candidates"]] for r in res["results"]]


def _ref_cands(g: Gallery, probes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    return [[(c.identity, c.score) for c in r.candidates] for r in g.identify(probes, k=k)]


# ------------------------------------------------------------------ endpoints vs Gallery
def test_identify_json_binary_npy_match_gallery(server, ref, data):
    ids, t = data
    rng = np.random.default_rng(1)
    probes = (t[[3, 77, 150]] + 0.3 * rng.standard_normal((3, DIM))).astype(np.float32)
    u = server.url + "/v1/galleries/shop/identify"
    want = _ref_cands(ref, probes, 5)
    r1 = httpx.post(u, json={"probes": probes.tolist(), "k": 5}, headers=server.h("reader"))
    r2 = httpx.post(
        u + "?k=5", content=probes.astype("<f4").tobytes(), headers={**OCTET, **server.h("reader")}
    )
    r3 = httpx.post(
        u + "?k=5",
        content=npy_bytes(probes),
        headers={"Content-Type": "application/x-npy", **server.h("reader")},
    )
    for r in (r1, r2, r3):
        assert r.status_code == 200, r.text
        assert _cands(r.json()) == want  # same ids, order and (float32) scores
    # independent reference: float64 cosine brute force gives the same top ids
    a = probes.astype(np.float64) / np.linalg.norm(probes, axis=1, keepdims=True)
    b = t.astype(np.float64) / np.linalg.norm(t, axis=1, keepdims=True)
    top = np.argsort(-(a @ b.T), axis=1)[:, :5]
    assert [[c[0] for c in row] for row in want] == [[ids[j] for j in row] for row in top]
    got = np.array([[c[1] for c in row] for row in _cands(r1.json())])
    np.testing.assert_allclose(got, np.take_along_axis(a @ b.T, top, 1), atol=1e-5)


def test_verify_matches_gallery_and_unknown_identity(server, ref, data):
    ids, t = data
    u = server.url + "/v1/galleries/shop/verify"
    p = t[10] + 0.1
    r = httpx.post(u, json={"identity": ids[10], "probe": p.tolist()}, headers=server.h("reader"))
    assert r.status_code == 200, r.text
    want = ref.verify(ids[10], p)
    assert r.json()["identity"] == ids[10] and r.json()["score"] == want.score
    r = httpx.post(
        u + f"?identity={ids[11]}",
        content=p.astype("<f4").tobytes(),
        headers={**OCTET, **server.h("reader")},
    )
    assert r.json()["score"] == ref.verify(ids[11], p).score
    r = httpx.post(u, json={"identity": "nobody", "probe": p.tolist()}, headers=server.h("reader"))
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:pyfacematch:problem:unknown-identity"


def test_enroll_remove_info_calibrate(server, ref):
    rng = np.random.default_rng(3)
    tm = rng.standard_normal((2, DIM)).astype(np.float32)
    g = server.url + "/v1/galleries/shop"
    r = httpx.post(
        g + "/enroll",
        json={"identity": "newbie", "templates": tm.tolist(), "metadata": {"shop": 7}},
        headers=server.h("admin"),
    )
    assert r.status_code == 201, r.text
    assert "newbie" in ref and np.allclose(
        ref.templates("newbie"), tm / np.linalg.norm(tm, axis=1, keepdims=True), atol=1e-6
    )
    r = httpx.post(g + "/enroll", json={"identity": "newbie", "templates": tm.tolist()},
                   headers=server.h("admin"))  # fmt: skip
    assert r.status_code == 409 and r.json()["type"].endswith(":duplicate-identity")
    info = httpx.get(g + "/info", headers=server.h("reader")).json()
    assert info["identities"] == len(ref) and info["dim"] == DIM
    assert httpx.delete(g + "/identities/newbie", headers=server.h("admin")).status_code == 200
    assert "newbie" not in ref
    assert httpx.delete(g + "/identities/newbie", headers=server.h("admin")).status_code == 404
    # calibrate (admin): the stored FMR threshold is then used by verify
    imp = np.random.default_rng(4).uniform(-0.3, 0.3, 2000)
    r = httpx.post(g + "/calibrate", json={"fmr": 0.01, "impostor_scores": imp.tolist()},
                   headers=server.h("admin"))  # fmt: skip
    assert r.status_code == 200, r.text
    thr = r.json()["value"]
    assert abs(thr - np.quantile(imp, 0.99)) < 0.01  # ~1% of impostors at or above it
    r = httpx.post(g + "/verify", json={"identity": "p0001", "probe": [1.0] * DIM},
                   headers=server.h("reader"))  # fmt: skip
    d = r.json()["decision"]
    assert d["source"] == "calibrated-fmr" and d["threshold"] == thr
    assert d["accepted"] == (r.json()["score"] >= thr)


def test_health_metrics_openapi(server):
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    rz = httpx.get(server.url + "/readyz").json()
    assert list(rz["galleries"]) == ["shop"] and rz["galleries"]["shop"]["tuned"] is True
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/galleries/{name}/identify" in spec["paths"]
    consent = spec["paths"]["/v1/galleries/{name}/identities/{identity}/consent"]
    assert {"post", "delete", "get"} <= set(consent)
    m = httpx.get(server.url + "/metrics").text
    assert "pfm_requests_total" in m and "pfm_request_seconds_bucket" in m
    assert f'pfm_gallery_identities{{gallery="shop"}} {float(N)}' in m


# ------------------------------------------------------------------ auth and limits
def test_auth_401_403_revoked(server, data):
    u = server.url + "/v1/galleries/shop/identify"
    body = {"probes": [data[1][0].tolist()]}
    r = httpx.post(u, json=body)
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    assert httpx.post(u, json=body, headers={"X-API-Key": "pfm_wrong"}).status_code == 401
    r = httpx.post(u, json=body, headers=server.h("old"))
    assert r.status_code == 401 and r.json()["type"].endswith(":key-revoked")
    assert httpx.post(u, json=body, headers=server.h("other")).status_code == 403
    r = httpx.post(server.url + "/v1/galleries/shop/enroll", headers=server.h("reader"),
                   json={"identity": "x", "templates": [[1.0] * DIM]})  # fmt: skip
    assert r.status_code == 403
    assert httpx.delete(server.url + "/v1/galleries/shop/identities/p0001",
                        headers=server.h("reader")).status_code == 403  # fmt: skip
    # revoking a key in the file takes effect without a restart
    assert httpx.post(u, json=body, headers=server.h("live")).status_code == 200
    text = server.keys_path.read_text()
    h = hash_token(server.tokens["live"])
    i = text.index(h)
    j = text.index("revoked = false", i)
    server.keys_path.write_text(text[:j] + "revoked = true" + text[j + len("revoked = false") :])
    os.utime(server.keys_path, (time.time() + 5, time.time() + 5))  # mtime surely changes
    deadline = time.monotonic() + 5
    while httpx.post(u, json=body, headers=server.h("live")).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted after 5 s"
        time.sleep(0.2)


def test_rate_limit_429_retry_after(server, data):
    u = server.url + "/v1/galleries/shop/identify"
    body = {"probes": [data[1][0].tolist()]}
    codes = [httpx.post(u, json=body, headers=server.h("slow")) for _ in range(4)]
    assert [r.status_code for r in codes[:2]] == [200, 200]  # burst = 2
    r = codes[2]
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["type"].endswith(":rate-limited")


def test_bad_bodies_are_4xx_and_never_crash(server):
    g = server.url + "/v1/galleries/shop"
    h = server.h("admin")
    big = np.zeros((1000, DIM), "<f4").tobytes()  # 128 kB > max_body_bytes 64 kB (config file)
    r = httpx.post(g + "/identify", content=big, headers={**OCTET, **h})
    assert r.status_code == 413 and r.json()["type"].endswith(":body-too-large")
    assert httpx.post(g + "/identify", content=b"{not json", headers={"Content-Type": "application/json", **h}).status_code == 400  # fmt: skip
    assert httpx.post(g + "/identify", content=b"abc", headers={"Content-Type": "text/plain", **h}).status_code == 415  # fmt: skip
    assert httpx.post(g + "/identify", content=b"\x00" * 7, headers={**OCTET, **h}).status_code == 400  # fmt: skip
    assert httpx.post(g + "/identify", content=b"\x93NUMPYgarbage", headers={"Content-Type": "application/x-npy", **h}).status_code == 400  # fmt: skip
    assert httpx.post(g + "/identify", json={"probes": [["a"] * DIM]}, headers=h).status_code == 400  # fmt: skip
    assert httpx.post(g + "/identify", json={"probes": [[1.0] * DIM], "k": 0}, headers=h).status_code == 400  # fmt: skip
    # NaN: binary -> the library's NonFiniteError (422); the JSON literal NaN is not JSON (400)
    nan = np.ones((1, DIM), "<f4")
    nan[0, 5] = np.nan
    r = httpx.post(g + "/identify", content=nan.tobytes(), headers={**OCTET, **h})
    assert r.status_code == 422 and r.json()["type"].endswith(":non-finite")
    r = httpx.post(g + "/identify", content=b'{"probes": [[NaN, 1]]}', headers={"Content-Type": "application/json", **h})  # fmt: skip
    assert r.status_code == 400
    r = httpx.post(g + "/identify", json={"probes": [[1.0] * (DIM + 1)]}, headers=h)
    assert r.status_code == 422 and r.json()["type"].endswith(":dimension")
    r = httpx.post(g + "/enroll", json={"identity": "z", "templates": [[0.0] * DIM]}, headers=h)
    assert r.status_code == 422 and r.json()["type"].endswith(":zero-vector")
    r = httpx.post(server.url + "/v1/galleries/nope/identify", json={"probes": [[1.0] * DIM]}, headers=h)  # fmt: skip
    assert r.status_code == 404 and r.json()["type"].endswith(":unknown-gallery")
    assert server.proc.poll() is None
    assert httpx.get(server.url + "/healthz").status_code == 200
    # nothing biometric in the logs: no template value was written
    log = server.log.read_text()
    assert "NaN" not in log and "p0001" not in log


# ------------------------------------------------------------------ batching, concurrency
def test_concurrent_identify_is_batched_and_correct(server, ref, data):
    _, t = data
    rng = np.random.default_rng(9)
    probes = (t[:24] + 0.2 * rng.standard_normal((24, DIM))).astype(np.float32)
    want = _ref_cands(ref, probes, 3)
    before = _batch_stats(server)
    got: dict[int, list] = {}

    def one(i: int) -> None:
        r = httpx.post(
            server.url + "/v1/galleries/shop/identify?k=3",
            content=probes[i].astype("<f4").tobytes(),
            headers={**OCTET, **server.h("admin")},
        )
        got[i] = _cands(r.json())[0]

    th = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    # same ids in the same order; scores equal to float32 rounding: the core's batch kernel
    # may round differently for another batch composition (measured: 1 ulp)
    for i in range(24):
        assert [c[0] for c in got[i]] == [c[0] for c in want[i]]
        np.testing.assert_allclose([c[1] for c in got[i]], [c[1] for c in want[i]], atol=1e-6)
    n, rows = (a - b for a, b in zip(_batch_stats(server), before))
    assert rows == 24 and n < 24  # 24 requests answered by fewer gallery calls


def _batch_stats(server: Server) -> tuple[float, float]:
    m = httpx.get(server.url + "/metrics").text
    val = {}
    for line in m.splitlines():
        for k in ("count", "sum"):
            if line.startswith(f'pfm_batch_rows_{k}{{kind="identify"}}'):
                val[k] = float(line.split()[-1])
    return val.get("count", 0.0), val.get("sum", 0.0)


def test_removed_identity_never_returned_after_delete_answered(server, data):
    _, t = data
    rng = np.random.default_rng(11)
    victims = [f"v{i}" for i in range(6)]
    vt = rng.standard_normal((6, DIM)).astype(np.float32)
    g = server.url + "/v1/galleries/shop"
    h = server.h("admin")
    for v, x in zip(victims, vt):
        assert httpx.post(g + "/enroll", json={"identity": v, "templates": [x.tolist()]}, headers=h).status_code == 201  # fmt: skip
    removed_at: dict[str, float] = {}
    bad: list[str] = []
    stop = threading.Event()

    def searcher(j: int) -> None:
        r_j = np.random.default_rng(100 + j)  # one generator per thread
        with httpx.Client(headers=h) as c:
            while not stop.is_set():
                i = int(r_j.integers(6))  # probe = the victim's own template: top-1 while enrolled
                t0 = time.monotonic()
                r = c.post(
                    g + "/identify?k=1", content=vt[i].astype("<f4").tobytes(), headers=OCTET
                )
                top = r.json()["results"][0]["candidates"][0]["identity"]
                ra = removed_at.get(top)
                if ra is not None and t0 > ra:
                    bad.append(top)

    def writer() -> None:
        with httpx.Client(headers=h) as c:
            for v in victims:
                time.sleep(0.15)
                c.post(g + "/enroll", json={"identity": v + "x", "templates": [rng.standard_normal(DIM).tolist()]})  # fmt: skip
                assert c.delete(g + f"/identities/{v}").status_code == 200
                removed_at[v] = time.monotonic()

    th = [threading.Thread(target=searcher, args=(j,)) for j in range(3)]
    for x in th:
        x.start()
    writer()
    time.sleep(0.2)
    stop.set()
    for x in th:
        x.join()
    assert len(removed_at) == 6 and not bad, bad


def test_sigterm_during_load_keeps_acknowledged_enrollments(tmp_path):
    path = tmp_path / "g.db"
    Gallery.open(path, dim=DIM).close()
    url, proc, log = _start(tmp_path, path, None, [])
    acked: list[str] = []
    stop = threading.Event()

    def enroller(j: int) -> None:
        rng = np.random.default_rng(j)
        with httpx.Client() as c:
            i = 0
            while not stop.is_set():
                name = f"w{j}-{i}"
                i += 1
                try:
                    r = c.post(url + "/v1/galleries/shop/enroll?identity=" + name,
                               content=rng.standard_normal(DIM).astype("<f4").tobytes(),
                               headers=OCTET)  # fmt: skip
                except httpx.TransportError:
                    return
                if r.status_code == 201:
                    acked.append(name)

    th = [threading.Thread(target=enroller, args=(j,)) for j in range(4)]
    for x in th:
        x.start()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown (exit -15)
    assert proc.wait(30) in (0, -signal.SIGTERM)
    assert '"gallery closed"' in log.read_text()  # the lifespan shutdown ran
    stop.set()
    for x in th:
        x.join()
    assert len(acked) > 10
    with Gallery.open(path, read_only=True) as g:
        missing = [a for a in acked if a not in g]
    assert not missing


# ------------------------------------------------------------------ client
@pytest.mark.parametrize("binary", [True, False])
def test_client_round_trips(server, ref, data, binary):
    ids, t = data
    rng = np.random.default_rng(5)
    with Client(server.url, "shop", api_key=server.tokens["admin"], binary=binary) as c:
        probes = (t[:4] + 0.2 * rng.standard_normal((4, DIM))).astype(np.float32)
        assert c.identify(probes, k=3) == ref.identify(probes, k=3)
        assert c.verify(ids[2], probes[2]) == ref.verify(ids[2], probes[2])
        name = f"client-{binary}"
        c.enroll(name, probes[:2])
        assert name in ref and len(c) == len(ref)
        with pytest.raises(DuplicateIdentityError):
            c.enroll(name, probes[:1])
        c.remove(name)
        assert name not in ref
        with pytest.raises(UnknownIdentityError):
            c.remove(name)
        with pytest.raises(DimensionError):
            c.identify(np.ones(DIM + 2))
        if binary:
            with pytest.raises(NonFiniteError):
                c.identify(np.full(DIM, np.nan))
        assert c.info()["dim"] == DIM
    with Client(server.url, "shop") as anon, pytest.raises(ServiceError) as e:
        anon.identify(probes)
    assert e.value.status == 401


def test_second_writer_on_same_file_is_refused(server, tmp_path):
    port = _free_port()
    p = subprocess.run(
        [sys.executable, "-m", "pyfacematch", "serve", "--gallery", f"shop={server.path}",
         "--port", str(port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode != 0 and "GalleryLockedError" in p.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls(tmp_path, data):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    path = tmp_path / "g.db"
    ids, t = data
    with Gallery.open(path, dim=DIM) as g:
        g.enroll_many(ids[:20], t[:20])
    extra = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    url, proc, _ = _start(tmp_path, path, None, extra, ca=cert)
    try:
        with Client(url, "shop", verify_tls=str(cert)) as c:
            assert c.identify(t[5])[0].candidates[0].identity == ids[5]
        with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused
            httpx.get(url + "/healthz")
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP is not served
            httpx.get(url.replace("https", "http") + "/healthz")
    finally:
        _stop(proc)
