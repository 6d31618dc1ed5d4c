"""``pyfacematch shard split|merge`` and the ``--cluster`` / ``--scheduler`` options of identify and
verify (argument parsing and printing only; see :mod:`pyfacematch.distributed`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

__all__ = ["add_cluster_opts", "add_shard", "cluster_job", "cmd_shard"]


def add_cluster_opts(p: argparse.ArgumentParser) -> None:
    """``--cluster local[:N]`` / ``--scheduler ADDRESS`` of a job (needs the distributed extra)."""
    g = p.add_argument_group("cluster (pip install 'pyfacematch[distributed]')")
    x = g.add_mutually_exclusive_group()
    x.add_argument(
        "--cluster",
        metavar="local[:N]",
        help="run the job on a new local Dask cluster of N worker processes (default: one per "
        "core); -g may then also be a shard manifest or folder",
    )
    x.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the job on a running Dask cluster (tcp://HOST:PORT, or tls://… with Dask's TLS "
        "settings); the workers must see the gallery and input paths",
    )


def cluster_job(args: argparse.Namespace, command: str, source: Any, output: Any) -> dict[str, Any]:
    """Run ``identify`` or ``verify`` on the cluster the options name; returns the summary."""
    from pyfacematch.distributed.cluster import connect, require_dask
    from pyfacematch.distributed.jobs import identify_job_cluster, verify_job_cluster

    require_dask()  # a typed error saying what to install; Dask's loggers exist once imported

    # Dask logs its start and stop at INFO on per-module loggers: keep the job's own lines
    level = logging.ERROR if args.quiet else logging.WARNING
    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(level)

    with connect(args.cluster, args.scheduler) as handle:
        if command == "identify":
            return identify_job_cluster(
                args.gallery,
                source,
                output,
                handle,
                k=args.top_k,
                threshold=args.threshold,
                key_model=args.key_model,
                quiet=args.quiet,
                purpose=args.purpose,
            )
        return verify_job_cluster(
            args.gallery,
            source,
            output,
            handle,
            identity=args.identity,
            claim_field=args.claim_field,
            threshold=args.threshold,
            key_model=args.key_model,
            quiet=args.quiet,
            purpose=args.purpose,
        )


def add_shard(subs: Any) -> None:
    """Register ``shard split`` and ``shard merge``."""
    p = subs.add_parser(
        "shard",
        help="split a gallery into shards (for a Dask cluster), or merge shards back",
        description=(
            "Split a gallery into N shard galleries (identities placed by a stable hash of their "
            "id, with all their templates) plus manifest.json (SHA-256 of each shard, thresholds, "
            "key model); or merge a sharded gallery back into one file.\n\n"
            "examples:\n"
            "  pyfacematch shard split -g people.db --shards 8 -o shards/\n"
            "  pyfacematch identify -g shards/ -i probes.npy -o out.csv --cluster local\n"
            "  pyfacematch shard merge -m shards/ -o people2.db"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ss = p.add_subparsers(dest="shard_command", metavar="ACTION")
    sp = ss.add_parser("split", help="split a gallery file into shards")
    sp.add_argument("-g", "--gallery", required=True, metavar="PATH", help="gallery file")
    sp.add_argument("--shards", required=True, type=int, metavar="N", help="number of shards")
    sp.add_argument("-o", "--out", required=True, metavar="FOLDER", help="shard folder")
    sp.add_argument("--key-model", metavar="PATH", help="key model to ship with the shards")
    sp.add_argument("--backend", help="search backend of the shards (default: the gallery's)")
    sp.add_argument("--overwrite", action="store_true", help="replace shards in FOLDER")
    mp = ss.add_parser("merge", help="merge a sharded gallery into one gallery file")
    mp.add_argument("-m", "--manifest", required=True, metavar="PATH", help="manifest or folder")
    mp.add_argument("-o", "--output", required=True, metavar="PATH", help="new gallery file")
    mp.add_argument("--overwrite", action="store_true", help="replace the output file")
    for q in (sp, mp):
        q.add_argument("-q", "--quiet", action="store_true", help="no messages")
        q.add_argument("--threads", type=int, default=None, metavar="N", help="core threads")
        q.add_argument("--summary", metavar="PATH", help="write the JSON summary here")


def cmd_shard(args: argparse.Namespace) -> int:
    from pyfacematch.distributed import merge_shards, split_gallery
    from pyfacematch.errors import InputError

    if args.shard_command == "split":
        man = split_gallery(
            args.gallery,
            args.out,
            args.shards,
            key_model=args.key_model,
            backend=args.backend,
            overwrite=args.overwrite,
        )
        summary: dict[str, Any] = {"manifest": man.path, **man.to_json()}
        msg = (
            f"shard split: {sum(s.identities for s in man.shards):,} identities into "
            f"{man.n_shards} shards ("
            + ", ".join(f"{s.identities:,}" for s in man.shards)
            + f"); manifest {man.path}"
        )
    elif args.shard_command == "merge":
        summary = merge_shards(args.manifest, args.output, overwrite=args.overwrite)
        msg = (
            f"shard merge: {summary['identities']:,} identities from {summary['shards']} shards "
            f"into {summary['output']}"
        )
    else:
        raise InputError("give an action: pyfacematch shard split … or pyfacematch shard merge …")
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2, sort_keys=True)
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)
    return 0
