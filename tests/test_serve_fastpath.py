"""The service's per-request fast paths give the same answers as the slow ones.

``unit_rows`` (request bodies to unit float32 rows) against the library's ``as_templates``,
byte for byte; the JSON codec's strictness; the batcher's lanes (a real in-memory gallery):
concurrent requests become fewer gallery calls, every answer equals the direct call, no more
than ``max_inflight`` batches run at once, and close() answers what still waits.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("starlette")

from pyfacematch.errors import InputError, NonFiniteError, ZeroVectorError  # noqa: E402
from pyfacematch.gallery import Gallery  # noqa: E402
from pyfacematch.gallery.validation import as_templates  # noqa: E402
from pyfacematch.serve.batching import Batcher  # noqa: E402
from pyfacematch.serve.bodies import decode_templates, dumps, parse_json, unit_rows  # noqa: E402
from pyfacematch.serve.problems import HTTPProblem  # noqa: E402

DIM = 64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3, 17])
def test_unit_rows_same_bytes_as_as_templates(dtype, n):
    rng = np.random.default_rng(n)
    for _ in range(50):
        scale = 10.0 ** float(rng.integers(-30, 30))
        a = (rng.standard_normal((n, DIM)) * scale).astype(dtype)
        assert unit_rows(a, DIM, "p").tobytes() == as_templates(a, DIM, "p").tobytes()
    tiny = np.full((1, DIM), np.float32(1e-45), np.float32)  # subnormal: not a zero row
    assert unit_rows(tiny, DIM, "p").tobytes() == as_templates(tiny, DIM, "p").tobytes()


def test_unit_rows_typed_errors():
    a = np.ones((2, DIM), np.float32)
    for bad, err in ((np.nan, NonFiniteError), (np.inf, NonFiniteError), (-np.inf, NonFiniteError)):
        b = a.copy()
        b[1, 5] = bad
        with pytest.raises(err, match="row 1"):
            unit_rows(b, DIM, "probes")
    z = a.copy()
    z[1] = 0
    with pytest.raises(ZeroVectorError, match="row 1"):
        unit_rows(z, DIM, "probes")
    body = np.ones((1, DIM), "<f4")
    body[0, 3] = np.nan
    with pytest.raises(NonFiniteError):
        decode_templates(body.tobytes(), "application/octet-stream", DIM, "probes")


def test_json_codec_is_strict_and_compact():
    for bad in (b'{"probes": [[NaN, 1]]}', b'{"a": Infinity}', b"\xff\xfe", b"{not json"):
        with pytest.raises(HTTPProblem) as e:
            parse_json(bad)
        assert e.value.status == 400
    obj = parse_json(b'{"probes": [[1, 2.5, true]]}')
    with pytest.raises(HTTPProblem, match="only numbers"):  # a bool is not a number
        decode_templates(b"", "application/json", 3, "probes", field="probes", obj=obj)
    assert dumps({"a": 0.1 + 0.2, "b": None, "c": "é"}) == '{"a":0.30000000000000004,"b":null,"c":"é"}'.encode()  # fmt: skip


class _CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that records how many calls run at once."""

    def __init__(self) -> None:
        super().__init__(4)
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.calls = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        def run():  # type: ignore[no-untyped-def]
            with self.lock:
                self.now += 1
                self.calls += 1
                self.most = max(self.most, self.now)
            try:
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.now -= 1

        return super().submit(run)


