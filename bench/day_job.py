"""A day's identification job through the real command (issue 5 benchmark): a thin entry point
over :func:`pyfacematch.bench.dayjob.measure_cli_day_job`.

Protocol (the data of ``bench/gallery.py``): N identities at d = 512, centres uniform on the
sphere, a template is ``normalise(centre + 0.734·g/√d)`` (two templates of one person: cosine
≈ 0.65; of two people ≈ 0). The gallery holds one template per identity; every probe is a fresh
template of an enrolled identity (drawn with replacement).

Steps, each a subprocess of the real ``pyfacematch`` command, timed with its own peak memory:

1. ``pyfacematch enroll`` of the gallery ``.npy`` (build, reported apart);
2. for each backend (default first): the backend's index is built and tuned once
   (``Gallery.open(…, backend=…)``, reported apart), then
   ``pyfacematch identify -i probes.npy -o results.parquet`` — reading, searching, writing the
   results and the summary included; peak memory is the VmHWM of that process;
3. in the same run, the backend's own batched rate (``Gallery.identify_arrays`` on big chunks of
   the same probes, opening not timed) and the job's rate as a share of it, by wall and by CPU
   seconds per probe (issue 14: >= 90%);
4. recall@1 against exact search on a sample of probes (exact top-1 by ``pyfacematch.topk``
   over the whole gallery), and rank-1 accuracy against the true identity.

Usage::

    python bench/day_job.py                                # 1M probes vs 1M gallery
    python bench/day_job.py --probes 100000 --gallery 100000 --backends binary,exact,ivfpq
    # prepare once (data + enroll), then time only the job (and the backend's rate) later:
    python bench/day_job.py --backends binary --work /work/data/day1m --prepare-only
    python bench/day_job.py --backends binary --work /work/data/day1m --reuse
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from pyfacematch.bench.dayjob import add_day_job_args, measure_cli_day_job
from pyfacematch.bench.report import write_json
from pyfacematch.bench.util import machine, machine_line


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_day_job_args(ap, probes=1_000_000, gallery=1_000_000, work="/tmp/pfm-day-job")
    ap.add_argument("--backends", default="binary,exact,ivfpq", help="first = the default backend")
    ap.add_argument("--sample", type=int, default=1000, help="probes checked against exact search")
    ap.add_argument(
        "--rate-probes",
        type=int,
        default=100_000,
        help="probes of the backend's batched rate measured after each job, same run (0: skip)",
    )
    ap.add_argument("--rate-chunk", type=int, default=50_000, help="chunk of that measurement")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="reuse --work if a run with the same sizes prepared it (data + enrolled gallery): "
        "time the job alone; the folder is kept",
    )
    ap.add_argument(
        "--prepare-only", action="store_true", help="generate and enroll into --work, then stop"
    )
    a = ap.parse_args(argv)
    info = machine()
    print(machine_line(info), file=sys.stderr, flush=True)
    try:
        out = measure_cli_day_job(
            Path(a.work),
            a.gallery,
            a.probes,
            a.dim,
            backends=tuple(b.strip() for b in a.backends.split(",") if b.strip()),
            sample=a.sample,
            chunk_size=a.chunk_size,
            seed=a.seed,
            keep=a.keep,
            log=log,
            rate_probes=a.rate_probes,
            rate_chunk=a.rate_chunk,
            reuse=a.reuse or a.prepare_only,
            prepare_only=a.prepare_only,
        )
    except subprocess.CalledProcessError as exc:
        log(f"{' '.join(exc.cmd[:2])} failed with exit code {exc.returncode}")
        return 1
    out["machine"] = info
    if a.json:
        write_json(out, Path(a.json))
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
