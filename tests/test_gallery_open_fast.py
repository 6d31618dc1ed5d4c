"""Opening from a serving folder reads only what every search scans (issue 15, open path).

A read-only ``binary`` gallery maps its compact re-rank arrays (nothing read at open) and checks
them with the float32 file in a background pass; ids and binary codes are checked block by block
as they are read, before the first answer. An altered mapped block is found by the pass (the
gallery says its answers were not final and rebuilds from the store); an altered code block is
refused at open.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.gallery.slots import SlotNames

D = 64
OPTS = {"rerank_store": "int8"}


def _build(path: Path) -> np.ndarray:
    x = pf.normalize(np.random.default_rng(3).standard_normal((1200, D)))
    with pf.Gallery(D, path=path, backend="binary", backend_options=OPTS, serving=True) as g:
        g.enroll_many([f"id{j}" for j in range(1200)], x)
        g.remove("id7")
    return x


def _answers(g: pf.Gallery, q: np.ndarray) -> tuple[bytes, list[list[str]]]:
    a = g.identify_arrays(q, k=5)
    return a.scores.tobytes(), a.identities.tolist()


def _probes(x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(4)
    return pf.normalize(x[:20] + 0.2 * rng.standard_normal((20, D)).astype(np.float32))


def test_read_only_open_maps_the_rerank_arrays_and_verifies_them_in_the_background(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.db"
    x = _build(path)
    q = _probes(x)
    with pf.Gallery(path=path, backend_options=OPTS, serving=False) as g:
        want = _answers(g, q)  # rebuilt from the store: the reference
    _build(path := tmp_path / "h.db")
    with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
        cs = g._backend.compact_store  # type: ignore[attr-defined]
        assert isinstance(cs._arrays["codes"], np.memmap)  # mapped, not read at open
        assert _answers(g, q) == want
        assert g.wait_verified() is True
        s = g.info()["serving"]
        assert s["verified"] is True and s["not_used_because"] is None and s["mapped"]
        assert g.info()["integrity_check_at_open"] == "closed cleanly"


def _flip(tmp_path: Path, name: str, offset: int, bit: int) -> None:
    """Flip ``bit`` of byte ``offset`` of a serving file."""
    f = tmp_path / "g.db.index" / "serving" / name
    raw = bytearray(f.read_bytes())
    raw[offset] ^= bit
    f.write_bytes(bytes(raw))


def test_altered_mapped_compact_block_is_found_and_the_gallery_rebuilds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "g.db"
    x = _build(path)
    q = _probes(x)
    with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
        want = _answers(g, q)
    _flip(
        tmp_path, "compact_codes.bin", 64 * 3 + 5, 0x40
    )  # an int8 code of row 3: could prune the match
    with caplog.at_level(logging.WARNING, logger="pyfacematch.gallery"):
        g = pf.Gallery(path=path, read_only=True, backend_options=OPTS)
        assert g.info()["serving"]["not_used_because"] is None  # nothing of it read at open
        assert g.wait_verified() is False  # the pass found it: answers so far were not final
        assert g.info()["serving"]["verified"] is False
        got = _answers(g, q)  # the next call rebuilds from the store first
    assert got == want
    assert any("compact_codes.bin block 0" in r.getMessage() for r in caplog.records)
    assert not g._m.mapped  # read-only: rebuilt in memory from the store
    g.close()


def test_altered_binary_code_block_is_refused_before_the_first_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "g.db"
    x = _build(path)
    q = _probes(x)
    with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
        want = _answers(g, q)
    _flip(tmp_path, "codes.bin", 100, 1)
    with caplog.at_level(logging.WARNING, logger="pyfacematch.gallery"):
        with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
            why = g.info()["serving"]["not_used_because"]
            assert why is not None and "codes.bin block 0" in why
            assert _answers(g, q) == want


def test_slot_tids_behaves_as_the_dict_it_replaces() -> None:
    from pyfacematch.gallery.slots import SlotTids

    rng = np.random.default_rng(0)
    base = rng.permutation(50).astype(np.int64) + 100
    ref: dict[int, list[int]] = {i: [int(t)] for i, t in enumerate(base)}
    lazy = SlotTids(base)
    for step in range(400):
        op = rng.integers(5)
        k = int(rng.integers(70))
        if op == 0 and k in ref:  # enroll another template of an identity (list changed in place)
            ref[k].append(step)
            lazy[k].append(step)
        elif op == 1:  # remove an identity
            assert ref.pop(k, None) == lazy.pop(k, None)
        elif op == 2:  # a new identity
            ref[k] = []
            lazy[k] = []
        elif op == 3:
            assert (k in ref) == (k in lazy)
        else:
            assert ref.get(k) == lazy.get(k)
        assert len(ref) == len(lazy)
    assert dict(lazy.items()) == ref and sorted(lazy) == sorted(ref)
    assert sorted(map(tuple, lazy.values())) == sorted(map(tuple, ref.values()))
    with pytest.raises(KeyError):
        lazy[10_000]


def test_name_slots_is_built_at_first_use_and_then_a_dict() -> None:
    from pyfacematch.gallery.slots import NameSlots

    names = ["a", "b", "c"]
    ns = NameSlots(names)
    assert ns._d is None  # nothing built at open
    assert ns.get("b") == 1 and "c" in ns and "z" not in ns and len(ns) == 3
    ns["d"] = 3
    assert ns.pop("a") == 0 and dict(ns) == {"b": 1, "c": 2, "d": 3}
    assert names == ["a", "b", "c"]  # the caller's list is not changed


def test_mapped_reopen_finds_every_identity_by_name(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    x = _build(path)
    with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
        assert g._max_templates == 1 and g._m.mapped
        assert isinstance(g._slot_names, SlotNames)  # names from the folder, decoded when read
        assert "id0" in g and "id7" not in g and len(g) == 1199
        assert g.verify("id5", x[5]).score == pytest.approx(1.0, abs=1e-5)
    with pf.Gallery(path=path, backend_options=OPTS) as g:  # writable: enroll and remove by name
        g.remove("id9")
        g.enroll("id9", x[9])
        g.enroll("id5", x[6], on_duplicate="append")  # a second template of id5
        assert len(g) == 1199 and g.n_templates == 1200
    with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
        assert g._max_templates == 2 and g._m.mapped
        assert g.verify("id9", x[9]).score == pytest.approx(1.0, abs=1e-5)


def test_a_plain_reopen_reuses_the_recorded_backend_options(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    x = _build(path)
    q = _probes(x)
    with pf.Gallery(path=path, read_only=True, backend_options=OPTS) as g:
        want = _answers(g, q)
    with pf.Gallery(path=path, read_only=True) as g:  # no options: the recorded int8 store
        assert g._backend.compact_store is not None  # type: ignore[attr-defined]
        assert g.info()["serving"]["not_used_because"] is None and _answers(g, q) == want
    with pf.Gallery(path=path, backend_options={}) as g:  # given explicitly: they win, recorded
        assert g._backend.compact_store is None  # type: ignore[attr-defined]
    with pf.Gallery(path=path, read_only=True) as g:
        assert g._backend.compact_store is None  # type: ignore[attr-defined]
    with pf.Gallery(path=path, backend="exact") as g:  # another backend: its own defaults
        assert g._backend.name == "exact"
