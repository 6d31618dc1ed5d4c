"""Compact templates at scale (issue 15): int8 / bf16 scans with an exact float32 re-score from a
memory-mapped serving folder, against FAISS in the same run.

Synthetic gallery as in the gallery benchmark (:class:`~pyfacematch.bench.synthdata.SyntheticIdentities`),
streamed in chunks into a serving folder (:class:`~pyfacematch.index.serving.ServingFolder`: float32 +
int8 codes + ids, per-block checksums), so memory while writing is bounded by the chunk, not by N.
Then, in one process: one probe at a time (median of interleaved rounds) for pyfacematch int8 and
bf16 (exact float32 re-score from the mapped file), pyfacematch float32, ``faiss.IndexFlatIP`` and
``faiss.IndexScalarQuantizer`` (SQ8); a batch; and whether the compact answers are identical to the
float32 exact re-rank over every row. In fresh child processes: open-to-first-answer and peak RSS
of (a) mapping the folder and answering, (b) the rebuild path (read the float32 file into memory,
quantise, answer), (c) FAISS Flat loaded from the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "write_synthetic"]


def write_synthetic(
    folder: Path, n: int, d: int, seed: int = 0, chunk: int = 131072, kind: str = "int8"
) -> float:
    """Stream n synthetic identities into a serving folder; returns seconds taken."""
    import pyfacematch as pf
    from pyfacematch.bench.synthdata import SyntheticIdentities
    from pyfacematch.index.serving import ServingFolder

    s = SyntheticIdentities(n, d, seed=seed, chunk=8192)
    t0 = time.perf_counter()
    sf = None
    for start in range(0, n, chunk):
        # rows [start, start + count) of the protocol's gallery (same centres and noise per seed)
        x = _rows(s, start, min(chunk, n - start))
        c = pf.CompactMatrix.from_float32(x, kind)
        ids = np.arange(start, start + len(x), dtype=np.int64)
        if sf is None:
            sf = ServingFolder.write(folder, x, ids, compact=c)
        else:
            sf.append(x, ids, compact=c)
    return time.perf_counter() - t0


def _rows(s: Any, start: int, count: int) -> np.ndarray:
    """Rows [start, start + count) of ``s.gallery()`` without building the whole gallery."""
    out = np.empty((count, s.d), np.float32)
    c0, c1 = start // s.chunk, (start + count - 1) // s.chunk
    for c in range(c0, c1 + 1):
        cen = s._centres(c)
        block = s._noisy(cen, np.random.default_rng([s.seed, c, 2]))
        a = max(start, c * s.chunk)
        b = min(start + count, c * s.chunk + len(cen))
        out[a - start : b - start] = block[a - c * s.chunk : b - c * s.chunk]
    return out


def _rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM: unlike ru_maxrss, not inherited from the
    parent across fork + exec); mapped file pages touched count, as they occupy memory."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(mode: str, folder: str, probes_file: str, single: int) -> dict[str, Any]:
    """Runs in a fresh process: open, first answer, then identify; peak RSS."""
    import pyfacematch as pf
    from pyfacematch.index.serving import ServingFolder

    q = np.load(probes_file)
    search: Any
    t0 = time.perf_counter()
    if mode == "mapped":
        sf = ServingFolder.open(folder)  # checksums verified by a background pass
        search = sf.search  # compact scan in memory, the kept float32 rows read with pread
    elif mode == "rebuild":
        sf = ServingFolder.open(folder, verify="none")
        x = np.fromfile(Path(folder) / "float32.bin", np.float32).reshape(sf.n, sf.dim)
        c = pf.CompactMatrix.from_float32(x, "int8", exact=x)
        search = c.topk
    else:  # faiss flat from the same float32 file
        import faiss

        sf = ServingFolder.open(folder, verify="none")
        x = np.fromfile(Path(folder) / "float32.bin", np.float32).reshape(sf.n, sf.dim)
        index = faiss.IndexFlatIP(sf.dim)
        index.add(x)
        del x

        search = index.search

    search(q[:1], 10)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for j in range(single):
        search(q[j : j + 1], 10)
    per_probe = (time.perf_counter() - t1) / max(single, 1)
    if mode == "mapped":
        sf.check()  # the background verification finished clean
    return {
        "mode": mode,
        "open_to_first_s": first,
        "single_ms": per_probe * 1e3,
        "peak_rss_mb": _rss_mb(),
    }


def _children(folder: Path, n: int, d: int, single: int) -> list[dict[str, Any]]:
    """Open-to-first-answer and peak memory of each opening path, each in a fresh process."""
    from pyfacematch.bench.synthdata import SyntheticIdentities
    from pyfacematch.bench.util import table

    q, _ = SyntheticIdentities(n, d, seed=0).mated_probes(64, seed=2)
    pfile = str(folder.parent / "probes.npy")
    np.save(pfile, np.ascontiguousarray(q, np.float32))
    kids = []
    for mode in ("mapped", "rebuild", "faiss-flat"):
        cmd = [
            sys.executable,
            "-m",
            "pyfacematch.bench.compact",
            "--child",
            mode,
            "--dir",
            str(folder),
            "--probes-file",
            pfile,
            "--single",
            str(single),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ))
        kids.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print("\n## fresh process: open → first answer, then one probe at a time (page cache warm)\n")
    print(
        table(
            ["path", "open→first answer (s)", "ms/probe", "peak RSS (MB)"],
            [
                [
                    r["mode"],
                    f"{r['open_to_first_s']:.2f}",
                    f"{r['single_ms']:.1f}",
                    f"{r['peak_rss_mb']:.0f}",
                ]
                for r in kids
            ],
        )
    )
    return kids


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--probes", type=int, default=256, help="batch size of the batched run")
    ap.add_argument("--repeat", type=int, default=9, help="interleaved rounds, one probe at a time")
    ap.add_argument("--dir", help="serving folder (default: a temporary folder, deleted after)")
    ap.add_argument("--keep", action="store_true", help="keep the serving folder")
    ap.add_argument("--no-faiss-batch", action="store_true", help="skip FAISS Flat on the batch")
    ap.add_argument(
        "--only-children", action="store_true", help="only the fresh-process runs (--dir)"
    )
    ap.add_argument(
        "--gallery",
        help="measure Gallery(...) reopened from its serving folder vs rebuilt, on this gallery "
        "file (built with serving=True if missing, kept)",
    )
    ap.add_argument("--chunk", type=int, default=65536, help="rows per enroll_many (--gallery)")
    ap.add_argument("--child-build", help=argparse.SUPPRESS)
    ap.add_argument("--child-open", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--probes-file", help=argparse.SUPPRESS)
    ap.add_argument("--single", type=int, default=30, help="probes one at a time in the child runs")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    if a.child_build or a.child_open or a.gallery:
        from pyfacematch.bench import reopen

        if a.child_build:
            r = reopen.build_child(a.child_build, a.n, a.d, a.chunk)
        elif a.child_open:
            r = reopen.open_child(a.child_open[0], a.child_open[1], a.probes_file, a.single)
        else:
            from pyfacematch.bench.util import machine, machine_line

            print(machine_line(machine()))
            print("# shared machine: figures are noisy; compare the two rows of the same run")
            r = reopen.run(Path(a.gallery), a.n, a.d, a.single, a.chunk)
            if a.json:
                Path(a.json).write_text(json.dumps(r, indent=1))
        if a.child_build or a.child_open:
            print(json.dumps(r))
        return r
    if a.child:
        r = child(a.child, a.dir, a.probes_file, a.single)
        print(json.dumps(r))
        return r

    import faiss

    import pyfacematch as pf
    from pyfacematch.bench.synthdata import SyntheticIdentities
    from pyfacematch.bench.util import machine, machine_line, median_times_interleaved, table
    from pyfacematch.index.serving import ServingFolder

    info = machine()
    print(machine_line(info))
    print(
        f"# compact bench: N={a.n} d={a.d} k={a.k}; shared machine: figures are noisy, ratios are same-run"
    )
    tmp = None
    folder = Path(a.dir) if a.dir else Path(tmp := tempfile.mkdtemp(prefix="pfm-compact-")) / "srv"
    out: dict[str, Any] = {"n": a.n, "d": a.d, "k": a.k}
    try:
        if (folder / "manifest.json").exists():
            print(f"# using the serving folder {folder}")
        else:
            out["write_s"] = write_synthetic(folder, a.n, a.d)
            print(f"# wrote {folder} in {out['write_s']:.1f} s (streamed in chunks)", flush=True)
        if a.only_children:
            kids = _children(folder, a.n, a.d, a.single)
            out["children"] = kids
            return out
        sf = ServingFolder.open(folder, verify="none")
        c8 = sf.compact()
        assert c8 is not None
        du = sum(f.stat().st_size for f in folder.iterdir())
        out["disk_bytes_per_identity"] = du / sf.n
        q, _ = SyntheticIdentities(a.n, a.d, seed=0).mated_probes(max(a.probes, 64), seed=1)
        q = np.ascontiguousarray(q, np.float32)
        x = np.array(sf.float32)  # in RAM for FAISS and the float32 baselines
        t0 = time.perf_counter()
        cb = pf.CompactMatrix.from_float32(x, "bf16", exact=sf.float32)
        out["bf16_build_s"] = time.perf_counter() - t0
        flat = faiss.IndexFlatIP(a.d)
        flat.add(x)
        sq8 = faiss.IndexScalarQuantizer(
            a.d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        sq8.train(x[: min(len(x), 200_000)])
        sq8.add(x)
        it = iter(range(1 << 30))

        def one() -> np.ndarray:
            j = next(it) % 64
            return q[j : j + 1]

        k = a.k
        engines = {
            "pyfacematch int8 + exact re-score (mapped)": lambda: c8.topk(one(), k),
            "pyfacematch bf16 + exact re-score (mapped)": lambda: cb.topk(one(), k),
            "pyfacematch float32 (RAM)": lambda: pf.topk(one(), x, k),
            "faiss IndexFlatIP": lambda: flat.search(one(), k),
            "faiss IndexScalarQuantizer SQ8": lambda: sq8.search(one(), k),
        }
        med = median_times_interleaved(engines, repeat=a.repeat)
        base_flat = med["faiss IndexFlatIP"]
        base_sq8 = med["faiss IndexScalarQuantizer SQ8"]
        rows = [
            [name, f"{t * 1e3:.1f}", f"{base_flat / t:.2f}", f"{base_sq8 / t:.2f}"]
            for name, t in med.items()
        ]
        print(f"\n## one probe at a time, median of {a.repeat} interleaved rounds (ms)\n")
        print(table(["engine", "ms/probe", "× faiss Flat", "× faiss SQ8"], rows))
        out["single_ms"] = {n_: t * 1e3 for n_, t in med.items()}
        # the answers: identical to the float32 exact re-rank over every row?
        m_eq = 16
        cand = np.broadcast_to(np.arange(sf.n, dtype=np.int64), (1, sf.n))
        same8 = sameb = 0
        nc_all = []
        for j in range(m_eq):
            es, ei = pf.rerank(q[j : j + 1], x, cand, k)
            s8, i8, nc = c8.topk(q[j : j + 1], k, return_shortlist=True)
            sb, ib = cb.topk(q[j : j + 1], k)
            same8 += int(np.array_equal(i8, ei) and np.array_equal(s8, es))
            sameb += int(np.array_equal(ib, ei) and np.array_equal(sb, es))
            nc_all.append(int(nc[0]))
        _, fi = flat.search(q[:m_eq], k)
        _, i8 = c8.topk(q[:m_eq], k)
        out["identical_to_exact"] = {"int8": f"{same8}/{m_eq}", "bf16": f"{sameb}/{m_eq}"}
        out["recall_at_1_vs_faiss_flat"] = float(np.mean(fi[:, 0] == i8[:, 0]))
        out["rescored_rows_median"] = float(np.median(nc_all))
        print(
            f"\n# answers identical to the float32 exact re-rank over all rows: int8 {same8}/{m_eq}, "
            f"bf16 {sameb}/{m_eq}; recall@1 vs faiss Flat {out['recall_at_1_vs_faiss_flat']:.3f}; "
            f"rows re-scored in float32 per probe (median): {out['rescored_rows_median']:.0f}"
        )
        # a batch
        qb = q[: a.probes]
        batch = {
            "pyfacematch int8 + exact re-score (mapped)": lambda: c8.topk(qb, k),
            "faiss IndexScalarQuantizer SQ8": lambda: sq8.search(qb, k),
        }
        if not a.no_faiss_batch:
            batch["faiss IndexFlatIP"] = lambda: flat.search(qb, k)
        medb = median_times_interleaved(batch, repeat=1, warmup=0)
        print(f"\n## batch of {len(qb)} probes (probes/s)\n")
        print(table(["engine", "probes/s"], [[n_, f"{len(qb) / t:.0f}"] for n_, t in medb.items()]))
        out["batch_probes_per_s"] = {n_: len(qb) / t for n_, t in medb.items()}
        # fresh processes: open-to-first-answer and peak memory
        pfile = str(folder.parent / "probes.npy")
        np.save(pfile, q[:64])
        kids = []
        for mode in ("mapped", "rebuild", "faiss-flat"):
            cmd = [
                sys.executable,
                "-m",
                "pyfacematch.bench.compact",
                "--child",
                mode,
                "--dir",
                str(folder),
                "--probes-file",
                pfile,
                "--single",
                str(a.single),
            ]
            res = subprocess.run(
                cmd, capture_output=True, text=True, check=True, env=dict(os.environ)
            )
            kids.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(
            "\n## fresh process: open → first answer, then one probe at a time (page cache warm)\n"
        )
        print(
            table(
                ["path", "open→first answer (s)", "ms/probe", "peak RSS (MB)"],
                [
                    [
                        r["mode"],
                        f"{r['open_to_first_s']:.2f}",
                        f"{r['single_ms']:.1f}",
                        f"{r['peak_rss_mb']:.0f}",
                    ]
                    for r in kids
                ],
            )
        )
        out["children"] = kids
        print(
            f"\n# disk per identity: {out['disk_bytes_per_identity']:.0f} bytes (float32 + int8 + ids + manifest)"
        )
    finally:
        if tmp and not a.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(
            json.dumps({"machine": info, "compact": out}, indent=1, default=str)
        )
    return out


if __name__ == "__main__":
    main()
