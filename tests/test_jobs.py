"""The job functions of ``pyfacematch.jobs``, called directly (not through the command line).

Results are checked against brute-force numpy (float64 cosine), counts against what the input
was built to contain, and resume against an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.errors import InputError, PyFaceMatchError
from pyfacematch.gallery import Gallery
from pyfacematch.io import Chunk, RecordReader, Reject, write_table
from pyfacematch.jobs import (
    JobOutput,
    Source,
    calibrate_gallery,
    encode_chunk,
    enroll_records,
    export_templates,
    gallery_info,
    identify_chunk,
    identify_job,
    impostor_pairs,
    read_ids,
    refuse_duplicates,
    remove_identities,
    result_columns,
    verify_chunk,
    verify_job,
)

N_GAL, N_PROBE, DIM = 40, 25, 16


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def setup(tmp_path: Path) -> dict:
    rng = np.random.default_rng(21)
    gal = rng.standard_normal((N_GAL, DIM)).astype(np.float32)
    gids = [f"id{i:02d}" for i in range(N_GAL)]
    truth = rng.choice(N_GAL, N_PROBE, replace=False)
    probes = (_unit(gal[truth]) + 0.3 * rng.standard_normal((N_PROBE, DIM)) / 4).astype(np.float32)
    pids = [f"q{i:02d}" for i in range(N_PROBE)]
    write_table(tmp_path / "gal.npz", "npz", gids, gal)
    write_table(tmp_path / "probes.jsonl", "jsonl", pids, probes)
    s = enroll_records(tmp_path / "g.db", Source(input=str(tmp_path / "gal.npz")), quiet=True)
    assert (s["templates_enrolled"], s["identities_enrolled"], s["exit_code"]) == (N_GAL, N_GAL, 0)
    sim = _unit(probes) @ _unit(gal).T  # float64 brute force
    return {"dir": tmp_path, "gal": gal, "gids": gids, "probes": probes, "pids": pids, "sim": sim}


def _chunk(ids: list[str], values: np.ndarray, **fields: list) -> Chunk:
    return Chunk(
        0,
        0,
        len(ids),
        list(ids),
        np.arange(1, len(ids) + 1),
        values,
        None,
        None,
        dict(fields),
        [],
    )


def _reader(path: Path, **kw) -> RecordReader:
    return RecordReader(path, "templates", **kw)


# ---------------------------------------------------------------------------- chunk functions
def test_result_columns_of_an_empty_batch_has_no_rows():
    """Regression (issue 12 defect 5): (0, k) candidates made a (0,) mask and a ValueError."""
    for k in (1, 3):
        cols = result_columns([], np.empty((0, k), object), np.empty((0, k), np.float32), 0.5)
        assert len(cols) == 0


def test_identify_chunk_matches_brute_force(setup):
    g = Gallery.open(setup["dir"] / "g.db")
    try:
        ch = _chunk(setup["pids"], setup["probes"])
        cols, rejects, counts = identify_chunk(g, ch, k=3, threshold=0.8)
    finally:
        g.close()
    order = np.argsort(-setup["sim"], axis=1, kind="stable")[:, :3]
    assert rejects == [] and cols.probe_id == [p for p in setup["pids"] for _ in range(3)]
    assert cols.identity == [setup["gids"][j] for row in order for j in row]
    want = np.take_along_axis(setup["sim"], order, 1).ravel()
    np.testing.assert_allclose(cols.score, want, atol=2e-5)
    assert cols.rank.tolist() == [1, 2, 3] * N_PROBE
    assert counts == {"matches": int((want[::3] >= 0.8).sum())}
    assert cols.decision == ["match" if s >= 0.8 else "no-match" for s in want]


def test_identify_chunk_of_no_valid_record(setup):
    g = Gallery.open(setup["dir"] / "g.db")
    try:
        empty = _chunk([], np.zeros((0, DIM), np.float32))
        cols, rejects, counts = identify_chunk(g, empty, k=2, threshold=None)
    finally:
        g.close()
    assert len(cols) == 0 and rejects == [] and counts == {"matches": 0}


def test_verify_chunk_scores_claims_and_rejects_unknown_ones(setup, tmp_path):
    claims = [setup["gids"][i % N_GAL] for i in range(N_PROBE)]
    claims[4], claims[7] = "nobody", None
    g = Gallery.open(setup["dir"] / "g.db")
    try:
        ch = _chunk(setup["pids"], setup["probes"], claim=claims)
        with _reader(setup["dir"] / "probes.jsonl", on_error="skip") as skip:
            cols, rejects, counts = verify_chunk(g, ch, skip, threshold=0.5)
            one, _, _ = verify_chunk(g, ch, skip, identity=setup["gids"][3])
        with _reader(setup["dir"] / "probes.jsonl") as stop:
            with pytest.raises(InputError, match="unknown identity"):
                verify_chunk(g, ch, stop, threshold=0.5)
    finally:
        g.close()
    ok = [i for i in range(N_PROBE) if i not in (4, 7)]
    assert cols.probe_id == [setup["pids"][i] for i in ok]
    want = [setup["sim"][i, setup["gids"].index(claims[i])] for i in ok]
    np.testing.assert_allclose(cols.score, want, atol=2e-5)
    assert counts == {"matches": sum(s >= 0.5 for s in want)}
    assert [(r.row, r.kind) for r in rejects] == [(5, "unknown identity"), (8, "missing claim")]
    np.testing.assert_allclose(one.score, setup["sim"][:, 3], atol=2e-5)
    assert one.decision == [None] * N_PROBE


def test_refuse_duplicates_keeps_ids_enrolled_by_this_job(setup):
    g = Gallery.open(setup["dir"] / "g.db")
    try:
        ch = _chunk(["new", "id03", "id05", "later"], np.ones((4, DIM), np.float32))
        keep, rej = refuse_duplicates(ch, g, enrolled_now={"id05"})
    finally:
        g.close()
    assert keep.tolist() == [True, False, True, True]
    assert [(r.row, r.id, r.kind) for r in rej] == [(2, "id03", "duplicate id")]


def test_encode_chunk_keys_and_rejects(tmp_path):
    from pyfacematch.keys import KeyModel
    from pyfacematch.keys.synth import FaceSynthesizer

    train = FaceSynthesizer("ibug68", 30, seed=1)
    tf = train.sample(np.repeat(np.arange(30), 4), seed=2, occluder="random")
    km = KeyModel.fit(tf.landmarks, tf.identities, scheme="ibug68", dim=24)
    faces = FaceSynthesizer("ibug68", 6, seed=3).sample(np.arange(6), seed=4)
    lm = faces.landmarks.astype(np.float32)
    lm[2] = np.nan  # no key can be made from this face
    ch = _chunk([f"f{i}" for i in range(6)], lm)
    write_table(tmp_path / "lm.jsonl", "jsonl", ch.ids, lm, value_name="landmarks")
    with RecordReader(tmp_path / "lm.jsonl", "landmarks", points=68, on_error="skip") as reader:
        kept, keys, masks, rej = encode_chunk(km, ch, reader)
    good = [0, 1, 3, 4, 5]
    assert kept.ids == [f"f{i}" for i in good] and [r.row for r in rej] == [3]
    assert rej[0].reason.startswith("landmarks cannot make a key")
    want_k, want_m = km.encode(faces.landmarks[good])
    np.testing.assert_allclose(keys, want_k, atol=1e-6)
    assert masks.tolist() == want_m.tolist()
    reader.on_error = "stop"
    with pytest.raises(InputError, match="row 3"):
        encode_chunk(km, ch, reader)


# ---------------------------------------------------------------------------- whole jobs
def test_enroll_records_duplicate_rule_and_rejects(setup):
    d = setup["dir"]
    write_table(d / "more.csv", "csv", ["id01", "fresh", "fresh"], setup["gal"][:3])
    s = enroll_records(d / "g.db", Source(input=str(d / "more.csv"), on_error="skip"), quiet=True)
    assert (s["records"], s["templates_enrolled"], s["identities_enrolled"]) == (3, 2, 1)
    assert (s["rejected"], s["reject_reasons"], s["exit_code"]) == (1, {"duplicate id": 1}, 1)
    assert "duplicate id" in Path(s["rejects_file"]).read_text()
    with pytest.raises(InputError, match="duplicate id"):
        enroll_records(d / "g.db", Source(input=str(d / "more.csv")), quiet=True)
    s = enroll_records(
        d / "g.db", Source(input=str(d / "more.csv")), on_duplicate="append", quiet=True
    )
    assert (s["templates_enrolled"], s["exit_code"]) == (3, 0)
    with Gallery.open(d / "g.db") as g:
        assert len(g) == N_GAL + 1 and g.n_templates == N_GAL + 5
        assert len(g.templates("fresh")) == 4 and len(g.templates("id01")) == 2
    with pytest.raises(InputError, match="on_duplicate"):
        enroll_records(d / "g.db", Source(input=str(d / "more.csv")), on_duplicate="x")


def test_identify_job_output_and_summary(setup):
    d = setup["dir"]
    out = JobOutput(str(d / "r.jsonl"))
    s = identify_job(d / "g.db", Source(input=str(d / "probes.jsonl"), chunk_size=4), out, k=2)
    assert (s["records"], s["processed"], s["rows_written"]) == (N_PROBE, N_PROBE, 2 * N_PROBE)
    assert s["chunks"] == 7 and s["exit_code"] == 0 and s["threshold"]["value"] is None
    rows = [json.loads(x) for x in (d / "r.jsonl").read_text().splitlines()]
    order = np.argsort(-setup["sim"], axis=1, kind="stable")[:, :2]
    assert [r["identity"] for r in rows] == [setup["gids"][j] for row in order for j in row]
    assert json.loads((d / "r.jsonl.summary.json").read_text())["processed"] == N_PROBE
    with pytest.raises(InputError, match="exists"):
        identify_job(d / "g.db", Source(input=str(d / "probes.jsonl")), out)
    with pytest.raises(InputError, match="top-k"):
        identify_job(d / "g.db", Source(input=str(d / "probes.jsonl")), out, k=0)
    with pytest.raises(InputError, match="does not exist"):
        identify_job(d / "none.db", Source(input=str(d / "probes.jsonl")), out)


def _interrupted_identify(d: Path, out: JobOutput, monkeypatch, after: int) -> None:
    """Run identify_job and stop it (KeyboardInterrupt) after ``after`` committed chunks."""
    calls = {"n": 0}
    real = Gallery.identify_arrays

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] > after:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(Gallery, "identify_arrays", flaky)
        with pytest.raises(KeyboardInterrupt):
            identify_job(d / "g.db", Source(input=str(d / "probes.jsonl"), chunk_size=4), out)
    man = json.loads((Path(out.path + ".job") / "manifest.json").read_text())
    assert man["chunks_done"] == after


def test_resume_after_an_interrupt_gives_the_uninterrupted_output(setup, monkeypatch):
    d = setup["dir"]
    src = Source(input=str(d / "probes.jsonl"), chunk_size=4)
    identify_job(d / "g.db", src, JobOutput(str(d / "ref.csv")))
    out = JobOutput(str(d / "cut.csv"))
    _interrupted_identify(d, out, monkeypatch, after=3)
    s = identify_job(d / "g.db", src, JobOutput(out.path, resume=True))
    assert s["resumed"] is True and s["runs"] == 2 and s["processed"] == N_PROBE
    assert (d / "cut.csv").read_bytes() == (d / "ref.csv").read_bytes()


def test_resume_is_refused_when_the_gallery_changed(setup, monkeypatch):
    """Issue 12: a job resumed after the gallery changed would mix answers of two galleries."""
    d = setup["dir"]
    out = JobOutput(str(d / "cut.csv"))
    _interrupted_identify(d, out, monkeypatch, after=2)
    with Gallery.open(d / "g.db") as g:
        g.enroll("late", setup["gal"][0] + 1)
    src = Source(input=str(d / "probes.jsonl"), chunk_size=4)
    with pytest.raises(InputError, match="cannot resume") as err:
        identify_job(d / "g.db", src, JobOutput(out.path, resume=True))
    assert "identities" in str(err.value) and "generation" in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, PyFaceMatchError)
    # a removal keeps the counts of a gallery but not its generation
    out2 = JobOutput(str(d / "cut2.csv"))
    _interrupted_identify(d, out2, monkeypatch, after=1)
    with Gallery.open(d / "g.db") as g:
        g.remove("late")
        g.enroll("late", setup["gal"][0] + 1)
    with pytest.raises(InputError, match=r"cannot resume.*generation"):
        identify_job(d / "g.db", src, JobOutput(out2.path, resume=True))
    s = identify_job(d / "g.db", src, JobOutput(out2.path, overwrite=True))
    assert s["processed"] == N_PROBE and s["resumed"] is False


def test_verify_job_with_one_identity(setup):
    d = setup["dir"]
    out = JobOutput(str(d / "v.csv"), summary=str(d / "v.json"))
    s = verify_job(
        d / "g.db", Source(input=str(d / "probes.jsonl")), out, identity="id07", threshold=0.3
    )
    assert (s["processed"], s["rejected"]) == (N_PROBE, 0)
    assert s["matches"] == int((setup["sim"][:, 7] >= 0.3).sum())
    with pytest.raises(InputError, match="'ghost' is not enrolled"):
        verify_job(d / "g.db", Source(input=str(d / "probes.jsonl")), out, identity="ghost")


def test_remove_identities_stop_and_skip(setup, tmp_path):
    d = setup["dir"]
    (d / "ids.txt").write_text("id01\n\n  id02  \nghost\nid03\n")
    ids = read_ids(d / "ids.txt")
    assert ids == [(1, "id01"), (3, "id02"), (4, "ghost"), (5, "id03")]
    with pytest.raises(InputError, match=r"ids.txt line 4: identity 'ghost'.*2 removed before"):
        remove_identities(d / "g.db", ids, source=str(d / "ids.txt"))
    s = remove_identities(d / "g.db", [(0, "id03"), (0, "ghost")], on_error="skip")
    assert (s["requested"], s["removed"], s["rejected"], s["exit_code"]) == (2, 1, 1, 1)
    assert "ghost" in Path(s["rejects_file"]).read_text()
    with Gallery.open(d / "g.db") as g:
        assert len(g) == N_GAL - 3 and not {"id01", "id02", "id03"} & set(g.identities())
    with pytest.raises(InputError, match="give identity ids"):
        remove_identities(d / "g.db", [])


def test_calibrate_fpir_from_non_mated_probes(setup):
    d = setup["dir"]
    rng = np.random.default_rng(5)
    non = rng.standard_normal((300, DIM)).astype(np.float32)
    write_table(d / "non.npy", "npy", [], non)
    s = calibrate_gallery(d / "g.db", fpir=0.05, source=Source(input=str(d / "non.npy")))
    top = (_unit(non) @ _unit(setup["gal"]).T).max(axis=1)  # best score of each search
    assert s["kind"] == "fpir" and s["n_scores"] == 300
    assert np.mean(top >= s["threshold"] + 1e-6) <= 0.05  # the target rate is met
    assert np.mean(top >= np.max(top[top < s["threshold"] - 1e-6])) > 0.05  # and no stricter
    with Gallery.open(d / "g.db") as g:
        assert g.threshold("fpir").value == pytest.approx(s["threshold"])
    with pytest.raises(InputError, match="exactly one"):
        calibrate_gallery(d / "g.db", fpir=0.05)


def test_impostor_pairs_are_of_different_ids():
    t = np.arange(12, dtype=np.float32).reshape(6, 2)
    ids = ["a", "a", "b", "b", "b", "c"]
    a, b = impostor_pairs(ids, t, 100)
    assert len(a) == 15 - 1 - 3  # all pairs but the same-id ones
    lab = {float(x[0]): i for x, i in zip(t, ids)}
    assert all(lab[float(x[0])] != lab[float(y[0])] for x, y in zip(a, b))
    a, b = impostor_pairs(ids, t, 5)
    assert len(a) == 5
    with pytest.raises(InputError, match="two different ids"):
        impostor_pairs(["a", "a"], t[:2], 10)


def test_export_round_trip_and_info(setup):
    d = setup["dir"]
    s = export_templates(d / "g.db", d / "all.npz")
    assert s["templates"] == N_GAL
    with np.load(d / "all.npz") as z:
        assert z["ids"].tolist() == setup["gids"]
        np.testing.assert_allclose(z["templates"], _unit(setup["gal"]), atol=1e-6)
    with pytest.raises(InputError, match="exists"):
        export_templates(d / "g.db", d / "all.npz")
    info = gallery_info(d / "g.db")
    assert (info["identities"], info["templates"], info["dim"]) == (N_GAL, N_GAL, DIM)
    assert info["thresholds"] == {"fmr": None, "fpir": None}


def test_reject_kinds():
    assert Reject(1, None, "x", "duplicate id: already enrolled").kind == "duplicate id"


def test_demo_rank1_figures_against_an_independent_brute_force():
    """run_demo's rank-1 figures equal a brute-force search of the same synthetic faces."""
    from pyfacematch.core.scoring import masked_topk
    from pyfacematch.jobs.demo import SCHEME, run_demo
    from pyfacematch.keys import KeyModel
    from pyfacematch.keys.synth import FaceSynthesizer

    n, m, seed, n_train = 300, 100, 4, 20  # here plain cosine misses 3 masked probes of 100
    got = run_demo(n, m, seed=seed, train_identities=n_train, train_faces=5, quiet=True)
    # the same faces, made again from the seeds the demo documents
    tr = FaceSynthesizer(SCHEME, n_train, seed=seed + 1000)
    f = tr.sample(np.repeat(np.arange(n_train), 5), seed=seed + 1001, occluder="random")
    km = KeyModel.fit(f.landmarks, f.identities, scheme=SCHEME, visibility=f.visibility)
    people = FaceSynthesizer(SCHEME, n, seed=seed)
    gf = people.sample(np.arange(n), seed=seed + 1, chunk=50_000)
    gk, gm = km.encode(gf.landmarks, gf.visibility, on_error="raise")
    who = np.random.default_rng(seed + 2).choice(n, m, replace=False)
    want = {}
    for cond, occ in (("clean", "none"), ("masked", "mask")):
        pf_ = people.sample(who, seed=seed + 3, occluder=occ)
        pk, pm, st = km.encode(pf_.landmarks, pf_.visibility, on_error="flag", return_status=True)
        ok = st == 0
        _, idx = masked_topk(pk[ok], gk, 1, pm[ok], gm, km.blocks)
        want[cond] = float(np.sum(idx[:, 0] == who[ok]) / m)
        if cond == "masked":  # plain cosine over the whole key, float64
            s = _unit(pk[ok]) @ _unit(gk).T
            want["plain"] = float(np.sum(np.argmax(s, axis=1) == who[ok]) / m)
    assert got["rank1_clean"] == want["clean"]  # counts of the same probes: exact
    assert got["rank1_masked"] == want["masked"]
    # float32 search against float64: one near-tie may go the other way
    assert got["rank1_masked_plain_cosine"] == pytest.approx(want["plain"], abs=1.5 / m)
    assert want["masked"] >= 0.9 and want["masked"] - want["plain"] >= 2 / m


