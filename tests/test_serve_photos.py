"""Photo uploads to ``pyfacematch serve`` (multipart), on the real server with the real model.

The server runs as a subprocess with ``--embedder dlib`` (dlib's detector and landmarks, its
ResNet descriptor on onnxruntime) in a worker process. References are independent of the
service: the same embedder in this process, a read-only :class:`Gallery` on the same file, and
float64 numpy cosines. The photos are the six real ones of ``tests/data/faces`` (two people).
"""

from __future__ import annotations

import io
import json
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart", reason="photo uploads need python-multipart (serve extra)")

from pyfacematch.embed.dlib import _onnx_available, dlib_available  # noqa: E402

if not (dlib_available() and _onnx_available()):
    pytest.skip(
        "photo uploads are tested with the dlib embedder: pip install 'pyfacematch[dlib]' "
        "(dlib-bin, face-recognition-models, onnxruntime)",
        allow_module_level=True,
    )

from PIL import Image  # noqa: E402

from pyfacematch.embed.dlib import DlibEmbedder  # noqa: E402
from pyfacematch.gallery import Gallery  # noqa: E402
from pyfacematch.serve.auth import new_api_key  # noqa: E402

DATA = Path(__file__).parent / "data"
SMALL = np.load(DATA / "faces_small.npz")
PHOTOS = [DATA / p for p in SMALL["paths"]]  # 0-2 John_Salley, 3-5 John_Savage
JOHNS = np.load(DATA / "faces_johns_embeddings.npz")  # 54 real descriptors, 5 people


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    path: Path
    tokens: dict[str, str]
    log: Path

    def h(self, who: str = "ops") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def u(self, gallery: str, ep: str) -> str:
        return f"{self.url}/v1/galleries/{gallery}/{ep}"


def start_server(tmp: Path, args: list[str], ready_timeout: float = 60.0) -> Server:
    """``pyfacematch serve`` as a subprocess on a free port; waits for /readyz 200."""
    port = _free_port()
    log = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "pyfacematch", "serve", "--port", str(port), *args]
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < ready_timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return Server(url, proc, tmp, {}, log)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"server not ready in {ready_timeout} s: {log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def keys_file(tmp: Path, scopes: dict[str, dict[str, list[str]]]) -> tuple[Path, dict[str, str]]:
    tokens, out = {}, []
    for kid, sc in scopes.items():
        tok, h = new_api_key()
        tokens[kid] = tok
        s = ", ".join(f'"{g}" = {json.dumps(v)}' for g, v in sc.items())
        out.append(f'[[keys]]\nid = "{kid}"\nsha256 = "{h}"\nscopes = {{ {s} }}\n')
    p = tmp / "keys.toml"
    p.write_text("\n".join(out))
    return p, tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("photos")
    # distractors: 33 real descriptors of three other people, one identity each
    with Gallery.open(tmp / "shop.db", dim=128, backend="exact") as g:
        for name in ("John_Schneider", "John_Shimkus", "John_Simm"):
            g.enroll(name.lower(), JOHNS["embeddings"][JOHNS["labels"] == name])
    with Gallery.open(tmp / "small.db", dim=32, backend="exact") as g:
        g.enroll("x", np.random.default_rng(0).standard_normal((1, 32)).astype(np.float32))
    keys, tokens = keys_file(
        tmp, {"ops": {"*": ["admin"]}, "term": {"shop": ["identify", "verify", "enroll"]}}
    )
    cfg = tmp / "serve.toml"
    cfg.write_text(
        'embedder = "dlib"\nembed_workers = 1\nmax_image_bytes = 300000\nmax_images = 4\n'
        'keys = "keys.toml"\n\n[galleries]\nshop = "shop.db"\nsmall = "small.db"\n'
    )
    srv = start_server(tmp, ["--config", str(cfg)])
    srv.tokens = tokens
    try:
        yield srv
    finally:
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown (exit -15)
        assert stop_server(srv.proc) in (0, -signal.SIGTERM), srv.log.read_text()[-3000:]
        assert "Traceback" not in srv.log.read_text()


@pytest.fixture(scope="module")
def emb() -> DlibEmbedder:
    return DlibEmbedder()  # the server's embedder, in this process: the reference


def _files(*paths: Path | bytes, name: str = "image") -> list[tuple[str, tuple[str, bytes, str]]]:
    out = []
    for i, p in enumerate(paths):
        data = p if isinstance(p, bytes) else p.read_bytes()
        out.append((name, (f"photo{i}.jpg", data, "image/jpeg")))
    return out


