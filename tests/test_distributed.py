"""Sharded galleries and bulk jobs on a real Dask LocalCluster (2 worker processes).

Skipped when dask[distributed] is not installed (it is in the ``test`` extra).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.distributed import merge_shards, read_manifest, shard_of, split_gallery
from pyfacematch.distributed.merge import merge_topk
from pyfacematch.distributed.shards import file_sha256
from pyfacematch.errors import (
    DuplicateIdentityError,
    InputError,
    ShardChecksumError,
    UnknownIdentityError,
)
from pyfacematch.gallery import Gallery
from pyfacematch.jobs import JobOutput, Source, identify_job, verify_job

distributed = pytest.importorskip(
    "distributed", reason="dask[distributed] is not installed (pip install 'pyfacematch[test]')"
)

from pyfacematch.distributed.cluster import ClusterHandle, connect  # noqa: E402
from pyfacematch.distributed.jobs import identify_job_cluster, verify_job_cluster  # noqa: E402
from pyfacematch.distributed.sharded import ShardedGallery  # noqa: E402

DATA = Path(__file__).parent / "data" / "faces_small.npz"
DIM = 128


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterHandle]:
    h = connect("local:2")
    try:
        yield h
    finally:
        h.close()


def _people(rng: np.random.Generator, n: int = 400) -> tuple[list[str], np.ndarray]:
    """Real dlib embeddings (6 photos) plus synthetic identities, some with 2–3 templates,
    and exact duplicates across identities so ties must be broken like one gallery."""
    real = np.load(DATA)
    ids = [f"real-{lab}" for lab in real["labels"].tolist()]
    rows = [real["embeddings"].astype(np.float32)]
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    ids += [f"p{i:04d}" for i in range(n)]
    rows.append(x)
    extra = rng.standard_normal((n // 4, DIM)).astype(np.float32)
    ids += [f"p{i:04d}" for i in range(0, n, 4)]  # second template of every 4th identity
    rows.append(extra)
    dup = np.repeat(x[:5], 2, axis=0)  # identities d0..d9: pairs of identical templates
    ids += [f"d{i}" for i in range(10)]
    rows.append(dup)
    return ids, np.concatenate(rows)


@pytest.fixture(scope="module")
def gallery_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(17)
    ids, t = _people(rng)
    g = Gallery.open(d / "people.db", dim=DIM, backend="exact")
    g.enroll_many(ids, t, on_duplicate="append")
    g.calibrate(rng.uniform(-0.2, 0.3, 5000), fmr=1e-3)
    g.close()
    probes = np.concatenate([t[:40], rng.standard_normal((2460, DIM)).astype(np.float32)])
    np.save(d / "probes.npy", probes)
    claims = {"id": [str(i) for i in range(300)], "template": probes[:300].tolist()}
    claims["claim"] = [ids[i % len(ids)] for i in range(300)]
    claims["claim"][7] = "nobody"
    with open(d / "claims.jsonl", "w") as fh:
        for i in range(300):
            rec = {k: claims[k][i] for k in ("id", "template", "claim")}
            fh.write(json.dumps(rec) + "\n")
    split_gallery(d / "people.db", d / "shards", 3)
    return {"dir": d, "db": d / "people.db", "shards": d / "shards", "probes": d / "probes.npy"}


# --------------------------------------------------------------------------- shards on disk
def test_split_places_identities_by_hash_and_records_checksums(
    gallery_files: dict[str, Path], tmp_path: Path
) -> None:
    man = read_manifest(gallery_files["shards"])
    assert man.n_shards == 3
    src = Gallery.open(gallery_files["db"], read_only=True)
    try:
        total = 0
        for i, s in enumerate(man.shards):
            g = Gallery.open(s.path, read_only=True)
            try:
                for name in g.identities():
                    assert shard_of(name, 3) == i
                    np.testing.assert_array_equal(g.templates(name), src.templates(name))
                total += len(g)
                assert (len(g), g.n_templates) == (s.identities, s.templates)
                assert g.threshold("fmr") == src.threshold("fmr")  # thresholds travel
            finally:
                g.close()
        assert total == len(src)
    finally:
        src.close()
    assert man.threshold("fmr") is not None
    # shards merge back into a gallery that answers exactly as the source
    out = tmp_path / "merged.db"
    merge_shards(gallery_files["shards"], out)
    a, b = Gallery.open(gallery_files["db"], read_only=True), Gallery.open(out, read_only=True)
    try:
        p = np.load(gallery_files["probes"])[:200]
        ra, rb = a.identify_arrays(p, k=4), b.identify_arrays(p, k=4)
        np.testing.assert_array_equal(ra.identities, rb.identities)
        np.testing.assert_array_equal(ra.scores, rb.scores)
    finally:
        a.close()
        b.close()
    with pytest.raises(InputError, match="already holds a sharded gallery"):
        split_gallery(gallery_files["db"], gallery_files["shards"], 2)


def test_key_model_travels_with_the_manifest(
    gallery_files: dict[str, Path], tmp_path: Path
) -> None:
    km = tmp_path / "keys.npz"
    km.write_bytes(b"not really a key model, but its bytes travel and are checksummed")
    man = split_gallery(gallery_files["db"], tmp_path / "sh", 2, key_model=km)
    assert man.key_model is not None
    assert Path(man.key_model["path"]).read_bytes() == km.read_bytes()
    again = read_manifest(tmp_path / "sh")
    assert again.key_model == man.key_model


def test_corrupted_shard_is_refused_naming_the_file(
    gallery_files: dict[str, Path], tmp_path: Path, cluster: ClusterHandle
) -> None:
    split_gallery(gallery_files["db"], tmp_path / "sh", 2)
    man = read_manifest(tmp_path / "sh")
    bad = Path(man.shards[1].path)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    with pytest.raises(ShardChecksumError, match=str(bad)):
        merge_shards(tmp_path / "sh", tmp_path / "m.db")
    sg = ShardedGallery(tmp_path / "sh", cluster, batch_size=1000)
    with pytest.raises(ShardChecksumError, match="shard-001.db"):
        sg.identify(np.load(gallery_files["probes"])[:3])


# --------------------------------------------------------------------------- ShardedGallery
def test_sharded_identify_equals_one_gallery(
    gallery_files: dict[str, Path], cluster: ClusterHandle
) -> None:
    probes = np.tile(np.load(gallery_files["probes"]), (3, 1))  # 7,500: 8 batches, 4 in flight
    one = Gallery.open(gallery_files["db"], read_only=True)
    try:
        ref = one.identify_arrays(probes, k=5, with_tids=True)
        ref1 = one.identify(probes[:50], k=1)
    finally:
        one.close()
    sg = ShardedGallery(gallery_files["shards"], cluster, batch_size=1000)
    got = sg.identify_arrays(probes, k=5)
    np.testing.assert_array_equal(got.identities, ref.identities)  # ids and order, ties too
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(got.tids, ref.tids)
    # the duplicated templates tie exactly: both identities, the lower template id first
    assert got.identities[0, 0] == ref.identities[0, 0]
    dup_rows = [i for i in range(len(probes)) if got.scores[i, 0] == got.scores[i, 1]]
    assert dup_rows, "the data holds exact ties"
    assert sg.identify(probes[:50], k=1) == ref1
    # thresholds come from the manifest as from the gallery
    assert got.source == ref.source and got.threshold == ref.threshold
    with pytest.raises(InputError, match="at least 1000"):
        ShardedGallery(gallery_files["shards"], cluster, batch_size=10)


def test_workers_open_each_shard_once_and_keep_it(
    gallery_files: dict[str, Path], cluster: ClusterHandle
) -> None:
    from pyfacematch.distributed import worker

    sg = ShardedGallery(gallery_files["shards"], cluster, batch_size=1000)
    p = np.load(gallery_files["probes"])[:2000]
    sg.identify_arrays(p, k=2)
    before = cluster.client.run(worker.cache_stats)
    sg.identify_arrays(p, k=2)
    after = cluster.client.run(worker.cache_stats)
    assert before == after  # no reopen, no second checksum pass
    opened = sorted(x for st in after.values() for x in st["open"])
    assert set(s.path for s in sg.man.shards) <= set(opened)


def test_enroll_remove_verify_route_to_the_identity_shard(
    gallery_files: dict[str, Path], tmp_path: Path, cluster: ClusterHandle
) -> None:
    split_gallery(gallery_files["db"], tmp_path / "sh", 3)
    sg = ShardedGallery(tmp_path / "sh", cluster, batch_size=1000)
    rng = np.random.default_rng(5)
    t = rng.standard_normal((2, DIM)).astype(np.float32)
    before = read_manifest(tmp_path / "sh")
    sg.enroll("newcomer", t, metadata={"site": "A"})
    i = shard_of("newcomer", 3)
    after = read_manifest(tmp_path / "sh")
    for j in range(3):  # only the identity's shard changed, and the manifest says so
        changed = before.shards[j].sha256 != after.shards[j].sha256
        assert changed == (j == i)
    assert after.shards[i].identities == before.shards[i].identities + 1
    assert len(sg) == sum(s.identities for s in before.shards) + 1
    r = sg.identify(t[1], k=1)[0]
    assert r.candidates[0].identity == "newcomer" and r.candidates[0].score == pytest.approx(
        1.0, abs=1e-6
    )
    v = sg.verify("newcomer", t[0])
    assert v.score == pytest.approx(1.0, abs=1e-6)
    assert v.decision.source == "calibrated-fmr" and v.decision.accepted
    with pytest.raises(DuplicateIdentityError):
        sg.enroll("newcomer", t)
    sg.remove("newcomer")
    assert read_manifest(tmp_path / "sh").shards[i].identities == before.shards[i].identities
    assert sg.identify(t[1], k=1)[0].candidates[0].identity != "newcomer"
    with pytest.raises(UnknownIdentityError):
        sg.verify("newcomer", t[0])
    with pytest.raises(UnknownIdentityError):
        sg.remove("newcomer")
    info = sg.info()
    assert info["identities"] == len(sg) and len(info["shard_info"]) == 3


def test_merge_topk_breaks_ties_by_template_id() -> None:
    a = (np.array([[0.9, 0.5]], np.float32), np.array([["x", "y"]], object), np.array([[7, 2]]))
    b = (
        np.array([[0.9, np.nan]], np.float32),
        np.array([["z", None]], object),
        np.array([[3, -1]]),
    )
    s, ids, tids = merge_topk([a, b], 3)
    assert ids.tolist() == [["z", "x", "y"]] and tids.tolist() == [[3, 7, 2]]


# --------------------------------------------------------------------------- jobs
def _out(d: Path, name: str) -> JobOutput:
    return JobOutput(str(d / name), overwrite=True)


def test_identify_job_on_cluster_is_byte_identical(
    gallery_files: dict[str, Path], tmp_path: Path, cluster: ClusterHandle
) -> None:
    src = Source(input=str(gallery_files["probes"]), chunk_size=400)  # 7 chunks, last short
    identify_job(gallery_files["db"], src, _out(tmp_path, "local.csv"), k=3, quiet=True)
    s1 = identify_job_cluster(
        gallery_files["db"], src, _out(tmp_path, "cl.csv"), cluster, k=3, quiet=True
    )
    from pyfacematch.distributed import worker

    r0 = cluster.client.run(worker.cache_stats)
    s2 = identify_job_cluster(
        gallery_files["shards"], src, _out(tmp_path, "sh.csv"), cluster, k=3, quiet=True
    )
    r1 = cluster.client.run(worker.cache_stats)
    local = (tmp_path / "local.csv").read_bytes()
    assert (tmp_path / "cl.csv").read_bytes() == local
    assert (tmp_path / "sh.csv").read_bytes() == local
    assert s1["processed"] == s2["processed"] == 2500
    # one task per chunk on a gallery file; with 3 shards on 2 workers one task per worker and
    # chunk (searching the shards it holds) and one task that reads and prepares the chunk once
    # for both: each chunk is read once per cluster, not once per worker (14 reads before)
    assert s1["cluster"]["tasks"] == 7
    assert s2["cluster"]["tasks"] == 7 * (1 + 2) and s2["cluster"]["shards"] == 3
    reads = sum(r1[w]["chunks_read"] - r0[w]["chunks_read"] for w in r1 if w in r0)
    assert reads == 7, reads
    # a text input is parsed once per chunk (a read task) and shipped worker to worker
    js = Source(input=str(gallery_files["dir"] / "claims.jsonl"), chunk_size=100)
    identify_job(gallery_files["db"], js, _out(tmp_path, "jl.csv"), k=3, quiet=True)
    s3 = identify_job_cluster(
        gallery_files["shards"], js, _out(tmp_path, "jc.csv"), cluster, k=3, quiet=True
    )
    assert (tmp_path / "jc.csv").read_bytes() == (tmp_path / "jl.csv").read_bytes()
    assert s3["cluster"]["tasks"] == 3 * (1 + 2)


# Failed before the core re-scored every top-k result with one canonical kernel (scoring.cpp,
# canonical_scores): batches of 32-65 probes were scored 1 ulp apart in a gallery and its shards.
def test_shard_scores_do_not_depend_on_batch_shape(gallery_files: dict[str, Path]) -> None:
    p = np.load(gallery_files["probes"])[256:300]  # 44 probes
    one = Gallery.open(gallery_files["db"], read_only=True)
    shards = [
        Gallery.open(s.path, read_only=True) for s in read_manifest(gallery_files["shards"]).shards
    ]
    try:
        ref = one.identify_arrays(p, k=3, with_tids=True)
        parts = []
        for g in shards:
            r = g.identify_arrays(p, k=3, threshold=0.0, with_tids=True)
            parts.append((r.scores, r.identities, r.tids))
        got, _, _ = merge_topk(parts, 3)
        np.testing.assert_array_equal(got, ref.scores)
    finally:
        one.close()
        for g in shards:
            g.close()


def test_identify_job_on_cluster_resumes_a_local_job(
    gallery_files: dict[str, Path],
    tmp_path: Path,
    cluster: ClusterHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same manifest: a job interrupted in-process finishes on the cluster, output identical."""
    src = Source(input=str(gallery_files["probes"]), chunk_size=500)
    identify_job(gallery_files["db"], src, _out(tmp_path, "ref.parquet"), k=2, quiet=True)
    from pyfacematch.jobs import runner

    calls = {"n": 0}
    real = runner.write_results_part

    def dying(*a: object, **k: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "write_results_part", dying)
    with pytest.raises(KeyboardInterrupt):
        identify_job(
            gallery_files["db"], src, JobOutput(str(tmp_path / "r.parquet")), k=2, quiet=True
        )
    monkeypatch.setattr(runner, "write_results_part", real)
    s = identify_job_cluster(
        gallery_files["db"],
        src,
        JobOutput(str(tmp_path / "r.parquet"), resume=True),
        cluster,
        k=2,
        quiet=True,
    )
    assert s["resumed"] and s["cluster"]["tasks"] == 3  # chunks 2, 3, 4 of 5
    assert (tmp_path / "r.parquet").read_bytes() == (tmp_path / "ref.parquet").read_bytes()


