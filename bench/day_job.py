"""A day's identification job through the real command (issue 5 benchmark).

Protocol (the one of ``bench/gallery.py``): N identities at d = 512, centres
uniform on the sphere, a template is ``normalise(centre + 0.734·g/√d)`` (two
templates of one person: cosine ≈ 0.65; of two people ≈ 0). The gallery holds
one template per identity; every probe is a fresh template of an enrolled
identity (drawn with replacement).

Steps, each a subprocess of the real ``pyfacematch`` command, timed with its
own peak memory (``os.wait4`` rusage of that child):

1. ``pyfacematch enroll`` of the gallery ``.npy`` (build, reported apart);
2. for each backend (default first): the backend's index is built and tuned
   once (``Gallery.open(…, backend=…)``, reported apart), then
   ``pyfacematch identify -i probes.npy -o results.parquet`` — reading,
   searching, writing the results and the summary included; peak memory is the VmHWM of that
   process;
3. recall@1 against exact search on a sample of probes (exact top-1 by
   ``pyfacematch.topk`` over the whole gallery), and rank-1 accuracy against
   the true identity.

Usage::

    python bench/day_job.py                                # 1M probes vs 1M gallery
    python bench/day_job.py --probes 100000 --gallery 100000 --backends binary,exact,ivfpq
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import pyfacematch as pf
from pyfacematch.bench.synthdata import SyntheticIdentities


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate(work: Path, n_gal: int, n_probes: int, d: int, seed: int) -> np.ndarray:
    """Write gallery.npy and probes.npy (the suite's generator); return each probe's identity."""
    ids = SyntheticIdentities(n_gal, d, seed=seed)
    np.save(work / "gallery.npy", ids.gallery())
    pr = np.lib.format.open_memmap(work / "probes.npy", "w+", np.float32, (n_probes, d))
    truth = np.empty(n_probes, np.int64)
    done = 0
    for x, who in ids.probes(n_probes, seed=seed + 1):
        pr[done : done + len(x)] = x
        truth[done : done + len(x)] = who
        done += len(x)
    pr.flush()
    del pr
    return truth


# Runs the real command and records its own peak RSS (VmHWM of the exec'ed process: the
# rusage of a child also counts the parent's pages it inherited before exec).
_WRAP = """
import sys
from pyfacematch.cli import main
try:
    rc = main(sys.argv[2:])
finally:
    with open('/proc/self/status') as f:
        hwm = next(x for x in f if x.startswith('VmHWM'))
    with open(sys.argv[1], 'w') as f:
        f.write(hwm.split()[1])
sys.exit(rc)
"""


def timed(args: list[str], env: dict[str, str], work: Path) -> tuple[float, float, int]:
    """Run ``pyfacematch ARGS``; (wall seconds, its peak RSS in MiB, exit code)."""
    hwm = work / "hwm.txt"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _WRAP, str(hwm), *args], env=env)
    wall = time.perf_counter() - t0
    try:
        rss = int(hwm.read_text()) / 1024.0  # kB -> MiB
    except (OSError, ValueError):
        rss = float("nan")
    return wall, rss, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--probes", type=int, default=1_000_000)
    ap.add_argument("--gallery", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--backends", default="binary,exact,ivfpq", help="first = the default backend")
    ap.add_argument("--sample", type=int, default=1000, help="probes checked against exact search")
    ap.add_argument("--chunk-size", type=int, default=10_000)
    ap.add_argument("--work", default="/tmp/pfm-day-job", help="scratch folder (deleted first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--json", metavar="PATH", help="write the figures here")
    a = ap.parse_args()

    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, PYTHONSAFEPATH="1")
    out: dict[str, object] = {
        "gallery": a.gallery,
        "probes": a.probes,
        "dim": a.dim,
        "threads": pf.get_num_threads(),
        "simd": pf.simd.info().get("active"),
        "chunk_size": a.chunk_size,
    }
    log(f"day job: {a.probes:,} probes vs {a.gallery:,} identities, d={a.dim}")
    t = time.perf_counter()
    truth = generate(work, a.gallery, a.probes, a.dim, a.seed)
    out["seconds_generate"] = time.perf_counter() - t
    log(f"  data generated in {out['seconds_generate']:.1f} s")

    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    db = str(work / "day.db")
    wall, rss, code = timed(
        ["enroll", "-g", db, "-i", str(work / "gallery.npy"), "--backend", backends[0],
         "--chunk-size", "50000", "--quiet"],
        env,
        work,
    )  # fmt: skip
    if code != 0:
        log(f"enroll failed with exit code {code}")
        return 1
    out["enroll"] = {"seconds": wall, "peak_rss_mib": rss, "backend": backends[0]}
    log(f"  enroll (SQLite store + {backends[0]} index): {wall:.1f} s, peak {rss:,.0f} MiB")

    # exact reference on a sample
    gal = np.load(work / "gallery.npy", mmap_mode="r")
    probes = np.load(work / "probes.npy", mmap_mode="r")
    rng = np.random.default_rng(a.seed + 1)
    sample = np.sort(rng.choice(a.probes, min(a.sample, a.probes), replace=False))
    t = time.perf_counter()
    g_mat = np.ascontiguousarray(gal, np.float32)
    _, ref_idx = pf.topk(np.ascontiguousarray(probes[sample]), g_mat, 1)
    del g_mat
    out["seconds_exact_reference"] = time.perf_counter() - t
    ref = ref_idx[:, 0]

    results = {}
    for b in backends:
        t = time.perf_counter()
        from pyfacematch.gallery import Gallery

        g = Gallery.open(db, backend=b)
        info = g.index_info()
        g.close()
        t_build = time.perf_counter() - t
        res = work / f"results-{b}.parquet"
        wall, rss, code = timed(
            ["identify", "-g", db, "-i", str(work / "probes.npy"), "-o", str(res),
             "--chunk-size", str(a.chunk_size), "--quiet", "--overwrite"],
            env,
            work,
        )  # fmt: skip
        if code != 0:
            log(f"identify ({b}) failed with exit code {code}")
            return 1
        summary = json.loads(Path(f"{res}.summary.json").read_text())
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        tbl = pq.read_table(res, columns=["probe_id", "rank", "identity"])
        top = tbl.filter(pc.equal(tbl.column("rank"), 1))
        pid = np.asarray(top.column("probe_id").to_numpy(zero_copy_only=False).astype(np.int64))
        ident = np.asarray(top.column("identity").to_numpy(zero_copy_only=False).astype(np.int64))
        got = np.full(a.probes, -1, np.int64)
        got[pid] = ident
        recall = float(np.mean(got[sample] == ref))
        acc = float(np.mean(got == truth))
        r = {
            "index_build_and_tune_seconds": t_build,
            "identify_wall_seconds": wall,
            "identify_peak_rss_mib": rss,
            "probes_per_second_wall": a.probes / wall,
            "probes_per_second_job": summary.get("probes_per_second_this_run"),
            "recall_at_1_vs_exact": recall,
            "rank1_accuracy_vs_truth": acc,
            "exact_rank1_accuracy_on_sample": float(np.mean(ref == truth[sample])),
            "index": {
                k: info.get(k)
                for k in (
                    "backend",
                    "depth",
                    "measured_recall_at_1",
                    "shortlist",
                    "nprobe",
                    "fallback",
                )
            },
        }
        results[b] = r
        log(
            f"  {b:7s} index {t_build:7.1f} s | identify {wall:7.1f} s wall, "
            f"{a.probes / wall:8,.0f} probes/s, peak {rss:7,.0f} MiB | recall@1 vs exact "
            f"{recall:.4f} (sample {len(sample)}), rank-1 vs truth {acc:.4f}"
        )
    out["backends"] = results
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
