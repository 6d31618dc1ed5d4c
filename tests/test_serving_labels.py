"""Serving folder v2: the row → identity mapping (and masks) live in the folder, so a mapped open
reads no per-identity row from SQLite; a stale, altered or old-format mapping is refused and
rebuilt from the store with a log line saying why; a removal after reopen is never returned and
its label bytes are overwritten in place."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.gallery.slots import SlotNames
from pyfacematch.gallery.store import Store

D = 32
OPTS = {"rerank_store": "int8"}


def _x(rng: np.random.Generator, n: int) -> np.ndarray:
    return pf.normalize(rng.standard_normal((n, D)))


def _answers(g: pf.Gallery, q: np.ndarray) -> tuple[bytes, list[Any]]:
    a = g.identify_arrays(q, k=5)
    return a.scores.tobytes(), a.identities.tolist()


def _build(path: Path, rng: np.random.Generator, **kw: Any) -> np.ndarray:
    x = _x(rng, 700)
    g = pf.Gallery(D, path=path, backend="binary", backend_options=OPTS, serving=True, **kw)
    # names of several UTF-8 widths, and one with a NUL (allowed in identity ids)
    names = [f"p{j}-é" if j % 3 else f"人{j}\x00x" for j in range(600)]
    g.enroll_many(names, x[:600])
    g.remove(names[5])  # swap-with-last in the folder: rows no longer in template-id order
    g.enroll_many([f"late{j}" for j in range(50)], x[600:650])
    g.close()
    return x


def _no_row_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a mapped open read the store's per-identity rows")

    monkeypatch.setattr(Store, "load_index_rows", refuse)
    monkeypatch.setattr(Store, "load_all", refuse)


def test_mapped_open_reads_no_identity_rows_and_answers_byte_identically(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "g.db"
    x = _build(path, rng)
    q = pf.normalize(x[:60] + 0.1 * rng.standard_normal((60, D)).astype(np.float32))
    with pf.Gallery(path=path, backend_options=OPTS) as g:  # writable: the answers before close
        want = _answers(g, q)
        names = g.identities()
    with monkeypatch.context() as mp:
        _no_row_reads(mp)
        for ro in (True, False):
            with pf.Gallery(path=path, read_only=ro, backend_options=OPTS) as g:
                assert g.info()["serving"]["not_used_because"] is None
                assert isinstance(g._slot_names, SlotNames)
                assert _answers(g, q) == want
                assert sorted(g.identities()) == sorted(names) and len(g) == 649
                assert "人0\x00x" in g and "p5-é" not in g and "p4-é" in g
                assert g.verify("p4-é", x[4]).score == pytest.approx(1.0, abs=1e-5)
                assert g.wait_verified()  # labels, compact rows and float32 all checked
    # the same answers from a gallery rebuilt from the store alone
    for suffix in ("", ".key", ".audit.key"):
        shutil.copy(str(path) + suffix, str(tmp_path / "r.db") + suffix)
    with pf.Gallery(path=tmp_path / "r.db", read_only=True, backend_options=OPTS) as r:
        assert r.info()["serving"]["not_used_because"] == "no serving folder"
        assert _answers(r, q) == want


def test_masked_gallery_takes_its_masks_from_the_folder(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.db"
    x = _x(rng, 300)
    masks = rng.integers(1, 4, 300).astype(np.uint64)
    with pf.Gallery(D, path=path, blocks=[0, 16, 32], backend="exact", serving=True) as g:
        g.enroll_many([f"m{j}" for j in range(300)], x, masks)
        g.remove("m7")
    q = pf.normalize(x[:20] + 0.1 * rng.standard_normal((20, D)).astype(np.float32))
    qm = np.full(20, 1, np.uint64)
    with pf.Gallery(path=path, read_only=True, serving=False) as r:  # rebuilt from the store
        want = r.identify_arrays(q, k=5, masks=qm)
    with monkeypatch.context() as mp:
        _no_row_reads(mp)
        with pf.Gallery(path=path, read_only=True) as g:
            assert g.info()["serving"]["not_used_because"] is None
            got = g.identify_arrays(q, k=5, masks=qm)
    assert got.scores.tobytes() == want.scores.tobytes()
    assert got.identities.tolist() == want.identities.tolist()


def _reopen_rebuilds(
    path: Path, q: np.ndarray, want: Any, expect: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pyfacematch.gallery"):
        g = pf.Gallery(path=path, backend_options=OPTS)
    why = g.info()["serving"]["not_used_because"]
    assert why is not None and expect in why, why
    assert any(
        "rebuilding from the store" in r.getMessage() and expect in r.getMessage()
        for r in caplog.records
    )
    assert _answers(g, q) == want
    g.close()  # written again: the next open maps it
    with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
        assert g.info()["serving"]["not_used_because"] is None
        assert _answers(g, q) == want


def test_stale_altered_or_old_mapping_is_refused_and_rebuilt(
    tmp_path: Path, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "g.db"
    x = _build(path, rng)
    q = pf.normalize(x[:40] + 0.1 * rng.standard_normal((40, D)).astype(np.float32))
    srv = tmp_path / "g.db.index" / "serving"
    with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
        want = _answers(g, q)
    # one label byte changed (another person's name on a row): its checksum fails at open
    f = srv / "labels.bin"
    raw = bytearray(f.read_bytes())
    raw[3] ^= 0x01
    f.write_bytes(bytes(raw))
    _reopen_rebuilds(path, q, want, "altered", caplog)
    # label offsets truncated
    with open(srv / "label_at.bin", "r+b") as fh:
        fh.truncate(16)
    _reopen_rebuilds(path, q, want, "truncated", caplog)
    # the store changed behind the folder's back (same generation): the counts differ
    con = sqlite3.connect(path)
    tid = con.execute("SELECT max(tid) FROM templates").fetchone()[0]
    con.execute("DELETE FROM templates WHERE tid = ?", (tid,))
    con.commit()
    con.close()
    with pf.Gallery(path=path, serving=False, read_only=True, backend_options=OPTS) as r:
        want2 = _answers(r, q)
    _reopen_rebuilds(path, q, want2, "stale: it records templates = 649, the store 648", caplog)
    with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
        assert "late49" not in g and len(g) == 648  # the deleted row is not served
        assert g.identify_arrays(x[649:650], k=1).identities[0, 0] != "late49"
    # a version-1 folder (no labels) from an older pyfacematch
    import json

    man = json.loads((srv / "manifest.json").read_text())
    man["version"] = 1
    (srv / "manifest.json").write_text(json.dumps(man))
    _reopen_rebuilds(path, q, want2, "version 1", caplog)


def test_removal_after_reopen_is_never_returned_and_its_label_is_overwritten(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    path = tmp_path / "g.db"
    x = _build(path, rng)
    srv = tmp_path / "g.db.index" / "serving"
    gone = ["p10-é", "人12\x00x", "late49"]  # late49 is the last row: no move, tail zeroed
    with pf.Gallery(path=path, backend_options=OPTS) as g:
        assert g._m.mapped and isinstance(g._slot_names, SlotNames)
        for name in gone:
            g.remove(name)
        for name in gone:
            assert name not in g
        a = g.identify_arrays(x[[10, 12, 649]], k=20)
        assert not set(gone) & set(a.identities.ravel().tolist())
    blob = (srv / "labels.bin").read_bytes()
    for name in gone:  # overwritten in place, not left in the file
        assert name.encode() not in blob
    assert "p11-é".encode() in blob
    with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
        assert g.info()["serving"]["not_used_because"] is None
        a = g.identify_arrays(x[[10, 12, 649]], k=20)
        assert not set(gone) & set(a.identities.ravel().tolist())
        assert a.identities[0, 0] != "p10-é" and len(g) == 646
        assert g.identify_arrays(x[11:12], k=1).identities[0, 0] == "p11-é"


def test_slot_names_behave_as_a_list() -> None:
    names = ["a", "bé", "人", "d\x00"]
    enc = [s.encode() for s in names]
    blob = b"".join(enc)
    at = np.array([[sum(map(len, enc[:i])), len(enc[i])] for i in range(len(enc))], np.int64)
    sn = SlotNames(blob, at)
    assert list(sn) == names and len(sn) == 4 and sn[-1] == "d\x00" and sn[1:3] == names[1:3]
    sn.append("e")
    sn[1] = None
    assert list(sn) == ["a", None, "人", "d\x00", "e"] and sn[4] == "e"
    with pytest.raises(IndexError):
        sn[5]
    with pytest.raises(TypeError):
        del sn[0]


def test_manifest_records_backend_options_and_tuning(
    tmp_path: Path, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    path = tmp_path / "g.db"
    x = _build(path, rng)
    q = pf.normalize(x[:40] + 0.1 * rng.standard_normal((40, D)).astype(np.float32))
    srv = tmp_path / "g.db.index" / "serving"
    meta = json.loads((srv / "manifest.json").read_text())["meta"]
    assert meta["options"] == OPTS and "scan_depth" in meta["params"]
    with pf.Gallery(path=path, read_only=True) as g:
        want = _answers(g, q)
    # the store's tuning record lost: the folder's (authenticated) tuned state is used
    con = sqlite3.connect(path)
    gone = con.execute("DELETE FROM meta WHERE key = 'tuning:binary'").rowcount
    con.commit()
    con.close()
    assert gone >= 1
    with pf.Gallery(path=path, read_only=True) as g:
        assert g.info()["serving"]["not_used_because"] is None
        assert g._backend.params()["scan_depth"] == meta["params"]["scan_depth"]
        assert _answers(g, q) == want
    # opened with other options: the folder is not used (rebuilt, and written again)
    other = {**OPTS, "min_shortlist": 77}
    with caplog.at_level(logging.WARNING, logger="pyfacematch.gallery"):
        with pf.Gallery(path=path, backend_options=other) as g:
            why = g.info()["serving"]["not_used_because"]
            assert why is not None and "min_shortlist" in why, why
    with pf.Gallery(path=path, read_only=True, backend_options=other) as g:
        assert g.info()["serving"]["not_used_because"] is None


def test_recentring_on_growth_rewrites_only_the_codes(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    path = tmp_path / "g.db"
    x = _x(rng, 900) + 0.3  # a mean far from 0: the centre moves as the gallery grows
    x = pf.normalize(x)
    srv = tmp_path / "g.db.index" / "serving"
    with pf.Gallery(D, path=path, backend="binary", backend_options=OPTS, serving=True) as g:
        g.enroll_many([f"a{j}" for j in range(300)], x[:300])
        centre = g._backend.center.copy()  # type: ignore[attr-defined]
        ino = (srv / "float32.bin").stat().st_ino
        g.enroll_many([f"a{j}" for j in range(300, 900)], x[300:900])  # ≥ 2× tuned: re-centred
        assert not np.array_equal(centre, g._backend.center)  # type: ignore[attr-defined]
        assert g.info()["serving"]["mapped"] and g._sf is not None and g._sf.folder is not None
        assert (srv / "float32.bin").stat().st_ino == ino  # appended to, not written afresh
        q = pf.normalize(x[:50] + 0.1 * rng.standard_normal((50, D)).astype(np.float32))
        want = _answers(g, q)
    with pf.Gallery(path=path, read_only=True) as g:  # the folder's codes are the new centre's
        assert g.info()["serving"]["not_used_because"] is None and g.wait_verified()
        assert _answers(g, q) == want
    for suffix in ("", ".key", ".audit.key"):
        shutil.copy(str(path) + suffix, str(tmp_path / "r.db") + suffix)
    with pf.Gallery(path=tmp_path / "r.db", read_only=True) as r:  # rebuilt from the store
        assert _answers(r, q) == want
