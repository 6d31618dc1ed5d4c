"""The day's job in one process and on a Dask LocalCluster (issue 17 benchmark): a thin entry
point over :func:`pyfacematch.bench.distributed.measure_distributed`. (Not named ``distributed.py``: run
as a script, this folder comes first on the import path and that name would shadow Dask's
``distributed`` package.)

Usage::

    python bench/cluster_day_job.py                                   # 200k probes vs 200k gallery
    python bench/cluster_day_job.py --probes 1000000 --gallery 1000000 --shards 2,8 --rounds 1

    # data built once (resumable), then only the three jobs timed, as often as wanted:
    python bench/cluster_day_job.py --probes 1000000 --gallery 1000000 --data .bench/1m --prepare-only
    python bench/cluster_day_job.py --probes 1000000 --gallery 1000000 --data .bench/1m --rounds 1 \
        --no-search-cost
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pyfacematch.bench.dayjob import add_day_job_args
from pyfacematch.bench.distributed import measure_distributed
from pyfacematch.bench.report import write_json
from pyfacematch.bench.util import machine, machine_line
from pyfacematch.errors import InputError


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_day_job_args(ap, probes=200_000, gallery=200_000, work="/tmp/pfm-distributed")
    ap.add_argument("--shards", default="2,8", help="shard counts, comma-separated")
    ap.add_argument("--workers", type=int, default=2, help="single-thread worker processes")
    ap.add_argument("--backend", default="binary")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (medians)")
    ap.add_argument(
        "--no-search-cost",
        action="store_true",
        help="skip the one-chunk CPU comparison of the whole gallery and its shards",
    )
    ap.add_argument(
        "--data",
        metavar="DIR",
        help="a data folder kept across runs instead of --work: the probes, the enrolled gallery "
        "and its shards are built there once (what is missing is finished, nothing is deleted) "
        "and later runs only time the jobs",
    )
    ap.add_argument(
        "--prepare-only", action="store_true", help="with --data: build the data, time nothing"
    )
    ap.add_argument(
        "--compare-read",
        action="store_true",
        help="also run each cluster job the old way (every worker reads each chunk), same run",
    )
    a = ap.parse_args(argv)
    if a.prepare_only and not a.data:
        ap.error("--prepare-only needs --data DIR")
    info = machine()
    print(machine_line(info), file=sys.stderr, flush=True)
    try:
        out = run(a, log)
    except InputError as exc:  # a --data folder of other sizes: say so, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out["machine"] = info
    if a.json:
        write_json(out, Path(a.json))
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2))
    return 0


def run(a: argparse.Namespace, log: Any) -> dict[str, Any]:
    return measure_distributed(
        Path(a.data or a.work),
        a.gallery,
        a.probes,
        a.dim,
        shards=tuple(int(x) for x in a.shards.split(",") if x.strip()),
        workers=a.workers,
        backend=a.backend,
        chunk_size=a.chunk_size,
        rounds=a.rounds,
        seed=a.seed,
        keep=a.keep,
        search_cost=not a.no_search_cost,
        reuse=bool(a.data),
        prepare_only=a.prepare_only,
        compare_read=a.compare_read,
        log=log,
    )


if __name__ == "__main__":
    sys.exit(main())
