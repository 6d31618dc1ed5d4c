"""``pyfacematch serve`` and the issue-13 trust features: audit actor = API key id, purposes,
consent endpoints, encrypted galleries, per-gallery /readyz. The real server in a subprocess.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from test_serve import DIM, Server, _free_port, _keys_toml, _start, _stop  # noqa: E402

from pyfacematch.client import Client  # noqa: E402
from pyfacematch.errors import ConsentError, NoConsentError  # noqa: E402
from pyfacematch.gallery import Gallery  # noqa: E402
from pyfacematch.gallery.secret import FileKeyProvider  # noqa: E402
from pyfacematch.serve.auth import new_api_key  # noqa: E402

N = 40


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(13)
    return [f"q{i:03d}" for i in range(N)], rng.standard_normal((N, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, data) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve-trust")
    path = tmp / "shop.db"
    ids, t = data
    with Gallery.open(path, dim=DIM, backend="exact", purpose="payment") as g:
        g.enroll_many(ids, t)
    tokens: dict[str, str] = {}
    spec = {}
    for kid, scopes in [
        ("desk", {"shop": ["enroll", "remove"]}),
        ("term-7", {"shop": ["identify", "verify"]}),
        ("ops", {"shop": ["admin"]}),
    ]:
        tok, h = new_api_key()
        tokens[kid] = tok
        spec[kid] = (h, scopes, 0.0, False)
    keys = tmp / "keys.toml"
    keys.write_text(_keys_toml(spec))
    url, proc, log = _start(tmp, path, keys, [])
    try:
        yield Server(url, proc, path, keys, tokens, log)
    finally:
        _stop(proc)


def _top(s: Server, who: str, probe: np.ndarray, purpose: str | None) -> list[str]:
    body: dict = {"probes": [probe.tolist()], "k": 3}
    if purpose is not None:
        body["purpose"] = purpose
    r = httpx.post(s.url + "/v1/galleries/shop/identify", json=body, headers=s.h(who))
    assert r.status_code == 200, r.text
    return [c["identity"] for c in r.json()["results"][0]["candidates"]]


def test_consent_endpoints_purposes_and_audit_actor(srv, data):
    ids, t = data
    u = srv.url + "/v1/galleries/shop"
    c1 = u + f"/identities/{ids[1]}/consent"
    # purpose: default (the gallery's "payment") and explicit; no one consented to "access"
    assert _top(srv, "term-7", t[1], None)[0] == ids[1]
    assert _top(srv, "term-7", t[1], "payment")[0] == ids[1]
    assert _top(srv, "term-7", t[1], "access") == []
    v = httpx.post(
        u + "/verify", json={"identity": ids[1], "probe": t[1].tolist(), "purpose": "access"},
        headers=srv.h("term-7"),
    )  # fmt: skip
    assert v.status_code == 404 and v.json()["type"].endswith("no-consent"), v.text
    bad = httpx.post(u + "/identify", json={"probes": [t[1].tolist()], "purpose": "Bad Purpose!"},
                     headers=srv.h("term-7"))  # fmt: skip
    assert bad.status_code == 422 and "purpose" in bad.json()["detail"]

    # grant: scope enroll; a terminal key may not
    g = {"purpose": "access", "source": "form-42"}
    assert httpx.post(c1, json=g, headers=srv.h("term-7")).status_code == 403
    r = httpx.post(c1, json=g, headers=srv.h("desk"))
    assert r.status_code == 201 and r.json()["purpose"] == "access" and r.json()["active"]
    assert httpx.post(c1, json={"purpose": "access"}, headers=srv.h("desk")).status_code == 400
    assert _top(srv, "term-7", t[1], "access") == [ids[1]]
    ok = httpx.post(
        u + "/verify", json={"identity": ids[1], "probe": t[1].tolist(), "purpose": "access"},
        headers=srv.h("term-7"),
    )  # fmt: skip
    assert ok.status_code == 200 and ok.json()["score"] > 0.99, ok.text

    # show: verify or admin scope
    assert httpx.get(c1, headers=srv.h("desk")).status_code == 403
    for who in ("term-7", "ops"):
        r = httpx.get(c1, headers=srv.h(who))
        assert r.status_code == 200
        assert sorted(x["purpose"] for x in r.json()["records"]) == ["access", "payment"]

    # withdraw one purpose (scope remove), then every purpose = opt-out
    assert httpx.delete(c1, headers=srv.h("term-7")).status_code == 403
    r = httpx.delete(c1, params={"purpose": "access"}, headers=srv.h("desk"))
    assert r.status_code == 200
    assert r.json() == {"identity": ids[1], "withdrawn": "access", "remaining": ["payment"],
                        "opted_out": False}  # fmt: skip
    assert _top(srv, "term-7", t[1], "access") == []
    r = httpx.delete(c1, headers=srv.h("desk"))
    assert r.status_code == 200 and r.json()["opted_out"] is True and r.json()["remaining"] == []
    assert ids[1] not in _top(srv, "term-7", t[1], None)  # erased
    # the tombstone refuses re-enrollment until new consent
    e = httpx.post(u + "/enroll", json={"identity": ids[1], "templates": [t[1].tolist()]},
                   headers=srv.h("desk"))  # fmt: skip
    assert e.status_code == 409 and e.json()["type"].endswith("consent"), e.text
    assert httpx.post(c1, json={"purpose": "payment", "source": "desk"},
                      headers=srv.h("desk")).status_code == 201  # fmt: skip
    e = httpx.post(u + "/enroll", json={"identity": ids[1], "templates": [t[1].tolist()]},
                   headers=srv.h("desk"))  # fmt: skip
    assert e.status_code == 201, e.text
    assert httpx.delete(u + f"/identities/{ids[2]}", headers=srv.h("desk")).status_code == 200

    # the Python client: same names as Gallery, typed errors
    with (
        Client(srv.url, "shop", api_key=srv.tokens["desk"]) as desk,
        Client(srv.url, "shop", api_key=srv.tokens["term-7"], binary=True) as term,
    ):
        rec = desk.grant_consent(ids[4], "access", source="app")
        assert (rec.identity, rec.purpose, rec.source) == (ids[4], "access", "app")
        assert [r.purpose for r in term.consent_records(ids[4])] == sorted(["access", "payment"])
        assert term.identify(t[4], purpose="access")[0].candidates[0].identity == ids[4]
        assert term.verify(ids[4], t[4], purpose="access").score > 0.99
        with pytest.raises(NoConsentError):
            term.verify(ids[5], t[5], purpose="access")
        assert desk.withdraw_consent(ids[4], "access") == ["payment"]
        assert desk.withdraw_consent(ids[4]) == []
        with pytest.raises(ConsentError):
            desk.enroll(ids[4], t[4])
        desk.grant_consent(ids[4], "payment", source="app")
        desk.enroll(ids[4], t[4], purpose="payment")

    # the audit trail names the API key of each request (searches flushed at shutdown)
    assert _stop(srv.proc) in (0, -15)  # uvicorn re-raises SIGTERM after a clean stop
    with sqlite3.connect(srv.path) as c:
        rows = c.execute("SELECT actor, action FROM audit").fetchall()
    by_actor: dict[str, set[str]] = {}
    for actor, action in rows:
        by_actor.setdefault(str(actor), set()).add(action)
    assert {"desk", "term-7"} <= set(by_actor), by_actor
    assert not any("verify" in a or "identify" in a for a in by_actor["desk"]), by_actor
    assert any("identify" in a for a in by_actor["term-7"]), by_actor
    assert any("verify" in a for a in by_actor["term-7"]), by_actor
    assert len(by_actor["desk"]) >= 3, by_actor  # consent grant / withdraw, enroll, remove
    assert not any("identify" in a or "verify" in a for a in by_actor.get("None", set()))
    with Gallery.open(srv.path, read_only=True) as g:
        assert g.audit_verify()["ok"]


def test_readyz_is_per_gallery_and_says_tuned(tmp_path, data):
    ids, t = data
    p1, p2 = tmp_path / "a.db", tmp_path / "b.db"
    for p in (p1, p2):
        with Gallery.open(p, dim=DIM, backend="exact") as g:
            g.enroll_many(ids, t)
    port = _free_port()
    log = tmp_path / "s.log"
    cmd = [sys.executable, "-m", "pyfacematch", "serve", "--port", str(port),
           "--gallery", f"a={p1}", "--gallery", f"b={p2}"]  # fmt: skip
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = f"http://127.0.0.1:{port}"
        seen: set[int] = set()
        for _ in range(300):
            try:
                r = httpx.get(url + "/readyz", timeout=2)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            seen.add(r.status_code)
            if r.status_code == 503:  # still opening: each gallery says where it is
                assert set(r.json()["galleries"]) == {"a", "b"}
            if r.status_code == 200:
                break
        assert 200 in seen
        b = r.json()
        assert b["status"] == "ready"
        for n in ("a", "b"):
            gi = b["galleries"][n]
            assert gi["state"] == "open" and gi["tuned"] is True
            assert gi["backend"] == "exact" and gi["search"] == "exact" and gi["templates"] == N
    finally:
        _stop(proc)


def _serve_fails(tmp: Path, path: Path, extra: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pyfacematch", "serve", "--port", str(_free_port()),
           "--gallery", f"shop={path}", *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp)


def test_encrypted_gallery_opens_with_its_key_file_and_refuses_without(tmp_path, data):
    ids, t = data
    key, other = tmp_path / "keys" / "shop.key", tmp_path / "keys" / "other.key"
    key.parent.mkdir(mode=0o700)
    path = tmp_path / "enc.db"
    with Gallery.open(path, dim=DIM, backend="exact", encrypt=True,
                      key_provider=FileKeyProvider(key)) as g:  # fmt: skip
        assert g.encrypted
        g.enroll_many(ids[:10], t[:10])
    with Gallery.open(tmp_path / "o.db", dim=DIM, encrypt=True,
                      key_provider=FileKeyProvider(other)):  # fmt: skip
        pass  # makes a second, different key
    # no key: a clear error naming the ways to give it, exit non-zero
    p = _serve_fails(tmp_path, path, [])
    assert p.returncode != 0 and "--gallery-key shop=FILE" in p.stderr, p.stderr[-2000:]
    # wrong key
    p = _serve_fails(tmp_path, path, ["--gallery-key", f"shop={other}"])
    assert p.returncode != 0 and "WrongKeyError" in p.stderr, p.stderr[-2000:]
    # a key file that does not exist: refused before the server starts
    p = _serve_fails(tmp_path, path, ["--gallery-key", f"shop={tmp_path / 'nope.key'}"])
    assert p.returncode != 0 and "does not exist" in p.stderr
    # the right key, from the flag and from the TOML configuration
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f'[galleries]\nshop = "{path}"\n[gallery_keys]\nshop = "keys/shop.key"\n')
    for extra, conf in (([f"--gallery-key=shop={key}"], None), ([], cfg)):
        url, proc, _ = _start(tmp_path, path if conf is None else None, None, extra, config=conf)
        try:
            r = httpx.post(url + "/v1/galleries/shop/identify", json={"probes": [t[3].tolist()]})
            assert (
                r.status_code == 200
                and r.json()["results"][0]["candidates"][0]["identity"] == ids[3]
            )
        finally:
            assert _stop(proc) in (0, -15)
