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
    s2 = identify_job_cluster(
        gallery_files["shards"], src, _out(tmp_path, "sh.csv"), cluster, k=3, quiet=True
    )
    local = (tmp_path / "local.csv").read_bytes()
    assert (tmp_path / "cl.csv").read_bytes() == local
    assert (tmp_path / "sh.csv").read_bytes() == local
    assert s1["processed"] == s2["processed"] == 2500
    assert s2["cluster"]["tasks"] == 7 * (
        3 + 1
    )  # a read and 3 shard searches per chunk and s2["cluster"]["shards"] == 3


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
    with pytest.raises(InputError, match="shard manifest"):
        verify_job_cluster(gallery_files["shards"], src, _out(tmp_path, "x.csv"), cluster)


def test_worker_killed_mid_job_output_identical(
    gallery_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL one worker process (by pid) while its tasks run: they rerun elsewhere."""
    src = Source(input=str(gallery_files["probes"]), chunk_size=100)  # 25 chunks
    identify_job(gallery_files["db"], src, _out(tmp_path, "ref.csv"), k=2, quiet=True)
    monkeypatch.setenv("PYFACEMATCH_TEST_TASK_DELAY", "0.08")  # inherited by the new workers
    with connect("local:2") as h:
        pids = h.client.run(os.getpid)
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