def test_ctrl_c_stops_the_job_after_the_current_chunk(setup, monkeypatch, capsys):
    """The first SIGINT lets the chunk being searched commit; then KeyboardInterrupt, resumable."""
    import os
    import signal

    d = setup["dir"]
    src = Source(input=str(d / "probes.jsonl"), chunk_size=4)
    identify_job(d / "g.db", src, JobOutput(str(d / "ref.csv")))
    calls = {"n": 0}
    real = Gallery.identify_arrays

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while chunk 1 is searched
        return real(self, *a, **kw)

    # a suite started in the background (`cmd &`) runs with SIGINT ignored, and the job only
    # takes over Python's default handler: run this as under a terminal
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with monkeypatch.context() as m:
            m.setattr(Gallery, "identify_arrays", interrupted)
            with pytest.raises(KeyboardInterrupt):
                identify_job(d / "g.db", src, JobOutput(str(d / "cut.csv")))
    finally:
        restored = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, before)
    assert "stopping after the current chunk" in capsys.readouterr().err
    assert restored is signal.default_int_handler  # the job put the handler back
    man = json.loads((d / "cut.csv.job" / "manifest.json").read_text())
    assert calls["n"] == 2 and man["chunks_done"] == 2  # chunk 1 finished and committed
    s = identify_job(d / "g.db", src, JobOutput(str(d / "cut.csv"), resume=True), quiet=True)
    assert s["resumed"] is True and s["processed"] == N_PROBE
    assert (d / "cut.csv").read_bytes() == (d / "ref.csv").read_bytes()


