"""The operator page ``/console`` in a real headless browser, on the real server.

Chromium and chromedriver come from the distribution (``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them where missing), driven by Selenium with the driver's
path given, so nothing is downloaded at run time. Without them the browser test skips saying so;
the HTTP-level checks (login, CSRF header, scopes, content policy) run anyway.

What the page shows and does is checked against independent references: a read-only
in-process :class:`Gallery` on the same file (sizes, consent records, the audit trail and its
actor) and the requests this test itself sent (rates).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart", reason="the console's login form needs python-multipart")

from test_serve import Server, _keys_toml, _start, _stop  # noqa: E402

from pyfacematch.embed.dlib import _onnx_available, dlib_available  # noqa: E402
from pyfacematch.gallery import Gallery  # noqa: E402
from pyfacematch.serve.auth import new_api_key  # noqa: E402

DATA = Path(__file__).parent / "data"
SMALL = np.load(DATA / "faces_small.npz")
JOHNS = np.load(DATA / "faces_johns_embeddings.npz")
HAVE_EMBEDDER = dlib_available() and _onnx_available()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
#: where the browser test leaves its screenshot (README: the console section)
SCREENSHOT = os.environ.get("PFM_CONSOLE_SCREENSHOT")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("console")
    path = tmp / "shop.db"
    with Gallery.open(path, dim=128, backend="exact") as g:
        for name in ("John_Schneider", "John_Shimkus", "John_Simm"):
            g.enroll(name.lower(), JOHNS["embeddings"][JOHNS["labels"] == name])
        g.enroll("salley", SMALL["embeddings"][:1])
        g.enroll("savage", SMALL["embeddings"][3:4])
        g.grant_consent("savage", "access", source="form-17")
        g.grant_consent("savage", "payment", source="app-3")
    tokens: dict[str, str] = {}
    spec = {}
    for kid, scopes in (
        ("ops", {"*": ["admin"]}),
        ("desk", {"shop": ["identify", "verify", "remove"]}),
    ):
        tok, h = new_api_key()
        tokens[kid] = tok
        spec[kid] = (h, scopes, 0.0, False)
    keys = tmp / "keys.toml"
    keys.write_text(_keys_toml(spec))
    extra = ["--embedder", "dlib"] if HAVE_EMBEDDER else []
    url, proc, log = _start(tmp, path, keys, extra)
    try:
        yield Server(url, proc, path, keys, tokens, log)
    finally:
        _stop(proc)


@contextlib.contextmanager
def _login(server: Server, who: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/console/login", data={"token": server.tokens[who]})
        assert r.status_code == 303 and r.headers["location"] == "/console", r.text
        yield c


# ------------------------------------------------------------------ HTTP level
def test_console_needs_an_admin_key(server):
    r = httpx.get(server.url + "/console")
    assert r.status_code == 200 and "id=login-form" in r.text
    assert "salley" not in r.text and "identities" not in r.text  # no data before sign-in
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp  # nothing external
    # a key without admin cannot sign in; a wrong token neither
    r = httpx.post(server.url + "/console/login", data={"token": server.tokens["desk"]})
    assert r.status_code == 200 and "admin" in r.text and "set-cookie" not in r.headers
    r = httpx.post(server.url + "/console/login", data={"token": "pfm_wrong"})
    assert r.status_code == 200 and "set-cookie" not in r.headers
    # the admin key: an HttpOnly, SameSite=Strict cookie limited to /console
    with _login(server, "ops") as c:
        (ck,) = list(c.cookies.jar)
        assert ck.name == "pfm_console" and ck.path == "/console"
        r = httpx.post(server.url + "/console/login", data={"token": server.tokens["ops"]})
        raw = r.headers["set-cookie"].lower()
        assert "httponly" in raw and "samesite=strict" in raw and "path=/console" in raw
        page = c.get("/console").text
        assert "salley" not in page  # identities are never listed, only counted
        assert re.search(r"data-field=identities>5<", page), page
        # the page's API: the cookie alone is not enough (CSRF), the header alone neither
        assert c.get("/console/api/stats").status_code == 403
        assert (
            httpx.get(server.url + "/console/api/stats", headers={"X-PFM-Console": "1"}).status_code
            == 401
        )
        s = c.get("/console/api/stats", headers={"X-PFM-Console": "1"})
        assert s.status_code == 200 and s.json()["galleries"][0]["identities"] == 5
        # the cookie is not an API key for /v1 (only /console/api accepts it)
        r = httpx.post(
            server.url + "/v1/galleries/shop/identify",
            json={"probes": [[1.0] * 128]},
            headers={"Cookie": f"pfm_console={server.tokens['ops']}", "X-PFM-Console": "1"},
        )
        assert r.status_code == 401
        # sign out clears it
        r = c.post("/console/logout")
        assert r.status_code == 303 and 'pfm_console=""' in r.headers["set-cookie"]


def test_console_actions_need_admin_on_the_gallery(server):
    """The console API requires admin even where /v1 would accept a narrower scope."""
    h = {"X-PFM-Console": "1", "Authorization": f"Bearer {server.tokens['desk']}"}
    r = httpx.get(server.url + "/console/api/galleries/shop/identities/savage/consent", headers=h)
    assert r.status_code == 403, r.text
    r = httpx.delete(
        server.url + "/console/api/galleries/shop/identities/savage/consent", headers=h
    )
    assert r.status_code == 403, r.text
    with Gallery.open(server.path, read_only=True) as ref:
        assert {c.purpose for c in ref.consent_records("savage")} == {"access", "payment"}


# ------------------------------------------------------------------ in the browser
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "no headless browser here: apt-get install chromium chromium-driver (the "
            "distribution's packages; .ci/run installs them)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.add_argument("--window-size=1280,1400")
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(CHROMEDRIVER))
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _wait(drv, cond, timeout: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, poll_frequency=0.1).until(cond)


def _text(drv, css: str) -> str:
    return drv.find_element("css selector", css).text


def test_console_in_headless_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    drv = browser
    drv.get(server.url + "/console")
    assert drv.find_elements(By.ID, "login-form") and not drv.find_elements(By.ID, "galleries")
    drv.find_element(By.ID, "token").send_keys(server.tokens["ops"])
    drv.find_element(By.ID, "login").click()
    _wait(drv, lambda d: d.find_elements(By.ID, "galleries"))
    assert _text(drv, "#key-id") == "ops"
    with Gallery.open(server.path, read_only=True) as ref:
        n = len(ref)
    row = drv.find_element(By.CSS_SELECTOR, '#galleries tr[data-gallery="shop"]')
    assert row.find_element(By.CSS_SELECTOR, "[data-field=identities]").text == str(n)
    assert "tuned" in row.find_element(By.CSS_SELECTOR, "[data-field=health]").text

    # traffic this test sends shows up in the rates table, refreshed by the page's script
    h = {"Authorization": f"Bearer {server.tokens['ops']}"}
    probe = SMALL["embeddings"][1:2].tolist()
    for _ in range(25):
        r = httpx.post(
            server.url + "/v1/galleries/shop/identify", json={"probes": probe}, headers=h
        )
        assert r.status_code == 200

    def identify_total(d) -> int:
        rows = d.find_elements(By.CSS_SELECTOR, '#rates tr[data-endpoint="identify"] td')
        return int(rows[4].text) if rows else 0

    _wait(drv, lambda d: identify_total(d) >= 25, timeout=12)  # the 5 s refresh, no reload

    # consent: look up, withdraw one purpose, then all (opt-out)
    Select(drv.find_element(By.CSS_SELECTOR, "#consent-form select")).select_by_value("shop")
    drv.find_element(By.ID, "consent-identity").send_keys("savage")
    drv.find_element(By.ID, "consent-lookup").click()
    _wait(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#consent-records tbody tr")) == 2)
    purposes = [
        e.get_attribute("data-purpose")
        for e in drv.find_elements(By.CSS_SELECTOR, "#consent-records tbody tr")
    ]
    assert sorted(purposes) == ["access", "payment"]
    drv.find_element(
        By.CSS_SELECTOR, '#consent-records tr[data-purpose="access"] button.withdraw'
    ).click()
    drv.switch_to.alert.accept()
    _wait(drv, lambda d: "remaining: payment" in _text(d, "#consent-status"))
    with Gallery.open(server.path, read_only=True) as ref:
        assert [c.purpose for c in ref.consent_records("savage")] == ["payment"]
        assert "savage" in ref.identities()
    drv.find_element(By.ID, "withdraw-all").click()
    drv.switch_to.alert.accept()
    _wait(drv, lambda d: "opted out" in _text(d, "#consent-status"))
    with Gallery.open(server.path, read_only=True) as ref:
        assert "savage" not in ref.identities() and ref.consent_records("savage") == []
    # both withdrawals are in the audit trail under the operator's key id
    with sqlite3.connect(f"file:{server.path}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT actor, action FROM audit").fetchall()
    # (the consent grants and enrollments before were made in-process, actor None)
    start = max(i for i, (_, act) in enumerate(rows) if act == "consent-grant") + 1
    mine = [(a, act) for a, act in rows[start:] if act not in ("identify", "verify")]
    assert [act for _, act in mine] == ["consent-withdraw", "remove"], rows
    assert {a for a, _ in rows[start:]} == {"ops"}, rows

    # audit trail verification
    drv.find_element(By.ID, "audit-verify").click()
    _wait(
        drv,
        lambda d: "intact" in _text(d, "#audit-status") or "BROKEN" in _text(d, "#audit-status"),
    )
    assert _text(drv, "#audit-status").startswith("intact: ")

    # a photo: ranked matches (the embedder runs in the server's worker process)
    if HAVE_EMBEDDER:
        drv.find_element(By.ID, "photo-file").send_keys(str(DATA / SMALL["paths"][2]))
        drv.find_element(By.ID, "photo-submit").click()
        _wait(drv, lambda d: d.find_elements(By.CSS_SELECTOR, "#photo-results tbody tr"), 60)
        first = drv.find_element(By.CSS_SELECTOR, "#photo-results tbody tr")
        assert first.get_attribute("data-identity") == "salley"
        assert "1 face(s) found" in _text(drv, "#photo-status")
    else:
        assert drv.find_elements(By.ID, "photo-off")
    shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "console.png"
    drv.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