def test_verify_job_on_cluster_is_byte_identical(
    gallery_files: dict[str, Path], tmp_path: Path, cluster: ClusterHandle
) -> None:
    src = Source(input=str(gallery_files["dir"] / "claims.jsonl"), chunk_size=100, on_error="skip")
    a = verify_job(gallery_files["db"], src, _out(tmp_path, "v.csv"), quiet=True)
    b = verify_job_cluster(gallery_files["db"], src, _out(tmp_path, "vc.csv"), cluster, quiet=True)
    assert (tmp_path / "vc.csv").read_bytes() == (tmp_path / "v.csv").read_bytes()
    assert (tmp_path / "vc.csv.rejects.csv").read_bytes() == (
        tmp_path / "v.csv.rejects.csv"
    ).read_bytes()
    assert a["rejected"] == b["rejected"] == 1
    # on shards: each claim verified in its identity's shard, the same bytes as one gallery
    c = verify_job_cluster(
        gallery_files["shards"], src, _out(tmp_path, "vs.csv"), cluster, quiet=True
    )
    assert (tmp_path / "vs.csv").read_bytes() == (tmp_path / "v.csv").read_bytes()
    assert (tmp_path / "vs.csv.rejects.csv").read_bytes() == (
        tmp_path / "v.csv.rejects.csv"
    ).read_bytes()
    # a JSONL chunk is parsed once (a read task), then searched on both workers
    assert c["rejected"] == 1 and c["matches"] == a["matches"] and c["cluster"]["tasks"] == 3 * 3
    # one claimed identity for every probe: routed to that identity's shard
    one = "p0003"
    verify_job(gallery_files["db"], src, _out(tmp_path, "v1.csv"), identity=one, quiet=True)
    verify_job_cluster(
        gallery_files["shards"], src, _out(tmp_path, "vs1.csv"), cluster, identity=one, quiet=True
    )
    assert (tmp_path / "vs1.csv").read_bytes() == (tmp_path / "v1.csv").read_bytes()
    with pytest.raises(InputError, match="not enrolled"):
        verify_job_cluster(
            gallery_files["shards"], src, _out(tmp_path, "x.csv"), cluster, identity="nobody"
        )
    # on_error="stop": the first bad record of the chunk stops the job, as in one process
    stop = Source(input=src.input, chunk_size=100, on_error="stop")
    with pytest.raises(InputError) as local_err:
        verify_job(gallery_files["db"], stop, _out(tmp_path, "s.csv"), quiet=True)
    with pytest.raises(InputError) as cluster_err:
        verify_job_cluster(gallery_files["shards"], stop, _out(tmp_path, "sc.csv"), cluster)
    assert str(cluster_err.value) == str(local_err.value)


