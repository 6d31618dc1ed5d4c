"""``Gallery.acting_as``: the audit actor of one thread's writes never leaks to another thread.

A service runs each request's writes inside ``acting_as(key_id)`` while other threads search,
calibrate, or finish an erasure in the background. Only the writes of the block's own thread may
be recorded under the block's actor; the rest keep the gallery's actor (or the ``actor=`` they
pass). Checked on the audit table itself (SQLite, read directly).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np

from pyfacematch.gallery import Gallery


def _trail(path: Path) -> list[tuple[str | None, str]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return [tuple(r) for r in con.execute("SELECT actor, action FROM audit ORDER BY seq")]


def test_other_threads_keep_their_actor_while_a_block_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path = tmp_path / "g.db"
    with Gallery.open(path, dim=16, backend="exact", actor="service") as g:
        g.enroll_many(
            [f"p{i}" for i in range(20)], rng.standard_normal((20, 16)).astype(np.float32)
        )
        inside, release = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def request_a() -> None:
            try:
                with g.acting_as("key-a"):
                    g.enroll("alice", rng.standard_normal((1, 16)).astype(np.float32))
                    inside.set()
                    release.wait(10)  # the request's block is still open
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        t = threading.Thread(target=request_a)
        t.start()
        assert inside.wait(10)
        try:
            # meanwhile, in this thread: a calibration and an actor-less search and verify
            g.calibrate(rng.uniform(-0.5, 0.5, 2000), fmr=1e-2)
            g.identify(rng.standard_normal((2, 16)).astype(np.float32), k=3)
            g.verify("p3", rng.standard_normal(16).astype(np.float32))
            g.audit_flush()
        finally:
            release.set()
            t.join(10)
        assert not errors
        g.remove("p4")  # after the block: the gallery's actor again
        g.audit_flush()
    rows = _trail(path)
    by_action = {}
    for actor, action in rows:
        by_action.setdefault(action, set()).add(actor)
    # only the block's own write is recorded under its key
    assert [a for a, act in rows if act == "enroll"][-1] == "key-a", rows
    assert by_action["calibrate"] == {"service"}, rows
    assert by_action["identify"] == {"service"} and by_action["verify"] == {"service"}, rows
    assert by_action["remove"] == {"service"}, rows
    assert {a for a, _ in rows} == {"service", "key-a"}


def test_acting_as_nests_and_restores(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    t = np.eye(8, dtype=np.float32)
    with Gallery.open(path, dim=8, backend="exact", actor="svc") as g:
        with g.acting_as("outer"):
            g.enroll("a", t[:1])
            with g.acting_as("inner"):
                g.enroll("b", t[1:2])
            with g.acting_as(None):  # None keeps the current actor
                g.enroll("c", t[2:3])
            g.enroll("d", t[3:4])
        g.enroll("e", t[4:5])
        assert g.actor == "svc"
    assert [a for a, act in _trail(path) if act == "enroll"] == [
        "outer",
        "inner",
        "outer",
        "outer",
        "svc",
    ]