def _problem(r: httpx.Response, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == "urn:pyfacematch:problem:" + slug, body
    return body


def _png(w: int, h: int, color: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (color, color, color)).save(buf, "PNG")
    return buf.getvalue()


def _bomb_png(w: int, h: int) -> bytes:
    """A tiny PNG whose header declares w × h pixels (IHDR rewritten, CRC fixed)."""
    raw = bytearray(_png(8, 8))
    ihdr = struct.pack(">II", w, h) + bytes(raw[24:29])
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(raw)


# ------------------------------------------------------------------ enroll / identify / verify
def test_photo_enroll_identify_verify_match_in_process(server, emb):
    h = server.h("term")
    for ident, i in (("salley", 0), ("savage", 3)):
        r = httpx.post(
            server.u("shop", "enroll"),
            data={"identity": ident, "metadata": '{"source": "test"}'},
            files=_files(PHOTOS[i]),
            headers=h,
            timeout=60,
        )
        assert r.status_code == 201, r.text
        assert r.json() == {"identity": ident, "templates": 1}
    # what was stored is what the same model gives in this process
    with Gallery.open(server.path / "shop.db", read_only=True) as ref:
        for ident, i in (("salley", 0), ("savage", 3)):
            want = emb.embed_image(PHOTOS[i]).templates[0].astype(np.float64)
            got = ref.templates(ident)[0].astype(np.float64)
            assert float(want @ got) > 0.99999
        # identify two other photos in one request: one result per photo, in order
        r = httpx.post(
            server.u("shop", "identify"),
            data={"k": "3"},
            files=_files(PHOTOS[1], PHOTOS[4]),
            headers=h,
            timeout=60,
        )
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        probes = emb.embed([PHOTOS[1], PHOTOS[4]]).templates()
        want_c = [[(c.identity, c.score) for c in x.candidates] for x in ref.identify(probes, k=3)]
    got_c = [[(c["identity"], c["score"]) for c in x["candidates"]] for x in res]
    assert [[c[0] for c in row] for row in got_c] == [[c[0] for c in row] for row in want_c]
    np.testing.assert_allclose(
        [c[1] for row in got_c for c in row], [c[1] for row in want_c for c in row], atol=1e-4
    )
    assert [row[0][0] for row in got_c] == ["salley", "savage"]  # the right person first
    assert res[0]["face"]["faces_found"] == 1 and len(res[0]["face"]["box"]) == 4
    # verify: genuine and impostor scores are float64 cosines of the two templates
    p = emb.embed_image(PHOTOS[5]).templates[0].astype(np.float64)
    scores = {}
    for ident in ("savage", "salley"):
        r = httpx.post(
            server.u("shop", "verify"),
            data={"identity": ident},
            files=_files(PHOTOS[5]),
            headers=h,
            timeout=60,
        )
        assert r.status_code == 200, r.text
        scores[ident] = r.json()["score"]
        t = emb.embed_image(PHOTOS[0 if ident == "salley" else 3]).templates[0]
        assert scores[ident] == pytest.approx(float(p @ t.astype(np.float64)), abs=1e-4)
    assert scores["savage"] > scores["salley"]


def test_photo_limits_and_refusals(server):
    h = server.h("term")
    u = server.u("shop", "identify")
    # not an image at all: 415
    _problem(httpx.post(u, files=_files(b"hello, not a photo"), headers=h), 415, "not-an-image")
    # decompression bombs, refused from the header before any pixel is decoded: 8x8 pixels on
    # disk, 6000 x 6000 declared (over max_image_pixels = 25e6) and 30000 x 30000 (Pillow's guard)
    b = _problem(
        httpx.post(u, files=_files(_bomb_png(6000, 6000)), headers=h), 413, "image-too-large"
    )
    assert "max_pixels=25000000" in b["detail"]
    _problem(
        httpx.post(u, files=_files(_bomb_png(30000, 30000)), headers=h), 413, "image-too-large"
    )
    # a part over max_image_bytes (300000 here): 413 before anything is decoded
    big = b"\xff\xd8" + bytes(300_100)
    _problem(httpx.post(u, files=_files(big), headers=h), 413, "image-too-large")
    # truncated JPEG: 422 unreadable
    cut = PHOTOS[0].read_bytes()[:600]
    _problem(httpx.post(u, files=_files(cut), headers=h), 422, "unreadable-image")
    # no face: a grey square
    b = _problem(httpx.post(u, files=_files(_png(200, 200)), headers=h, timeout=60), 422, "no-face")
    assert "image 1" in b["detail"]
    # two people side by side: refused by default, the largest kept with faces=largest
    two = Image.new("RGB", (300, 150))
    two.paste(Image.open(PHOTOS[0]), (0, 0))
    two.paste(Image.open(PHOTOS[3]), (150, 0))
    buf = io.BytesIO()
    two.save(buf, "JPEG", quality=95)
    both = buf.getvalue()
    b = _problem(httpx.post(u, files=_files(both), headers=h, timeout=60), 422, "several-faces")
    assert "2 faces" in b["detail"] and "faces=largest" in b["detail"]
    r = httpx.post(u, data={"faces": "largest"}, files=_files(both), headers=h, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["face"]["faces_found"] == 2
    _problem(
        httpx.post(u, data={"faces": "all"}, files=_files(both), headers=h),
        400,
        "invalid-parameter",
    )
    # more image parts than max_images (4), no image part, verify with two photos
    _problem(httpx.post(u, files=_files(*[PHOTOS[0]] * 5), headers=h), 413, "too-many-images")
    _problem(
        httpx.post(u, files=[("other", ("a.txt", b"x", "text/plain"))], headers=h),
        400,
        "malformed-multipart",
    )
    _problem(
        httpx.post(
            server.u("shop", "verify"),
            data={"identity": "john_simm"},
            files=_files(PHOTOS[0], PHOTOS[1]),
            headers=h,
            timeout=60,
        ),
        413,
        "too-many-images",
    )
    # a gallery of another dimension than the embedder's: 422 naming both
    b = _problem(
        httpx.post(
            server.u("small", "identify"), files=_files(PHOTOS[0]), headers=server.h(), timeout=60
        ),
        422,
        "dimension",
    )
    assert "128" in b["detail"] and "32" in b["detail"]
    # auth is checked before the body: no key 401, wrong scope 403
    _problem(httpx.post(u, files=_files(PHOTOS[0])), 401, "unauthenticated")
    _problem(
        httpx.post(server.u("small", "identify"), files=_files(PHOTOS[0]), headers=h),
        403,
        "forbidden",
    )
    # the server is still healthy
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_concurrent_photos_are_batched(server):
    """Concurrent uploads are gathered into fewer embed calls than photos."""

    def rows() -> tuple[float, float]:
        text = httpx.get(server.url + "/metrics").text
        n = s = 0.0
        for line in text.splitlines():
            if line.startswith('pfm_batch_rows_count{kind="photo"}'):
                n = float(line.split()[-1])
            if line.startswith('pfm_batch_rows_sum{kind="photo"}'):
                s = float(line.split()[-1])
        return n, s

    n0, s0 = rows()
    h = server.h("term")
    photos = [PHOTOS[i % 6].read_bytes() for i in range(12)]

    def one(data: bytes) -> str:
        r = httpx.post(server.u("shop", "identify"), files=_files(data), headers=h, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["results"][0]["candidates"][0]["identity"]

    with ThreadPoolExecutor(12) as ex:
        top = list(ex.map(one, photos))
    assert top == ["salley"] * 3 + ["savage"] * 3 + ["salley"] * 3 + ["savage"] * 3
    n1, s1 = rows()
    assert s1 - s0 == 12  # every photo embedded once
    assert n1 - n0 < 12, f"{n1 - n0} embed calls for 12 concurrent photos"


def test_no_embedder_answers_415(tmp_path):
    with Gallery.open(tmp_path / "g.db", dim=128, backend="exact") as g:
        g.enroll("a", JOHNS["embeddings"][:1])
    srv = start_server(tmp_path, ["--gallery", f"g={tmp_path / 'g.db'}"])
    try:
        r = httpx.post(srv.u("g", "identify"), files=_files(PHOTOS[0]))
        b = _problem(r, 415, "photos-not-enabled")
        assert "--embedder" in b["detail"]
    finally:
        assert stop_server(srv.proc) in (0, -signal.SIGTERM)


def test_client_photo_methods_round_trip(server, emb):
    from pyfacematch.client import Client, ServiceError

    with Client(server.url, "shop", api_key=server.tokens["term"], timeout=60) as c:
        c.enroll_photos("savage-2", [PHOTOS[4], PHOTOS[5].read_bytes()], {"desk": 2})
        (res,) = c.identify_photos(PHOTOS[3], k=2)
        assert res.candidates[0].identity in ("savage", "savage-2")
        v = c.verify_photo("savage-2", PHOTOS[3])
        with Gallery.open(server.path / "shop.db", read_only=True) as ref:
            assert ref.record("savage-2")["metadata"] == {"desk": 2}
            t = ref.templates("savage-2").astype(np.float64)
        p = emb.embed_image(PHOTOS[3]).templates[0].astype(np.float64)
        assert v.score == pytest.approx(float((t @ p).max()), abs=1e-4)
        with pytest.raises(ServiceError) as e:
            c.identify_photos(b"not a photo")
        assert e.value.status == 415