@pytest.mark.parametrize("inflight", [1, 2])
def test_batcher_lanes_gather_and_answer_each_request(inflight):
    rng = np.random.default_rng(3)
    g = Gallery(dim=DIM, backend="exact")
    t = as_templates(rng.standard_normal((200, DIM)), DIM, "t")
    g.enroll_many([f"p{i}" for i in range(200)], t)
    probes = as_templates(t[:60] + 0.3 * rng.standard_normal((60, DIM)), DIM, "p")
    want = [r.candidates for r in g.identify(probes, k=3)]
    ex = _CountingExecutor()
    rows: list[int] = []
    b = Batcher(ex, max_wait_ms=5.0, max_batch=16, max_inflight=inflight,
                on_batch=lambda kind, n: rows.append(n))  # fmt: skip

    async def main() -> list:
        async def one(i: int):
            await asyncio.sleep(0.0005 * (i % 7))
            return await b.identify("g", g, probes[i : i + 1], 3, None)

        ident = await asyncio.gather(*(one(i) for i in range(60)))
        # verify requests share the lane machinery: one unknown identity fails alone
        ver = await asyncio.gather(
            *(b.verify("g", g, f"p{i}", t[i : i + 1], None) for i in range(5)),
            b.verify("g", g, "nobody", t[:1], None),
            return_exceptions=True,
        )
        await b.close()
        return [ident, ver]

    ident, ver = asyncio.run(main())
    ex.shutdown()
    assert [r[0].candidates for r in ident] == want
    assert sum(rows) == 66  # every request scored exactly once (60 identify + 6 verify)
    assert max(rows) <= 16 and len(rows) < 66  # gathered, never beyond max_batch
    assert ex.most <= inflight  # identify ended before verify began: one lane at a time
    assert [round(v.score, 5) for v in ver[:5]] == [1.0] * 5
    assert type(ver[5]).__name__ == "UnknownIdentityError"


