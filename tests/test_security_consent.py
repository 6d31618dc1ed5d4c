"""Consent per purpose: filtering inside the search (vs a dict model), expiry, opt-out tombstones."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import unit_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyfacematch.errors import ConsentError, InputError, NoConsentError
from pyfacematch.gallery import Gallery

DIM = 16
PURPOSES = ("payment", "access", "marketing")


pytestmark = pytest.mark.usefixtures("no_key_env")


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    return unit_rows(rng, n, DIM)


# one identity: its template count and, per purpose, None (no consent), "past" or "future"
_identity = st.tuples(
    st.integers(1, 3),
    st.fixed_dictionaries(
        {p: st.sampled_from([None, None, "past", "future", "never"]) for p in PURPOSES}
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    people=st.lists(_identity, min_size=1, max_size=40),
    withdraw=st.lists(st.tuples(st.integers(0, 39), st.sampled_from(PURPOSES)), max_size=8),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_purpose_filter_matches_a_dict_model(
    people: list[tuple[int, dict[str, str | None]]],
    withdraw: list[tuple[int, str]],
    k: int,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    now = time.time()
    g = Gallery(DIM, backend="exact")
    model: dict[str, dict[str, float]] = {}  # id -> purpose -> expiry
    rows: dict[str, np.ndarray] = {}
    for i, (t, consents) in enumerate(people):
        name = f"p{i}"
        rows[name] = _unit(rng, t)
        g.enroll(name, rows[name])
        model[name] = {}
        for p, c in consents.items():
            if c is None:
                continue
            exp = {"past": now - 1000.0, "future": now + 1e6, "never": None}[c]
            g.grant_consent(name, p, source="form-1", expires_at=exp)
            model[name][p] = np.inf if exp is None else exp
    for i, p in withdraw:
        name = f"p{i}"
        if name in model and p in model[name] and len(model[name]) > 1:
            assert p not in g.withdraw_consent(name, p)
            del model[name][p]
    probes = _unit(rng, 5)
    for p in PURPOSES:
        ok = [n for n in model if model[n].get(p, -np.inf) > time.time()]
        res = g.identify(probes, k=k, purpose=p)
        for j, r in enumerate(res):
            got = [c.identity for c in r.candidates if c.identity is not None]
            assert set(got) <= set(ok)  # never an identity without current consent
            best = sorted(ok, key=lambda n: -float(np.max(rows[n] @ probes[j])))[:k]
            assert got == best  # and the best k among those that have it
        for n in model:
            if n in ok:
                assert g.verify(n, probes[0], purpose=p).identity == n
            else:
                with pytest.raises(NoConsentError):
                    g.verify(n, probes[0], purpose=p)


def test_default_purpose_is_granted_at_enroll_and_used_by_searches(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    db = tmp_path / "g.db"
    with Gallery(DIM, path=db, purpose="access", backend="exact") as g:
        g.enroll("a", _unit(rng, 1))
        g.enroll("b", _unit(rng, 1), purpose=["payment"], consent_source="kiosk-7")
        assert [r.purpose for r in g.consent_records("a")] == ["access"]
        rec = g.consent_records("b")[0]
        assert (rec.purpose, rec.source) == ("payment", "kiosk-7")
    with Gallery.open(db) as g:  # default purpose and consent survive a reopen
        assert g.default_purpose == "access"
        x = _unit(rng, 1)
        assert [c.identity for c in g.identify(x, k=5)[0].candidates] == ["a"]
        assert [c.identity for c in g.identify(x, k=5, purpose="payment")[0].candidates] == ["b"]
        assert g.identify(x, k=5, purpose="marketing")[0].candidates == ()
    with pytest.raises(InputError, match="default purpose"):
        Gallery.open(db, purpose="payment")  # another default: refused


def test_expired_consent_stops_counting(tmp_path: Path) -> None:
    g = Gallery(DIM, backend="exact")
    x = _unit(np.random.default_rng(2), 2)
    g.enroll("a", x[:1])
    g.enroll("b", x[1:])
    g.grant_consent("a", "payment", source="s", expires_at=time.time() + 0.3)
    g.grant_consent("b", "payment", source="s")
    assert {c.identity for c in g.identify(x[0], k=2, purpose="payment")[0].candidates} == {
        "a",
        "b",
    }
    time.sleep(0.35)
    assert [c.identity for c in g.identify(x[0], k=2, purpose="payment")[0].candidates] == ["b"]


def test_withdraw_all_erases_and_tombstone_refuses_re_enrollment(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    db = tmp_path / "g.db"
    x = _unit(rng, 2)
    with Gallery(DIM, path=db, purpose="access", backend="exact") as g:
        g.enroll("alice-0042", x)
        g.enroll("bob", _unit(rng, 1))
        g.grant_consent("alice-0042", "payment", source="app")
        assert g.withdraw_consent("alice-0042", "payment") == ["access"]
        assert "alice-0042" in g
        assert g.withdraw_consent("alice-0042") == []  # opt-out: every purpose
        assert "alice-0042" not in g
        with pytest.raises(ConsentError, match="record new consent"):
            g.enroll("alice-0042", x)  # e.g. from an old export
        assert "alice-0042" not in g and len(g) == 1
    con = sqlite3.connect(db)
    dump = "\n".join(con.iterdump())
    stones = con.execute("SELECT hash FROM tombstones").fetchall()
    con.close()
    assert len(stones) == 1 and "alice-0042" not in stones[0][0]
    assert "alice-0042" not in dump.split("CREATE TABLE audit")[0].replace(
        "audit", ""
    )  # no clear id
    with Gallery.open(db) as g:
        with pytest.raises(ConsentError):
            g.enroll("alice-0042", x)
        g.grant_consent("alice-0042", "access", source="new-form-2026")
        g.enroll("alice-0042", x)
        assert "alice-0042" in g


def test_consent_before_enrollment_and_bad_inputs() -> None:
    g = Gallery(DIM)
    g.grant_consent("zoe", "payment", source="paper form 12")
    assert [r.purpose for r in g.consent_records("zoe")] == ["payment"]
    assert g.withdraw_consent("zoe") == []
    with pytest.raises(ConsentError):
        g.enroll("zoe", _unit(np.random.default_rng(0), 1))
    for bad in ("", "Payment", "pay ment", 3, "x" * 65):
        with pytest.raises(InputError):
            g.grant_consent("a", bad, source="s")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        g.grant_consent("a", "payment", source="")
    with pytest.raises(InputError):
        g.grant_consent("a", "payment", source="s", expires_at=float("nan"))


def test_read_only_gallery_sees_consent_changes(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    db = tmp_path / "g.db"
    w = Gallery(DIM, path=db, backend="exact")
    w.enroll("a", _unit(rng, 1))
    r = Gallery.open(db, read_only=True)
    x = _unit(rng, 1)
    assert r.identify(x, purpose="payment")[0].candidates == ()
    w.grant_consent("a", "payment", source="s")
    assert [c.identity for c in r.identify(x, purpose="payment")[0].candidates] == ["a"]
    r.close()
    w.close()