# ---------------------------------------------------------------------------- pipelined job
def _result_rows_reference(probe_ids, identities, scores, threshold):
    """The per-row definition of result_columns (the code before it was vectorised)."""
    rows = []
    for i, p in enumerate(probe_ids):
        r = 0
        for j in range(identities.shape[1]):
            if identities[i, j] is not None and not np.isnan(scores[i, j]):
                r += 1
                s = float(np.float32(scores[i, j]))
                dec = None if threshold is None else ("match" if s >= threshold else "no-match")
                rows.append((p, r, identities[i, j], s, dec))
        if r == 0:
            rows.append((p, 0, None, None, None if threshold is None else "no-match"))
    return rows


@pytest.mark.parametrize("threshold", [None, 0.25])
@pytest.mark.parametrize("k", [0, 1, 5])
def test_result_columns_match_the_per_row_definition(threshold, k):
    """Padding (None), NaN scores, probes with no candidate, ties at the threshold, k = 0."""
    rng = np.random.default_rng(k)
    m = 9
    ids = np.array([[f"g{i}-{j}" for j in range(k)] for i in range(m)], object).reshape(m, k)
    sc = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    if k:
        ids[1, -1] = None  # padding at the end
        ids[2, :] = None  # no candidate at all
        sc[3, 0] = np.nan  # NaN score (a hole: the next valid one gets rank 1)
        sc[4, :] = np.nan
        sc[5, 0] = np.float32(0.25)  # exactly at the threshold: a match
    pids = [f"p{i}" for i in range(m)]
    got = result_columns(pids, ids, sc, threshold)
    want = _result_rows_reference(pids, ids, sc, threshold)
    rows = list(
        zip(got.probe_id, got.rank.tolist(), got.identity, got.score.tolist(), got.decision)
    )
    rows = [(p, r, i, None if s != s else s, d) for p, r, i, s, d in rows]
    assert rows == want
    assert got.rank.dtype == np.int32 and got.score.dtype == np.float32
    assert all(type(p) is str for p in got.probe_id)


def test_a_failing_search_surfaces_its_error_with_earlier_chunks_committed(setup, monkeypatch):
    """The search runs on its own thread: its error reaches the caller unchanged, in order."""
    d = setup["dir"]
    src = Source(input=str(d / "probes.jsonl"), chunk_size=4)
    identify_job(d / "g.db", src, JobOutput(str(d / "ref.csv")))
    calls = {"n": 0}
    real = Gallery.identify_arrays

    def failing(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise InputError("search failed on chunk 2")
        return real(self, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(Gallery, "identify_arrays", failing)
        with pytest.raises(InputError, match="chunk 2"):
            identify_job(d / "g.db", src, JobOutput(str(d / "cut.csv")), quiet=True)
    man = json.loads((d / "cut.csv.job" / "manifest.json").read_text())
    assert man["chunks_done"] == 2 and calls["n"] == 3  # no chunk searched after the failure
    s = identify_job(d / "g.db", src, JobOutput(str(d / "cut.csv"), resume=True), quiet=True)
    assert s["processed"] == N_PROBE
    assert (d / "cut.csv").read_bytes() == (d / "ref.csv").read_bytes()