def test_worker_killed_mid_job_output_identical(
    gallery_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL one worker process (by pid) while its tasks run: they rerun elsewhere."""
    src = Source(input=str(gallery_files["probes"]), chunk_size=100)  # 25 chunks
    identify_job(gallery_files["db"], src, _out(tmp_path, "ref.csv"), k=2, quiet=True)
    monkeypatch.setenv("PYFACEMATCH_TEST_TASK_DELAY", "0.08")  # inherited by the new workers
    with connect("local:2") as h:  # returns once both worker processes have joined
        pids = h.client.run(os.getpid)
        assert len(pids) == 2
        victim = sorted(pids.values())[0]
        box: dict[str, object] = {}

        def job() -> None:
            try:
                box["summary"] = identify_job_cluster(
                    gallery_files["shards"], src, _out(tmp_path, "out.csv"), h, k=2, quiet=True
                )
            except BaseException as exc:  # reported below
                box["error"] = exc

        t = threading.Thread(target=job)
        t.start()
        manifest = tmp_path / "out.csv.job" / "manifest.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if json.loads(manifest.read_text())["chunks_done"] >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        done_at_kill = json.loads(manifest.read_text())["chunks_done"]
        os.kill(victim, signal.SIGKILL)
        t.join(120)
        assert not t.is_alive()
        assert "error" not in box, box.get("error")
        assert done_at_kill < 25  # it was killed mid-job
        assert victim not in h.client.run(os.getpid).values()
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()


# --------------------------------------------------------------------------- consent per purpose
@pytest.fixture(scope="module")
def consent_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A gallery whose default purpose is "access": some people consent to "payment" only,
    some to both, one withdrew "access", one opted out entirely (a tombstone)."""
    d = tmp_path_factory.mktemp("consent")
    rng = np.random.default_rng(23)
    n = 300
    t = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = [f"c{i:03d}" for i in range(n)]
    g = Gallery.open(d / "people.db", dim=DIM, backend="exact", purpose="access")
    g.enroll_many(ids[:100], t[:100])  # the default purpose: access
    g.enroll_many(ids[100:200], t[100:200], purpose=["payment"])
    g.enroll_many(ids[200:], t[200:], purpose=["access", "payment"])
    g.withdraw_consent("c250", "access")
    g.withdraw_consent("c260")  # an opt-out: erased, tombstoned
    g.grant_consent("not-yet-enrolled", "payment", source="form-7")
    g.calibrate(rng.uniform(-0.2, 0.3, 5000), fmr=1e-3)
    g.close()
    probes = np.concatenate([t, rng.standard_normal((200, DIM)).astype(np.float32)])
    np.save(d / "probes.npy", probes)
    with open(d / "claims.jsonl", "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"q{i}", "template": t[i].tolist(), "claim": ids[i]}) + "\n")
    split_gallery(d / "people.db", d / "shards", 3)
    return {"dir": d, "db": d / "people.db", "shards": d / "shards", "probes": d / "probes.npy"}


def test_shards_honour_consent_per_purpose(
    consent_files: dict[str, Path], tmp_path: Path, cluster: ClusterHandle
) -> None:
    from pyfacematch.errors import ConsentError, NoConsentError

    man = read_manifest(consent_files["shards"])
    assert man.default_purpose == "access"
    probes = np.load(consent_files["probes"])
    sg = ShardedGallery(consent_files["shards"], cluster, batch_size=1000)
    one = Gallery.open(consent_files["db"], read_only=True)
    try:
        for purpose in (None, "access", "payment"):
            ref = one.identify_arrays(probes, k=4, purpose=purpose, with_tids=True)
            got = sg.identify_arrays(probes, k=4, purpose=purpose)
            np.testing.assert_array_equal(got.identities, ref.identities)
            np.testing.assert_allclose(got.scores, ref.scores, atol=1e-6, rtol=0)
            np.testing.assert_array_equal(got.tids, ref.tids)
        pay = sg.identify_arrays(probes[:300], k=1, purpose="payment").identities[:, 0]
        assert pay[0] != "c000" and pay[150] == "c150" and pay[250] == "c250"
        acc = sg.identify_arrays(probes[:300], k=1).identities[:, 0]  # default: access
        assert acc[0] == "c000" and acc[150] != "c150" and acc[250] != "c250"
        with pytest.raises(NoConsentError):
            sg.verify("c150", probes[150])  # default purpose: access
        assert sg.verify("c150", probes[150], purpose="payment").score == pytest.approx(1.0)
    finally:
        one.close()
    # the opt-out's tombstone travelled: its shard refuses to enroll it again without consent
    with pytest.raises(ConsentError, match="withdrew consent"):
        ShardedGallery(consent_files["shards"], cluster).enroll("c260", probes[260])
    # and the merge gives the consent state back
    merge_shards(consent_files["shards"], tmp_path / "merged.db")
    a = Gallery.open(consent_files["db"], read_only=True)
    b = Gallery.open(tmp_path / "merged.db", read_only=True)
    try:
        assert b.default_purpose == "access"
        for purpose in (None, "payment"):
            ra = a.identify_arrays(probes, k=3, purpose=purpose)
            rb = b.identify_arrays(probes, k=3, purpose=purpose)
            np.testing.assert_array_equal(ra.identities, rb.identities)
        assert [r.purpose for r in b.consent_records("not-yet-enrolled")] == ["payment"]
    finally:
        a.close()
        b.close()


def test_jobs_with_purpose_on_shards_are_byte_identical(
    consent_files: dict[str, Path], tmp_path: Path, cluster: ClusterHandle
) -> None:
    src = Source(input=str(consent_files["probes"]), chunk_size=128)
    for purpose in (None, "payment"):
        identify_job(
            consent_files["db"], src, _out(tmp_path, "l.csv"), k=2, quiet=True, purpose=purpose
        )
        identify_job_cluster(
            consent_files["shards"],
            src,
            _out(tmp_path, "c.csv"),
            cluster,
            k=2,
            quiet=True,
            purpose=purpose,
        )
        assert (tmp_path / "c.csv").read_bytes() == (tmp_path / "l.csv").read_bytes()
    claims = Source(input=str(consent_files["dir"] / "claims.jsonl"), chunk_size=64)
    skip = Source(input=claims.input, chunk_size=64, on_error="skip")
    a = verify_job(consent_files["db"], skip, _out(tmp_path, "v.csv"), quiet=True)
    b = verify_job_cluster(
        consent_files["shards"], skip, _out(tmp_path, "vc.csv"), cluster, quiet=True
    )
    assert (tmp_path / "vc.csv").read_bytes() == (tmp_path / "v.csv").read_bytes()
    assert (tmp_path / "vc.csv.rejects.csv").read_bytes() == (
        tmp_path / "v.csv.rejects.csv"
    ).read_bytes()
    assert a["rejected"] == b["rejected"] > 100  # payment-only people, the opt-out: no consent
    verify_job(consent_files["db"], skip, _out(tmp_path, "vp.csv"), quiet=True, purpose="payment")
    verify_job_cluster(
        consent_files["shards"], skip, _out(tmp_path, "vpc.csv"), cluster, purpose="payment"
    )
    assert (tmp_path / "vpc.csv").read_bytes() == (tmp_path / "vp.csv").read_bytes()
    assert claims.on_error != "skip"  # the default stops at the first claim without consent
    with pytest.raises(InputError, match="no consent"):
        verify_job_cluster(consent_files["shards"], claims, _out(tmp_path, "x.csv"), cluster)


def test_verify_job_resumes_across_local_and_cluster(
    gallery_files: dict[str, Path],
    tmp_path: Path,
    cluster: ClusterHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One fingerprint helper for both: a verify job interrupted on the cluster finishes in one
    process, and one interrupted in one process finishes on the cluster."""
    from pyfacematch.jobs import runner

    src = Source(input=str(gallery_files["dir"] / "claims.jsonl"), chunk_size=50, on_error="skip")
    verify_job(gallery_files["db"], src, _out(tmp_path, "ref.csv"), quiet=True)
    real = runner.write_results_part
    for first, name in (("cluster", "a.csv"), ("local", "b.csv")):

        def dying(*a: object, calls: dict[str, int] = {"n": 0}, **k: object) -> None:  # noqa: B006
            calls["n"] += 1  # a fresh counter per loop pass (the default is made per def)
            if calls["n"] == 3:
                raise KeyboardInterrupt
            real(*a, **k)  # type: ignore[arg-type]

        monkeypatch.setattr(runner, "write_results_part", dying)
        out = JobOutput(str(tmp_path / name))
        with pytest.raises(KeyboardInterrupt):
            if first == "cluster":
                verify_job_cluster(gallery_files["db"], src, out, cluster, quiet=True)
            else:
                verify_job(gallery_files["db"], src, out, quiet=True)
        monkeypatch.setattr(runner, "write_results_part", real)
        again = JobOutput(str(tmp_path / name), resume=True)
        if first == "cluster":
            s = verify_job(gallery_files["db"], src, again, quiet=True)
        else:
            s = verify_job_cluster(gallery_files["db"], src, again, cluster, quiet=True)
        assert s["resumed"]
        assert (tmp_path / name).read_bytes() == (tmp_path / "ref.csv").read_bytes()


def test_single_enrollments_keep_the_shard_open(
    gallery_files: dict[str, Path], tmp_path: Path, cluster: ClusterHandle
) -> None:
    """Enrollments one at a time into a shard: the shard's worker opens it for writing once and
    keeps it (no reopen, no index rebuild per call); searches after a write reopen the shard
    read-only without a second checksum pass (the worker computed the SHA-256 it wrote)."""
    from pyfacematch.distributed import worker

    n0 = split_gallery(gallery_files["db"], tmp_path / "sh", 2).shards[0].identities
    sg = ShardedGallery(tmp_path / "sh", cluster, batch_size=1000)
    rng = np.random.default_rng(9)
    names = [n for n in (f"solo{i}" for i in range(40)) if shard_of(n, 2) == 0][:4]
    t = rng.standard_normal((len(names), DIM)).astype(np.float32)
    sg.enroll(names[0], t[0])
    sg.identify(t[:1])
    before = cluster.client.run(worker.cache_stats)
    for name, row in zip(names[1:], t[1:]):
        sg.enroll(name, row)
        assert sg.identify(row, k=1)[0].candidates[0].identity == name
    after = cluster.client.run(worker.cache_stats)
    for key in ("writer_opens", "checksums"):
        assert {w: s[key] for w, s in after.items()} == {w: s[key] for w, s in before.items()}
    assert read_manifest(tmp_path / "sh").shards[0].identities == n0 + len(names)
    # the committed manifest matches the shard file: merging (checksums checked) sees them all
    sg.close()  # releases the writer lock
    merge_shards(tmp_path / "sh", tmp_path / "m.db")
    m = Gallery.open(tmp_path / "m.db", read_only=True)
    try:
        assert all(n in m for n in names)
    finally:
        m.close()


def test_cli_verify_on_shards_with_purpose(consent_files: dict[str, Path], tmp_path: Path) -> None:
    """The command line: ``verify -g SHARDS --cluster local:2 --purpose P`` writes what the
    single-process command writes on the gallery file."""
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "pyfacematch", *args],
            cwd=tmp_path,
            capture_output=True,
            timeout=180,
        )

    claims = str(consent_files["dir"] / "claims.jsonl")
    common = ["-i", claims, "--purpose", "payment", "--on-error", "skip", "-q"]
    a = cli("verify", "-g", str(consent_files["db"]), "-o", "l.csv", *common)
    b = cli(
        "verify", "-g", str(consent_files["shards"]), "-o", "c.csv", "--cluster", "local:2", *common
    )
    assert a.returncode == b.returncode == 1, (a.stderr[-2000:], b.stderr[-2000:])  # rejects
    assert (tmp_path / "c.csv").read_bytes() == (tmp_path / "l.csv").read_bytes()
    assert (tmp_path / "c.csv.rejects.csv").read_bytes() == (
        tmp_path / "l.csv.rejects.csv"
    ).read_bytes()


# --------------------------------------------------------------------------- per-worker work
@pytest.fixture(scope="module")
def binary_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tuned binary gallery (3,000 identities, one template each) split into 4 shards, and
    mated probes (each a gallery template plus noise)."""
    d = tmp_path_factory.mktemp("binary")
    rng = np.random.default_rng(5)
    t = rng.standard_normal((3000, DIM)).astype(np.float32)
    g = Gallery.open(d / "people.db", dim=DIM, backend="binary")
    g.enroll_many([f"b{i:05d}" for i in range(len(t))], t)
    g.close()
    who = rng.integers(0, len(t), 1500)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    probes = t[who] + 0.06 * rng.standard_normal((len(who), DIM)).astype(np.float32)
    np.save(d / "probes.npy", probes.astype(np.float32))
    split_gallery(d / "people.db", d / "shards", 4)
    return {"db": d / "people.db", "shards": d / "shards", "probes": d / "probes.npy"}


def test_split_shares_the_binary_centre_and_sizes_each_shortlist(
    binary_files: dict[str, Path],
) -> None:
    """Shards carry the source's binary centre (a probe's code is the same in every shard) and
    re-rank a shortlist sized to their share of the source's, not the whole source's each."""
    from pyfacematch.distributed.shards import shard_shortlist

    one = Gallery.open(binary_files["db"], read_only=True)
    shards = [
        Gallery.open(s.path, read_only=True) for s in read_manifest(binary_files["shards"]).shards
    ]
    try:
        b = one._backend
        assert b.name == "binary" and b.tuned_size > 0
        for s in shards:
            sb = s._backend
            np.testing.assert_array_equal(sb.center, b.center)
            assert sb.depth == shard_shortlist(b.depth, 4) < b.depth
            assert sb.scan_depth == shard_shortlist(b.scan_depth, 4) < b.scan_depth
            # the shard's own codes are the source's codes of the same templates
            tids = s._m.tids[: s._m.n]
            rows = np.searchsorted(one._m.tids[: one._m.n], tids)
            assert np.array_equal(one._m.tids[rows], tids)
            np.testing.assert_array_equal(sb.codes(s._m.n), b.codes(one._m.n)[rows])
    finally:
        one.close()
        for s in shards:
            s.close()
    assert shard_shortlist(32, 1) == 32 and shard_shortlist(32, 2) == 28
    assert shard_shortlist(32, 8) == 12 and shard_shortlist(1, 8) == 1


def test_worker_searches_its_shards_with_probes_prepared_once(
    binary_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker holding several shards checks, normalises and packs a probe chunk once, and
    the merged top-1 is the one gallery's (ids, scores, template ids)."""
    from pyfacematch.core import scoring
    from pyfacematch.distributed import worker

    probes = np.load(binary_files["probes"])
    one = Gallery.open(binary_files["db"], read_only=True)
    try:
        ref = one.identify_arrays(probes, k=1, threshold=0.0, with_tids=True)
    finally:
        one.close()
    group = [
        (i, (s.path, s.sha256)) for i, s in enumerate(read_manifest(binary_files["shards"]).shards)
    ]
    packs: list[int] = []
    real = scoring.pack_signs

    def counted(x: object, center: object = None) -> np.ndarray:
        packs.append(len(x))  # type: ignore[arg-type]
        return real(x, center=center)

    worker.search_group(group, probes[:1], None, 1, None)  # shards opened (their codes packed)
    monkeypatch.setattr(scoring, "pack_signs", counted)
    try:
        s, ids, tids = worker.search_group(group, probes, None, 1, None)
        assert packs == [len(probes)]  # once for the 4 shards, not once per shard
        np.testing.assert_array_equal(ids, ref.identities)
        np.testing.assert_allclose(s, ref.scores, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(tids, ref.tids)
    finally:
        worker.close_all()


def test_a_chunk_read_once_travels_prepared_to_other_workers(
    binary_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One task reads a chunk and prepares it (checked, normalised, sign-packed) for every
    worker: sent to another process (pickled as Dask sends it), the probes are searched there
    without being checked or packed again, and the answer is the one gallery's."""
    import pickle

    from pyfacematch.core import scoring
    from pyfacematch.distributed import worker

    src = Source(input=str(binary_files["probes"]), chunk_size=500)
    one = Gallery.open(binary_files["db"], read_only=True)
    try:
        ref = one.identify_arrays(
            np.load(binary_files["probes"])[500:1000], k=1, threshold=0.0, with_tids=True
        )
    finally:
        one.close()
    group = [
        (i, (s.path, s.sha256)) for i, s in enumerate(read_manifest(binary_files["shards"]).shards)
    ]
    try:
        part = worker.read_part(group[:1], src, 1, None, (), prepare=True)
        sent = pickle.loads(pickle.dumps(part))
        assert sent.chunk.values.size == 0 and len(sent.chunk.ids) == 500  # values travel once
        worker.search_group(group, np.load(binary_files["probes"])[:1], None, 1, None)  # opened

        def refused(*a: object, **kw: object) -> np.ndarray:
            raise AssertionError("probes packed again on the receiving worker")

        monkeypatch.setattr(scoring, "pack_signs", refused)
        monkeypatch.setattr(
            Gallery, "prepare_probes", lambda *a, **kw: refused()
        )  # nor checked again
        s, ids, tids = worker.search_group(group, sent.values, sent.masks, 1, None)
        np.testing.assert_array_equal(ids, ref.identities)
        np.testing.assert_allclose(s, ref.scores, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(tids, ref.tids)
    finally:
        worker.close_all()


def test_prepared_probes_refused_by_another_layout(binary_files: dict[str, Path]) -> None:
    from pyfacematch.errors import DimensionError

    g = Gallery.open(binary_files["db"], read_only=True)
    other = Gallery(DIM * 2)
    try:
        p = np.load(binary_files["probes"])[:20]
        prep = g.prepare_probes(p)
        got = g.identify_arrays(prep, k=2)
        ref = g.identify_arrays(p, k=2)
        np.testing.assert_array_equal(got.identities, ref.identities)
        np.testing.assert_array_equal(got.scores, ref.scores)
        with pytest.raises(DimensionError, match="prepared by a gallery of another key model"):
            other.identify_arrays(prep)
        with pytest.raises(InputError, match="pass masks to prepare_probes"):
            g.identify_arrays(prep, masks=np.zeros(20, np.uint64))
        with pytest.raises(DimensionError):
            g.prepare_probes(np.ones((3, DIM + 1), np.float32))
    finally:
        g.close()
        other.close()


def test_idle_shard_writer_releases_its_lock(
    gallery_files: dict[str, Path], tmp_path: Path, cluster: ClusterHandle
) -> None:
    """A worker keeps a shard open for writing only while writes keep coming: after
    ``WRITER_IDLE`` seconds without one the writer lock is released, so another process can
    write the shard without the ShardedGallery being closed."""
    from pyfacematch.distributed import worker
    from pyfacematch.errors import GalleryLockedError

    split_gallery(gallery_files["db"], tmp_path / "sh", 2)
    sg = ShardedGallery(tmp_path / "sh", cluster, batch_size=1000)
    old = cluster.client.run(worker.set_writer_idle, 0.3)
    try:
        name = next(n for n in (f"idle{i}" for i in range(50)) if shard_of(n, 2) == 1)
        sg.enroll(name, np.random.default_rng(3).standard_normal(DIM).astype(np.float32))
        path = sg.man.shards[1].path
        deadline = time.monotonic() + 20.0
        while True:
            try:
                g = Gallery.open(path)  # a writer in this process: the worker's lock is gone
                break
            except GalleryLockedError:
                assert time.monotonic() < deadline, "the idle shard writer kept its lock"
                time.sleep(0.1)
        try:
            assert name in g
        finally:
            g.close()
    finally:
        cluster.client.run(worker.set_writer_idle, next(iter(old.values())))
        sg.close()


def test_shard_searches_are_audited(
    gallery_files: dict[str, Path], tmp_path: Path, cluster: ClusterHandle
) -> None:
    """Searches on shards leave the shard file unchanged (its manifest SHA-256 holds) and are
    recorded in a sidecar beside it, chained into the shard's audit trail at its next writable
    open."""
    from pyfacematch.distributed import worker

    man = split_gallery(gallery_files["db"], tmp_path / "sh", 2)
    sg = ShardedGallery(tmp_path / "sh", cluster, batch_size=1000)
    sg.identify_arrays(np.load(gallery_files["probes"])[:1000], k=1)
    sg.close()
    cluster.client.run(worker.close_all)  # the read-only shards close their sidecars
    for s, now in zip(man.shards, read_manifest(tmp_path / "sh").shards):
        assert file_sha256(s.path) == now.sha256 == s.sha256  # searching changed no byte
        g = Gallery.open(s.path)  # a writable open chains the sidecar in
        try:
            acts = [a for _, a, _, _ in g.audit_log()]
        finally:
            g.close()
        assert "identify" in acts, acts[-5:]


def test_merge_imports_search_records_waiting_in_shard_sidecars(
    gallery_files: dict[str, Path], tmp_path: Path, cluster: ClusterHandle
) -> None:
    """`shard merge` leaves no search record behind in a sidecar: each shard's waiting records
    are chained into its trail first, and the manifest takes the shard's new SHA-256 (no
    sidecar was imported before: they stayed beside the shards)."""
    from pyfacematch.distributed import verify_shard, worker
    from pyfacematch.gallery.auditsidecar import sidecar_files

    split_gallery(gallery_files["db"], tmp_path / "sh", 2)
    sg = ShardedGallery(tmp_path / "sh", cluster, batch_size=1000)
    sg.identify_arrays(np.load(gallery_files["probes"])[:1000], k=1)
    sg.close()
    cluster.client.run(worker.close_all)  # the read-only shards close their sidecars
    before = read_manifest(tmp_path / "sh")
    assert all(sidecar_files(Path(s.path)) for s in before.shards)
    merge_shards(tmp_path / "sh", tmp_path / "merged.db")
    after = read_manifest(tmp_path / "sh")
    for s0, s in zip(before.shards, after.shards):
        assert not sidecar_files(Path(s.path))
        verify_shard(s)  # the manifest holds the shard's new SHA-256
        assert s.sha256 != s0.sha256 and (s.identities, s.templates) == (
            s0.identities,
            s0.templates,
        )
        g = Gallery.open(s.path, read_only=True, audit_searches=False)
        try:
            acts = [a for _, a, _, _ in g.audit_log()]
        finally:
            g.close()
        assert "identify" in acts and "audit-import" in acts, acts[-5:]
    m = Gallery.open(tmp_path / "merged.db", read_only=True)
    try:
        assert len(m) == sum(s.identities for s in after.shards)
    finally:
        m.close()