class _SlowExecutor(_CountingExecutor):
    """Each gallery call takes at least ``seconds`` (a core call at a large gallery)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        def slow():  # type: ignore[no-untyped-def]
            threading.Event().wait(self.seconds)
            return fn(*args, **kwargs)

        return super().submit(slow)


def _closed_loop(b: Batcher, g: Gallery, t: np.ndarray, clients: int, spread: int) -> list:
    """``clients`` closed-loop clients, 8 identify requests each; client i sends its next request
    ``(i + r) % spread`` ms after its answer (the answer's way back). Returns each client's top-1s."""

    async def main() -> list:
        async def client(i: int) -> list:
            got = []
            for r in range(8):
                res = await b.identify("g", g, t[i : i + 1], 1, None)
                got.append(res[0].candidates[0].identity)
                await asyncio.sleep(0.001 * ((i + r) % spread))
            return got

        out = await asyncio.gather(*(client(i) for i in range(clients)))
        await b.close()
        return out

    return asyncio.run(main())


@pytest.mark.parametrize("refill", [True, False])
def test_batcher_refill_keeps_a_closed_loop_of_clients_in_one_batch(refill):
    """16 clients, each sending its next request a few ms after its answer (HTTP turn-around,
    spread over 0-7 ms, longer than ``max_wait_ms``): with refill, a freed slot waits for the
    answered clients, so batches hold (nearly) all 16; without it, the waiting ones start alone
    and the clients split into cohorts that alternate with smaller batches."""
    rng = np.random.default_rng(5)
    g = Gallery(dim=DIM, backend="exact")
    t = as_templates(rng.standard_normal((50, DIM)), DIM, "t")
    g.enroll_many([f"p{i}" for i in range(50)], t)
    ex = _SlowExecutor(0.03)
    rows: list[int] = []
    b = Batcher(ex, max_wait_ms=1.0, max_batch=64, max_inflight=1,
                max_refill_ms=50.0 if refill else 0.0,
                on_batch=lambda kind, n: rows.append(n))  # fmt: skip

    out = _closed_loop(b, g, t, clients=16, spread=8)
    ex.shutdown()
    assert out == [[f"p{i}"] * 8 for i in range(16)]  # every request answered, its own result
    assert sum(rows) == 16 * 8
    mean = sum(rows) / len(rows)
    if refill:
        assert mean >= 12, rows
    else:  # the cohorts the refill exists for (what the service did before)
        assert mean < 10, rows


def test_batcher_merges_api_keys_in_one_call_and_audits_each_key_apart(tmp_path):
    """Identify requests of different API keys share one core call; the audit trail still gets
    one record per key, with that key's probe count and only its accepted identities."""
    import json
    import sqlite3

    rng = np.random.default_rng(11)
    t = as_templates(rng.standard_normal((40, DIM)), DIM, "t")
    path = tmp_path / "g.db"
    with Gallery.open(path, dim=DIM, backend="exact") as g:
        g.enroll_many([f"p{i}" for i in range(40)], t)
    g = Gallery.open(path)
    ex = _CountingExecutor()
    rows: list[int] = []
    b = Batcher(ex, max_wait_ms=200.0, max_batch=64, on_batch=lambda kind, n: rows.append(n))
    who = ["term-a", "term-b", "term-a", None, "term-b", "term-a"]  # None: the gallery's actor
    probe_rows = [[0, 1], [2], [3], [4], [5, 6, 7], [8]]

    async def main() -> list:
        out = await asyncio.gather(
            *(b.identify("g", g, t[r], 1, 0.5, actor=a) for a, r in zip(who, probe_rows))
        )
        await b.close()
        return out

    out = asyncio.run(main())
    ex.shutdown()
    assert rows == [9] and ex.calls == 1  # one batch, one gallery call for all three callers
    for r, res in zip(probe_rows, out):  # each request gets its own rows back
        assert [x.identity for x in res] == [f"p{i}" for i in r]
    g.audit_flush()
    g.close()
    with sqlite3.connect(path) as c:
        recs = c.execute("SELECT actor, detail FROM audit WHERE action = 'identify'").fetchall()
    got = sorted((str(a), json.loads(d)["probes"], json.loads(d)["accepted"]) for a, d in recs)
    assert got == [
        ("None", 1, ["p4"]),
        ("term-a", 4, ["p0", "p1", "p3", "p8"]),
        ("term-b", 4, ["p2", "p5", "p6", "p7"]),
    ]
    assert Gallery.open(path, read_only=True).audit_verify()["ok"]


def test_identify_arrays_actor_rows_must_cover_the_probes():
    rng = np.random.default_rng(2)
    g = Gallery(dim=DIM, backend="exact")
    t = as_templates(rng.standard_normal((5, DIM)), DIM, "t")
    g.enroll_many([f"p{i}" for i in range(5)], t)
    want = g.identify_arrays(t[:3], k=2).scores
    assert np.array_equal(g.identify_arrays(t[:3], k=2, actor_rows=[("a", 2), ("b", 1)]).scores, want)  # fmt: skip
    for bad in ([("a", 2)], [("a", 2), ("b", 2)], [("a", 3), ("b", 0)], [("a", True), ("b", 2)]):
        with pytest.raises(InputError, match="actor_rows"):
            g.identify_arrays(t[:3], actor_rows=bad)
    with pytest.raises(InputError, match="not both"):
        g.identify_arrays(t[:3], actor="x", actor_rows=[("a", 3)])


def test_batcher_two_slots_share_a_closed_loop_of_clients_evenly():
    """32 closed-loop clients, 2 slots: each batch takes at most its fair share of the lane (the
    rows waiting and running over the slots), so both slots run batches of ~16 side by side.
    Before, a slot took everything waiting (~all 32) and the other got the stragglers: one core
    busy at a time (1.1 of 2 cores at 1M in bench/serve.py)."""
    rng = np.random.default_rng(6)
    g = Gallery(dim=DIM, backend="exact")
    t = as_templates(rng.standard_normal((50, DIM)), DIM, "t")
    g.enroll_many([f"p{i}" for i in range(50)], t)
    ex = _SlowExecutor(0.03)
    rows: list[int] = []
    b = Batcher(ex, max_wait_ms=1.0, max_batch=64, max_inflight=2, max_refill_ms=50.0,
                on_batch=lambda kind, n: rows.append(n))  # fmt: skip

    out = _closed_loop(b, g, t, clients=32, spread=4)
    ex.shutdown()
    assert out == [[f"p{i % 50}"] * 8 for i in range(32)]
    assert sum(rows) == 32 * 8
    assert ex.most == 2  # both slots ran at once
    assert max(rows) <= 16, rows  # nobody took more than half of the 32 clients
    assert sum(rows) / len(rows) >= 5, rows  # and the batches stayed batches (timing: ~8-16)
