"""Audit trail: chained records, signed checkpoints, each kind of tampering named, export, prune."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import unit_rows

from pyfacematch.gallery import Gallery
from pyfacematch.gallery.secret import ENV_VAR

DIM = 16


pytestmark = pytest.mark.usefixtures("no_key_env")


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    return unit_rows(rng, n, DIM)


def _gallery(db: Path, n_search: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = _unit(rng, 8)
    with Gallery(DIM, path=db, backend="exact", actor="clerk-1", purpose="access") as g:
        for i in range(8):
            g.enroll(f"p{i}", x[i : i + 1])
        g.grant_consent("p1", "payment", source="form")
        g.remove("p7")
        for _ in range(n_search):
            g.identify(x[:3], k=2, threshold=0.9, actor="teller-9")
        g.verify("p2", x[2], threshold=0.9)
    return x


def _sql(db: Path, sql: str, *args: object) -> None:
    con = sqlite3.connect(db)
    con.execute(sql, args)
    con.commit()
    con.close()


def _verify(db: Path, *extra: str) -> tuple[int, dict]:
    with Gallery.open(db, read_only=True) as g:
        rep = g.audit_verify()
    return (0 if rep["ok"] else 1), rep


def test_trail_records_who_what_how_many_without_biometric_data(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    x = _gallery(db)
    code, rep = _verify(db)
    assert code == 0 and rep["first_bad"] is None and rep["checkpoints"] >= 1
    con = sqlite3.connect(db)
    rows = con.execute("SELECT actor, action, identity, detail FROM audit ORDER BY seq").fetchall()
    con.close()
    actions = [r[1] for r in rows]
    assert actions.count("enroll") == 8 and "remove" in actions and "consent-grant" in actions
    ident = [r for r in rows if r[1] == "identify"]
    assert len(ident) == 5 and all(r[0] == "teller-9" for r in ident)
    d = json.loads(ident[0][3])
    assert d == {"probes": 3, "k": 2, "purpose": "access", "accepted": ["p0", "p1", "p2"]}
    assert [r[0] for r in rows if r[1] == "enroll"] == ["clerk-1"] * 8
    blob = json.dumps(rows).encode()
    for v in x:
        assert v.tobytes()[:16] not in blob
        assert f"{v[0]:.6f}" not in blob.decode()


@pytest.mark.parametrize("kind", ["edit", "delete", "insert", "reorder", "rechain", "truncate"])
def test_each_kind_of_tampering_is_named(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "g.db"
    _gallery(db)
    if kind == "edit":
        _sql(db, "UPDATE audit SET identity='someone-else' WHERE seq=4")
        want = 4
    elif kind == "delete":
        _sql(db, "DELETE FROM audit WHERE seq=5")
        want = 6
    elif kind == "insert":  # a record slipped in between 5 and 6 (renumbered after)
        _sql(db, "UPDATE audit SET seq = seq + 1000 WHERE seq >= 6")
        _sql(db, "UPDATE audit SET seq = seq - 999 WHERE seq >= 1006")
        _sql(
            db,
            "INSERT INTO audit(seq, ts, action, identity, detail, actor, prev, hash)"
            " VALUES (6, 1.0, 'enroll', 'ghost', 'templates=1', 'x', 'ab', 'cd')",
        )
        want = 6
    elif kind == "reorder":  # records 3 and 4 exchange their places
        _sql(db, "UPDATE audit SET seq=-1 WHERE seq=3")
        _sql(db, "UPDATE audit SET seq=3 WHERE seq=4")
        _sql(db, "UPDATE audit SET seq=4 WHERE seq=-1")
        want = 3
    elif kind == "rechain":  # an insider edits a record and recomputes every hash after it
        from pyfacematch.security.audit import genesis, record_hash

        con = sqlite3.connect(db)
        con.execute("UPDATE audit SET identity='nobody' WHERE seq=2")
        uid = con.execute("SELECT value FROM meta WHERE key='uuid'").fetchone()[0]
        prev = genesis(uid)
        for seq, ts, actor, action, ident, detail in con.execute(
            "SELECT seq, ts, actor, action, identity, detail FROM audit ORDER BY seq"
        ).fetchall():
            h = record_hash(prev, seq, ts, actor, action, ident, detail)
            con.execute("UPDATE audit SET prev=?, hash=? WHERE seq=?", (prev, h, seq))
            prev = h
        con.commit()
        con.close()
        want = None  # caught by the signed checkpoint (HMAC under the audit key)
    else:  # the newest records deleted, checkpoints left
        _sql(db, "DELETE FROM audit WHERE seq >= 10")
        want = 10
    code, rep = _verify(db)
    assert code == 1, rep
    if want is not None:
        assert rep["first_bad"]["seq"] == want, rep
    else:
        assert "checkpoint" in rep["first_bad"]["reason"], rep


def test_truncating_everything_after_the_last_checkpoint_needs_an_anchored_head(
    tmp_path: Path,
) -> None:
    db = tmp_path / "g.db"
    _gallery(db)
    code, rep = _verify(db)
    head = rep["head"]
    with Gallery.open(db) as g:  # more records, then an insider deletes them and the checkpoint
        g.enroll("late", _unit(np.random.default_rng(5), 1))
        later = g.audit_verify()["head"]
    _sql(db, f"DELETE FROM audit WHERE seq > {head['seq']}")
    _sql(db, f"DELETE FROM audit_checkpoints WHERE seq > {head['seq']}")
    assert _verify(db)[0] == 0  # undetectable from the file alone (documented)
    with Gallery.open(db, read_only=True) as g:
        rep2 = g.audit_verify(expect_head=(later["seq"], later["hash"]))
    assert not rep2["ok"] and rep2["first_bad"]["seq"] == later["seq"]


def test_export_and_prune_keep_the_chain_verifiable(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    _gallery(db)
    time.sleep(0.05)
    cut = time.time()
    time.sleep(0.05)
    with Gallery.open(db) as g:
        g.enroll("after", _unit(np.random.default_rng(1), 1))
        n = g.audit_prune(cut)
        assert n > 10
        rep = g.audit_verify()
        assert rep["ok"], rep
    assert _verify(db)[0] == 0
    _sql(db, "UPDATE meta SET value=json_set(value, '$.seq', 3) WHERE key='audit_anchor'")
    assert _verify(db)[0] == 1  # a forged anchor (records deleted without prune) is caught


def test_cli_audit_verify_export(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    _gallery(db)
    env = {k: v for k, v in __import__("os").environ.items() if k != ENV_VAR}
    r = subprocess.run(
        [sys.executable, "-m", "pyfacematch", "audit", "export", "-g", str(db), "-o", str(tmp_path / "t.jsonl")],
        capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert lines[0]["seq"] == 1 and any("checkpoint" in x for x in lines)
    _sql(db, "UPDATE audit SET detail='templates=9' WHERE seq=3")
    r = subprocess.run(
        [sys.executable, "-m", "pyfacematch", "audit", "verify", "-g", str(db)],
        capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1
    assert b"first bad record: 3" in r.stderr


def test_search_records_are_written_in_the_background_and_the_writer_stops_when_idle(
    tmp_path: Path,
) -> None:
    import threading

    db = tmp_path / "g.db"
    x = _unit(np.random.default_rng(2), 4)
    g = Gallery(DIM, path=db, backend="exact")
    g.enroll_many(["a", "b", "c", "d"], x)
    for _ in range(3):
        g.identify(x[:2], k=1, actor="bg")
    deadline = time.time() + 10
    n = 0
    while time.time() < deadline:
        con = sqlite3.connect(db)
        n = con.execute("SELECT count(*) FROM audit WHERE action='identify'").fetchone()[0]
        con.close()
        if n == 3:
            break
        time.sleep(0.2)
    assert n == 3  # written without close(), by the writer thread
    while time.time() < deadline and any(
        t.name == "pyfacematch-audit" for t in threading.enumerate()
    ):
        time.sleep(0.1)
    assert not any(t.name == "pyfacematch-audit" for t in threading.enumerate())
    g.close()
    assert _verify(db)[0] == 0


def test_close_does_not_wait_for_the_audit_writers_next_tick(tmp_path, monkeypatch):
    # the writer thread gathers search records for flush_seconds; close() wakes it (a CLI job
    # paid up to half a second at every exit before), and the records still reach the trail
    import time

    import numpy as np

    import pyfacematch as pf
    from pyfacematch.gallery.audit import AuditTrail, read_records

    monkeypatch.setattr(AuditTrail, "flush_seconds", 30.0)
    path = tmp_path / "g.db"
    x = np.eye(8, 16, dtype=np.float32)
    g = pf.Gallery.open(path, dim=16)
    g.enroll_many([f"p{i}" for i in range(8)], x)
    g.identify(x[3])
    t0 = time.monotonic()
    g.close()
    assert time.monotonic() - t0 < 5.0
    from pyfacematch.gallery.store import Store

    s = Store(path)
    try:
        assert any(r.action == "identify" for r in read_records(s))
    finally:
        s.close()


def test_batched_search_records_equal_one_by_one(tmp_path: Path) -> None:
    """append_many_in (the writer thread's flush) writes the rows append_in would, byte for byte,
    checkpoints included, and the trail verifies."""
    import shutil

    from pyfacematch.gallery.audit import CHECKPOINT_EVERY

    db = tmp_path / "a.db"
    _gallery(db, n_search=1)
    for suffix in ("", ".audit.key"):
        shutil.copy(str(db) + suffix, str(tmp_path / "b.db") + suffix)
    n = CHECKPOINT_EVERY + 37  # crosses a checkpoint seq
    recs = [(1.7e9 + i, f"k{i % 3}", "verify", None, json.dumps({"i": i})) for i in range(n)]
    rows = {}
    for name, many in (("a.db", False), ("b.db", True)):
        with Gallery.open(tmp_path / name) as g:
            trail = g._audit
            with g._store.transaction() as c:
                if many:
                    trail.append_many_in(c, recs)
                else:
                    for ts, actor, action, ident, text in recs:
                        trail.append_in(c, action, ident, text, actor=actor, ts=ts)
        con = sqlite3.connect(tmp_path / name)
        rows[name] = (
            con.execute("SELECT * FROM audit ORDER BY seq").fetchall(),
            con.execute("SELECT seq, head, mac FROM audit_checkpoints ORDER BY seq").fetchall(),
        )
        con.close()
        assert _verify(tmp_path / name)[0] == 0
    assert rows["a.db"] == rows["b.db"]
    assert len(rows["a.db"][1]) >= 1


def test_bulk_enroll_chains_one_record_per_identity_in_one_statement(tmp_path: Path) -> None:
    """enroll_many writes the trail through append_many_in: one chained record per identity
    (names, actor, template counts), across a checkpoint seq, and the trail verifies; a
    tombstoned id in the batch is still refused with nothing written."""
    from pyfacematch.errors import ConsentError
    from pyfacematch.gallery.audit import CHECKPOINT_EVERY

    db = tmp_path / "g.db"
    rng = np.random.default_rng(3)
    n = CHECKPOINT_EVERY + 50
    x = _unit(rng, n + 3)
    names = [f"b{i}" for i in range(n)] + ["b0", "b1", "b2"]  # three get a second template
    with Gallery(DIM, path=db, backend="exact", actor="bulk-1") as g:
        g.enroll("gone", x[:1])
        g.remove("gone")
        g.enroll_many(names, x, on_duplicate="append")
    code, rep = _verify(db)
    assert code == 0 and rep["first_bad"] is None and rep["checkpoints"] >= 1
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT actor, action, identity, detail FROM audit WHERE action='enroll' ORDER BY seq"
    ).fetchall()
    con.close()
    bulk = [r for r in rows if r[2] != "gone"]
    assert [r[2] for r in bulk] == [f"b{i}" for i in range(n)]  # every enrollment, in order
    assert all(r[0] == "bulk-1" for r in bulk)
    assert [r[3] for r in bulk[:4]] == ["templates=2"] * 3 + ["templates=1"]
    with Gallery(DIM, path=tmp_path / "c.db", backend="exact", purpose="access") as g:
        g.enroll_many(["c0", "c1"], x[:2])
        g.withdraw_consent("c1", "access")  # opted out of every purpose: tombstoned
        with pytest.raises(ConsentError, match="'c1' withdrew consent"):
            g.enroll_many([f"n{i}" for i in range(600)] + ["c1"], _unit(rng, 601))
        assert "n0" not in g and len(g) == 1


def test_record_hash_format_is_fixed():
    """The chain's canonical form never changes: a trail written by any version verifies in every
    later one (this hash was computed with ``json.dumps(..., ensure_ascii=True,
    separators=(",", ":"))`` over [seq, repr(ts), actor, action, identity, detail])."""
    from pyfacematch.security.audit import record_hash

    h = record_hash("0" * 64, 1, 1700000000.25, "clerk-1", "enroll", "alice", '{"templates":1}')
    assert h == "8fb33fb26d6221ab1010ce22fa7d6716115baef41550074002da5fd18665c04f"
    # non-ASCII names are escaped, not hashed as UTF-8
    assert record_hash("0" * 64, 2, 1.0, None, "remove", "Zoë", None) != record_hash(
        "0" * 64, 2, 1.0, None, "remove", "Zoe", None
    )
