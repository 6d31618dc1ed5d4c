"""``Gallery.verify_many`` (a service's batch of verify requests) answers each pair exactly as
``Gallery.verify`` does: the same scores bit for bit, the same decisions, the same typed errors
(returned in place), one audit record per pair naming its actor."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from pyfacematch.errors import DimensionError, InputError, NoConsentError, UnknownIdentityError
from pyfacematch.gallery import Gallery
from pyfacematch.gallery.validation import as_templates

DIM = 48


def _outcome(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except (InputError, UnknownIdentityError) as exc:
        return exc


def _same(a, b) -> bool:  # type: ignore[no-untyped-def]
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    return a == b  # VerifyResult: identity, score (bit for bit), decision


@pytest.mark.parametrize("threshold", [None, 0.6])
def test_verify_many_equals_verify_pair_by_pair(tmp_path, threshold):
    rng = np.random.default_rng(4)
    t = as_templates(rng.standard_normal((30, DIM)), DIM, "t")
    path = tmp_path / "g.db"
    g = Gallery.open(path, dim=DIM, backend="exact", purpose="access")
    g.enroll_many([f"p{i}" for i in range(20)], t[:20])
    g.enroll("p3", t[25], on_duplicate="append")  # a second template: best of both
    g.enroll("q", t[26], purpose=["payment"])  # no consent for "access"
    probes = as_templates(t[[0, 3, 5, 7, 1, 2]] + 0.4 * rng.standard_normal((6, DIM)), DIM, "p")
    ids = ["p0", "p3", "nobody", "q", "p1", ""]
    actors = ["term-a", "term-b", "term-a", None, "term-b", "term-a"]
    want = [
        _outcome(lambda i=i: g.verify(ids[i], probes[i], threshold, actor=actors[i]))
        for i in range(6)
    ]
    got = g.verify_many(ids, probes, threshold, actors=actors)
    assert len(got) == 6 and all(_same(a, b) for a, b in zip(got, want)), (got, want)
    assert isinstance(got[2], UnknownIdentityError) and isinstance(got[3], NoConsentError)
    assert isinstance(got[5], InputError)
    pay = g.verify_many(["q", "p0"], probes[[3, 0]], threshold, purpose="payment")
    assert _same(pay[0], g.verify("q", probes[3], threshold, purpose="payment"))
    assert isinstance(pay[1], NoConsentError)
    with pytest.raises(DimensionError):
        g.verify_many(["p0", "p1"], probes[:1])
    with pytest.raises(InputError, match="one actor per identity"):
        g.verify_many(["p0"], probes[:1], actors=["a", "b"])
    g.audit_flush()
    g.close()
    with sqlite3.connect(path) as c:
        recs = c.execute("SELECT actor, detail FROM audit WHERE action = 'verify'").fetchall()
    # each successful pair was audited twice (verify, then verify_many) under its own actor
    per = {}
    for a, d in recs:
        per.setdefault((a, json.loads(d)["identity"]), 0)
        per[(a, json.loads(d)["identity"])] += 1
    assert per[("term-a", "p0")] == 2 and per[("term-b", "p3")] == 2
    assert per[("term-b", "p1")] == 2 and ("term-a", "nobody") not in per
