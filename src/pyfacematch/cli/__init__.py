"""The ``pyfacematch`` command: enroll, identify, verify, remove, calibrate, info, export, demo, bench.

Exit codes (every subcommand):

- ``0``: success;
- ``1``: finished, but some records were rejected (see the rejects file and the
  JSON summary);
- ``2``: usage or input error (bad option, unreadable file, a bad record with
  ``--on-error stop``, gallery missing …): nothing was left half done that
  ``--resume`` cannot finish;
- ``3``: internal error (a bug: please report it with the traceback);
- ``130``: interrupted (Ctrl-C); an ``identify``/``verify`` job can be resumed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from pyfacematch.errors import InputError, PyFaceMatchError

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_REJECTS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

EXIT_CODES = """\
exit codes:
  0    success
  1    finished, but some records were rejected (rejects file + summary say which and why)
  2    usage or input error (bad option, unreadable file, bad record with --on-error stop)
  3    internal error (a bug: please report it)
  130  interrupted (identify/verify jobs continue with --resume)"""

FORMATS_HELP = """\
input formats (from the file ending, or --input-format):
  .npy      float array (n, d) of templates or (n, P, 2|3) of landmarks; ids = row numbers
  .npz      arrays ids, templates|landmarks, optional masks, visibility, claim
  .parquet  columns id, template|landmarks (list of numbers), optional mask, visibility, claim
  .csv      header; id column, then the numbers (f0,f1,… or x0,y0,x1,y1,…), optional mask
  .jsonl    {"id": "p1", "template": [...], "mask": 7} one object per line
  -         standard input (csv, jsonl or npy: give --input-format)"""

log = logging.getLogger("pyfacematch.cli")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


# --------------------------------------------------------------------------- options
def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("general")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress and no messages")
    g.add_argument(
        "--threads", type=int, default=None, metavar="N", help="core threads (default: all cores)"
    )
    g.add_argument("--summary", metavar="PATH", help="write the JSON run summary here")


def _gallery_opt(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "-g",
        "--gallery",
        required=required,
        metavar="PATH",
        help="gallery file (SQLite; index checkpoints go to PATH.index/)",
    )


def _input_opts(p: argparse.ArgumentParser, required: bool = True, what: str = "records") -> None:
    g = p.add_argument_group("input")
    g.add_argument("-i", "--input", metavar="PATH", help=f"{what} file, or - for stdin")
    g.add_argument(
        "--images",
        metavar="FOLDER",
        help="face images instead of --input (enroll: FOLDER/<identity>/<image>; "
        "probes: any folder, id = relative path), embedded with --embedder",
    )
    g.add_argument(
        "--embedder",
        default="dlib",
        metavar="SPEC",
        help="image embedder: dlib, dlib:cnn or onnx:<model.onnx> (default dlib)",
    )
    g.add_argument(
        "--input-format",
        choices=("npy", "npz", "parquet", "csv", "jsonl"),
        help="input format (default: from the file ending)",
    )
    g.add_argument("--id-field", default="id", metavar="NAME", help="id column/field (default id)")
    g.add_argument(
        "--key-model",
        metavar="PATH",
        help="input holds landmarks: make keys with this key model (.npz from KeyModel.save)",
    )
    g.add_argument(
        "--chunk-size",
        type=int,
        default=10_000,
        metavar="N",
        help="records read, searched and written at a time (bounded memory; default 10000)",
    )
    g.add_argument(
        "--on-error",
        choices=("stop", "skip"),
        default="stop",
        help="bad record: stop naming file and row (default), or skip it to the rejects file",
    )
    g.add_argument(
        "--rejects", metavar="PATH", help="rejects file (.csv or .jsonl; default next to output)"
    )


def _output_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument(
        "-o", "--output", required=True, metavar="PATH", help="results (.csv, .jsonl, .parquet)"
    )
    g.add_argument(
        "--output-format", choices=("csv", "jsonl", "parquet"), help="default: from the ending"
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted job after its last completed chunk (same command and "
        "options; from stdin, pipe the same data again)",
    )
    g.add_argument(
        "--overwrite", action="store_true", help="replace an existing output / unfinished job"
    )
    g.add_argument(
        "--log-interval",
        type=float,
        default=10.0,
        metavar="SEC",
        help="seconds between progress lines when not on a terminal (default 10)",
    )


def _threshold_opt(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help=f"accept when score >= T (default: the gallery's calibrated {kind} threshold, if any)",
    )


def _sub(
    subs: Any, name: str, help_: str, description: str, examples: str
) -> argparse.ArgumentParser:
    epilog = "examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  ")
    epilog += "\n\n" + EXIT_CODES
    return subs.add_parser(
        name,
        help=help_,
        description=textwrap.dedent(description).strip(),
        epilog=epilog,
        formatter_class=_Formatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyfacematch`` command."""
    top = argparse.ArgumentParser(
        prog="pyfacematch",
        description=(
            "Face template matching: enroll people, identify (1:N) and verify (1:1) probes in "
            "bulk, resumable jobs with progress, opt-out, thresholds calibrated to a target rate."
        ),
        epilog=(
            "examples:\n"
            "  pyfacematch demo                              # synthetic, no data needed\n"
            "  pyfacematch enroll -g people.db -i gallery.parquet\n"
            "  pyfacematch identify -g people.db -i probes.parquet -o results.csv\n"
            "  pyfacematch <command> --help                  # options and examples\n\n"
            + FORMATS_HELP
            + "\n\n"
            + EXIT_CODES
        ),
        formatter_class=_Formatter,
    )
    from pyfacematch import __version__

    top.add_argument("--version", action="version", version=f"pyfacematch {__version__}")
    subs = top.add_subparsers(dest="command", metavar="COMMAND")

    # enroll
    p = _sub(
        subs,
        "enroll",
        "add identities to a gallery (created if missing)",
        """
        Enroll templates (or landmarks, with --key-model) into a gallery, creating it if
        needed. Each record is one template of the identity in its id column; repeated ids
        in the input give an identity several templates. Records are enrolled a chunk at a
        time (one transaction each).
        """,
        """
        pyfacematch enroll -g people.db -i gallery.parquet
        pyfacematch enroll -g people.db -i faces.jsonl --key-model keys.npz
        pyfacematch enroll -g people.db -i new.csv --on-duplicate append --on-error skip
        cat more.jsonl | pyfacematch enroll -g people.db -i - --input-format jsonl
        """,
    )
    _gallery_opt(p)
    _input_opts(p, what="templates or landmarks")
    p.add_argument(
        "--backend",
        choices=("binary", "exact", "flat", "hnsw", "ivf", "ivfpq"),
        help="search backend of a new gallery (default: binary codes + exact re-rank)",
    )
    p.add_argument(
        "--on-duplicate",
        choices=("refuse", "append"),
        default="refuse",
        help="id already in the gallery: reject the record (default) or add a template",
    )
    p.add_argument(
        "--blocks",
        metavar="OFFSETS",
        help="new gallery of masked templates: region-block offsets 0,a,b,…,d",
    )
    _common(p)

    # identify
    p = _sub(
        subs,
        "identify",
        "search probes against a gallery (1:N), resumable",
        """
        Identify every probe against the gallery: the k best identities, their scores and a
        decision (match when score >= threshold). Probes are read, searched and written in
        chunks (bounded memory); the job is resumable: after a crash or kill, run the same
        command with --resume and the output is exactly that of an uninterrupted run.
        Writes the results, a rejects file (if any) and a JSON summary (OUTPUT.summary.json:
        counts, rejects by reason, throughput, backend, threshold and where it came from).

        Result columns: probe_id, rank (1 = best; 0 = no comparable candidate), identity,
        score (cosine; masked cosine for galleries with region blocks), decision ("match"
        when score >= threshold, "no-match", empty when there is no threshold).
        """,
        """
        pyfacematch identify -g people.db -i probes.parquet -o results.parquet
        pyfacematch identify -g people.db -i probes.csv -o results.csv -k 5 --threshold 0.6
        pyfacematch identify -g people.db -i probes.npy -o results.jsonl --resume
        pyfacematch identify -g people.db -i day.jsonl -o day.csv --on-error skip --quiet
        """,
    )
    _gallery_opt(p)
    _input_opts(p, what="probe templates or landmarks")
    _output_opts(p)
    p.add_argument(
        "-k", "--top-k", type=int, default=1, metavar="K", help="identities per probe (default 1)"
    )
    _threshold_opt(p, "FPIR")
    _common(p)

    # verify
    p = _sub(
        subs,
        "verify",
        "compare probes with claimed identities (1:1), resumable",
        """
        Verify each probe against the identity it claims (the 'claim' column/field, or one
        --identity for all): its best score over the identity's templates and a decision.
        Output rows: probe_id, rank (1), identity, score, decision. Unknown claimed
        identities are rejects.
        """,
        """
        pyfacematch verify -g people.db -i claims.jsonl -o verdicts.csv
        pyfacematch verify -g people.db -i probes.npy --identity alice -o alice.csv
        """,
    )
    _gallery_opt(p)
    _input_opts(p, what="probe templates or landmarks")
    _output_opts(p)
    p.add_argument(
        "--claim-field", default="claim", metavar="NAME", help="claimed identity field (claim)"
    )
    p.add_argument("--identity", metavar="ID", help="verify every probe against this identity")
    _threshold_opt(p, "FMR")
    _common(p)

    # remove
    p = _sub(
        subs,
        "remove",
        "opt-out: erase identities from a gallery",
        """
        Erase identities (opt-out): from the store, the search index and every index file;
        the audit log records the removal without biometric data. Ids come from the command
        line and/or a file with one id per line (- for stdin).
        """,
        """
        pyfacematch remove -g people.db alice bob
        pyfacematch remove -g people.db --id alice
        pyfacematch remove -g people.db -i optouts.txt --on-error skip
        """,
    )
    _gallery_opt(p)
    p.add_argument("ids", nargs="*", metavar="ID", help="identity ids to erase")
    p.add_argument(
        "--id", action="append", default=[], dest="id_opts", metavar="ID", help="an id (repeatable)"
    )
    p.add_argument("-i", "--input", metavar="PATH", help="file of ids, one per line (- = stdin)")
    p.add_argument(
        "--on-error",
        choices=("stop", "skip"),
        default="stop",
        help="unknown id: stop (default) or skip it to the rejects file",
    )
    p.add_argument(
        "--rejects", metavar="PATH", help="rejects file (default GALLERY.remove-rejects.csv)"
    )
    _common(p)

    # calibrate
    p = _sub(
        subs,
        "calibrate",
        "calibrate and store a decision threshold (target FMR or FPIR)",
        """
        Compute the threshold reaching a target false-match rate (verification, --fmr) or
        false-positive identification rate (identification, --fpir) and store it in the
        gallery; verify/identify use it when no --threshold is given.
        --fpir: INPUT holds probes of people NOT enrolled (searched here).
        --fmr:  INPUT holds labelled templates; impostor pairs (different ids) are scored.
        Or give --scores FILE of impostor scores (.npy, or text with one number per line).
        """,
        """
        pyfacematch calibrate -g people.db --fpir 1e-3 -i nonmated.parquet
        pyfacematch calibrate -g people.db --fmr 1e-4 -i labelled.npz
        pyfacematch calibrate -g people.db --fmr 1e-4 --scores impostor_scores.npy
        pyfacematch calibrate -g people.db --impostors scores.npy --fmr 1e-4
        """,
    )
    _gallery_opt(p)
    _input_opts(p, required=False, what="templates or landmarks")
    rate = p.add_mutually_exclusive_group(required=True)
    rate.add_argument("--fmr", type=float, metavar="RATE", help="target false match rate (1:1)")
    rate.add_argument("--fpir", type=float, metavar="RATE", help="target FPIR (1:N)")
    p.add_argument(
        "--scores",
        "--impostors",
        dest="scores",
        metavar="PATH",
        help="impostor scores instead of --input (.npy, or text with one number per line)",
    )
    p.add_argument(
        "--max-pairs",
        type=int,
        default=1_000_000,
        metavar="N",
        help="--fmr from templates: impostor pairs sampled (default 1e6)",
    )
    p.add_argument(
        "--conservative",
        action="store_true",
        help="use the upper confidence bound of the rate (stricter threshold)",
    )
    _common(p)

    # info
    p = _sub(
        subs,
        "info",
        "describe a gallery (JSON on stdout)",
        """
        Print a gallery's size, dimension, blocks, search backend (tuned depth, measured
        recall) and stored thresholds as JSON.
        """,
        """
        pyfacematch info -g people.db
        pyfacematch info -g people.db | python -m json.tool
        """,
    )
    _gallery_opt(p)
    _common(p)

    # export
    p = _sub(
        subs,
        "export",
        "write a gallery's templates to a file",
        """
        Write every enrolled template (id, template, mask) to a file that enroll and
        identify read back (.npz, .parquet, .csv, .jsonl).
        """,
        """
        pyfacematch export -g people.db -o backup.parquet
        pyfacematch export -g people.db -o templates.npz
        """,
    )
    _gallery_opt(p)
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="output file")
    p.add_argument("--output-format", choices=("npz", "parquet", "csv", "jsonl"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    _common(p)

    # demo
    p = _sub(
        subs,
        "demo",
        "synthetic end-to-end run (no data needed)",
        """
        Generate synthetic faces (200-point landmarks), learn a key model on a separate set
        of synthetic people, enroll a gallery, identify clean and masked probes, and print
        accuracy and throughput.
        """,
        """
        pyfacematch demo
        pyfacematch demo --identities 10000 --probes 500
        pyfacematch demo --gallery demo.db      # keep the gallery
        """,
    )
    p.add_argument(
        "--identities", type=int, default=100_000, metavar="N", help="gallery size (100000)"
    )
    p.add_argument(
        "--probes", type=int, default=500, metavar="N", help="probes per condition (500)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument(
        "--backend",
        default="exact",
        choices=("binary", "exact", "flat", "hnsw", "ivf", "ivfpq"),
        help="search backend (exact: the keys are short, a full scan is fastest here)",
    )
    p.add_argument("-g", "--gallery", metavar="PATH", help="keep the gallery in this file")
    _common(p)

    # bench
    p = _sub(
        subs,
        "bench",
        "run the benchmark suite",
        """
        Run a benchmark of the suite (pyfacematch.bench) and write its report to OUT.
        """,
        """
        pyfacematch bench smoke --out /tmp/bench-smoke
        pyfacematch bench quick --out bench-results/
        pyfacematch bench full --sections scoring,gallery
        """,
    )
    p.add_argument(
        "name", nargs="?", default="quick", help="suite: smoke (seconds), quick (default), full"
    )
    p.add_argument("--out", default="bench-results", metavar="DIR", help="report folder")
    p.add_argument("--sections", metavar="A,B", help="run only these sections (comma-separated)")
    _common(p)
    return top


# --------------------------------------------------------------------------- helpers
def _say(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr, flush=True)


def _open_gallery(path: str, *, create: bool = False, **kw: Any) -> Any:
    from pyfacematch.gallery.gallery import Gallery

    if not create and not os.path.exists(path):
        raise InputError(
            f"gallery {path!r} does not exist: create it with `pyfacematch enroll -g {path} -i …`"
        )
    return Gallery.open(path, **kw)


def _key_model(args: argparse.Namespace) -> Any:
    if not getattr(args, "key_model", None):
        return None
    from pyfacematch.keys.model import KeyModel

    if not os.path.exists(args.key_model):
        raise InputError(f"key model {args.key_model!r} does not exist")
    return KeyModel.load(args.key_model)


def _reader(args: argparse.Namespace, gallery: Any, km: Any, fields: Sequence[str] = ()) -> Any:
    from pyfacematch.io import ImageFolderReader, RecordReader

    if (args.input is None) == (getattr(args, "images", None) is None):
        raise InputError("give exactly one of --input FILE or --images FOLDER")
    if getattr(args, "images", None) is not None:
        if km is not None:
            raise InputError("--images makes templates with an embedder: drop --key-model")
        if fields:
            raise InputError("image folders carry no claim field: use --identity ID")
        from pyfacematch.embed import create_embedder

        emb = create_embedder(args.embedder)
        if gallery is not None and int(emb.dim) != gallery.dim:
            raise InputError(
                f"the embedder {args.embedder!r} makes templates of dimension {emb.dim}, the "
                f"gallery holds dimension {gallery.dim}: use the embedder it was enrolled with"
            )
        return ImageFolderReader(
            args.images,
            emb,
            role="enroll" if args.command == "enroll" else "probe",
            chunk_size=min(args.chunk_size, 256),
            on_error=args.on_error,
        )

    nb = None
    if gallery is not None and gallery.blocks is not None:
        nb = int(gallery.blocks.size - 1)
    elif gallery is None and getattr(args, "blocks", None):  # new gallery of masked templates
        nb = int(_parse_blocks(args.blocks).size - 1)  # type: ignore[union-attr]
    return RecordReader(
        args.input,
        "landmarks" if km is not None else "templates",
        args.input_format,
        dim=None if gallery is None or km is not None else gallery.dim,
        points=None if km is None else km.scheme.n_points,
        n_blocks=nb,
        id_field=args.id_field,
        fields=fields,
        chunk_size=args.chunk_size,
        on_error=args.on_error,
    )


def _check_model_gallery(km: Any, g: Any) -> None:
    if km is None or g is None:
        return
    if g.dim != km.dim or g.blocks is None or not np.array_equal(g.blocks, km.blocks):
        raise InputError(
            f"the key model makes keys of dimension {km.dim} with {km.n_blocks} blocks, the "
            f"gallery holds dimension {g.dim} with "
            f"{'no' if g.blocks is None else g.blocks.size - 1} blocks: use the key model the "
            "gallery was enrolled with"
        )


def encode_chunk(km: Any, chunk: Any, reader: Any) -> tuple[Any, np.ndarray, np.ndarray, list[Any]]:
    """Landmarks of a chunk → (chunk of the faces that made a key, keys, masks, new rejects).

    Faces that cannot make a key become rejects (with ``--on-error skip``) or stop
    the job naming the row.
    """
    from pyfacematch.io import Reject

    lm = chunk.values
    if lm.shape[0] == 0:
        return chunk, np.zeros((0, km.dim), np.float32), np.zeros(0, np.uint64), []
    if lm.shape[2] != km.dims:
        if lm.shape[2] == 3 and km.dims == 2:
            lm = np.ascontiguousarray(lm[:, :, :2])
        else:
            raise InputError(
                f"{reader.name}: landmarks have {lm.shape[2]} coordinates per point, the key "
                f"model takes {km.dims}"
            )
    keys, masks, status = km.encode(lm, chunk.visibility, on_error="flag", return_status=True)
    bad = np.flatnonzero(status)
    if bad.size == 0:
        return chunk, keys, masks, []
    reasons = km.reasons(status[bad])
    rej = [
        Reject(int(chunk.rows[i]), None, chunk.ids[i], f"landmarks cannot make a key: {why}")
        for i, why in zip(bad.tolist(), reasons)
    ]
    if reader.on_error == "stop":
        raise reader.fail(rej[0])
    keep = status == 0
    return chunk.select(keep), keys[keep], masks[keep], rej


def _templates_of(
    chunk: Any, km: Any, reader: Any
) -> tuple[Any, np.ndarray, np.ndarray | None, list[Any]]:
    if km is not None:
        return encode_chunk(km, chunk, reader)
    return chunk, chunk.values, chunk.masks, []


def _default_side(path: str, suffix: str) -> str:
    return f"{path}{suffix}"


def _write_summary(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    if getattr(args, "summary", None):
        from pyfacematch.gallery import atomic as _fileio

        _fileio.atomic_write(
            args.summary, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()
        )


def _threshold_info(thr: float | None, source: str, target: float | None) -> dict[str, Any]:
    return {"value": thr, "source": source, "target": target}


# --------------------------------------------------------------------------- commands
def cmd_enroll(args: argparse.Namespace) -> int:
    from pyfacematch.io import write_rejects
    from pyfacematch.jobs.runner import Progress, prefetch

    km = _key_model(args)
    exists = os.path.exists(args.gallery)
    g = _open_gallery(args.gallery, create=True, backend=args.backend) if exists else None
    try:
        _check_model_gallery(km, g)
        reader = _reader(args, g, km)
        rejects = []
        enrolled_now: set[str] = set()
        n_records = n_templates = 0
        t0 = time.monotonic()
        prog = Progress(reader.count_records(), "enroll", quiet=args.quiet, unit="record")
        try:
            for chunk in prefetch(reader.chunks()):
                chunk, vals, masks, extra = _templates_of(chunk, km, reader)
                n_records += chunk.count
                rejects.extend(chunk.rejects + extra)
                if g is None and len(chunk):
                    blocks = km.blocks if km is not None else _parse_blocks(args.blocks)
                    g = _open_gallery(
                        args.gallery,
                        create=True,
                        dim=int(vals.shape[1]),
                        blocks=blocks,
                        backend=args.backend,
                    )
                if len(chunk):
                    keep = np.ones(len(chunk), bool)
                    if args.on_duplicate == "refuse":
                        for i, ident in enumerate(chunk.ids):
                            if ident not in enrolled_now and ident in g:
                                keep[i] = False
                                rej = _reject(chunk, i, "duplicate id: already enrolled")
                                if args.on_error == "stop":
                                    raise reader.fail(rej)
                                rejects.append(rej)
                    idx = np.flatnonzero(keep)
                    if idx.size:
                        ids = [chunk.ids[i] for i in idx]
                        mk = None if masks is None or g.blocks is None else masks[idx]
                        g.enroll_many(ids, vals[idx], mk, on_duplicate="append")
                        enrolled_now.update(ids)
                        n_templates += idx.size
                prog.update(chunk.count)
        except InputError as exc:
            if n_templates:
                raise InputError(
                    f"{exc} ({n_templates:,} templates enrolled before the stop are kept: each "
                    "chunk is one transaction)"
                ) from exc
            raise
        finally:
            prog.close()
            reader.close()
        secs = time.monotonic() - t0
        rej_path = args.rejects or _default_side(args.gallery, ".enroll-rejects.csv")
        if rejects:
            write_rejects(rej_path, sorted(rejects, key=lambda r: r.row))
        summary = {
            "command": "enroll",
            "gallery": args.gallery,
            "records": n_records,
            "templates_enrolled": n_templates,
            "identities_enrolled": len(enrolled_now),
            "gallery_identities": 0 if g is None else len(g),
            "gallery_templates": 0 if g is None else g.n_templates,
            "rejected": len(rejects),
            "reject_reasons": _reason_counts(rejects),
            "rejects_file": rej_path if rejects else None,
            "seconds": round(secs, 3),
            "records_per_second": round(n_records / secs, 1) if secs > 0 else None,
            "backend": None if g is None else g.index_info().get("backend"),
            "exit_code": EXIT_REJECTS if rejects else EXIT_OK,
        }
        _write_summary(args, summary)
        _say(
            args,
            f"enroll: {n_templates:,} templates of {len(enrolled_now):,} identities enrolled, "
            f"{len(rejects):,} rejected, {secs:.1f} s; gallery now holds "
            f"{summary['gallery_identities']:,} identities"
            + (f"; rejects in {rej_path}" if rejects else ""),
        )
        return summary["exit_code"]
    finally:
        if g is not None:
            g.close()


def _reject(chunk: Any, i: int, reason: str) -> Any:
    from pyfacematch.io import Reject

    return Reject(int(chunk.rows[i]), None, chunk.ids[i], reason)


def _reason_counts(rejects: Sequence[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rejects:
        out[r.kind] = out.get(r.kind, 0) + 1
    return dict(sorted(out.items()))


def _parse_blocks(s: str | None) -> np.ndarray | None:
    if not s:
        return None
    try:
        return np.asarray([int(x) for x in s.split(",")], np.int64)
    except ValueError:
        raise InputError(f"--blocks expects comma-separated integer offsets, got {s!r}") from None


def _gallery_fingerprint(g: Any) -> dict[str, Any]:
    info = g.index_info()
    fp = {
        "gallery": os.path.abspath(os.fspath(g.path)) if g.path is not None else None,
        "identities": len(g),
        "templates": g.n_templates,
        "dim": g.dim,
        "backend": info.get("backend"),
    }
    store = getattr(g, "_store", None)
    if store is not None and hasattr(store, "generation"):
        fp["generation"] = int(store.generation)
    for key in ("depth", "shortlist", "nprobe", "ef_search"):
        if key in info:
            fp[f"index_{key}"] = info[key]
    return fp


def _input_fingerprint(args: argparse.Namespace, reader: Any) -> dict[str, Any]:
    from pyfacematch.jobs.runner import file_fingerprint

    if hasattr(reader, "fingerprint"):
        return {**reader.fingerprint(), "embedder": args.embedder}
    return file_fingerprint(args.input)


def _job_paths(args: argparse.Namespace) -> tuple[str, str, str]:
    from pyfacematch.io import detect_format

    fmt = detect_format(args.output, args.output_format, output=True)
    rejects = args.rejects or _default_side(args.output, ".rejects.csv")
    summary = args.summary or _default_side(args.output, ".summary.json")
    return fmt, rejects, summary


def _run_job(args: argparse.Namespace, spec: Any, reader: Any, process: Any) -> dict[str, Any]:
    """Runs a resumable bulk job with the command line's resume / overwrite / progress options."""
    from pyfacematch.jobs.runner import run_job

    return run_job(
        spec,
        reader,
        process,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
        log_interval=args.log_interval,
    )


def cmd_identify(args: argparse.Namespace) -> int:
    from pyfacematch.jobs.runner import JobSpec, file_fingerprint, result_columns

    if args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    fmt, rej_path, sum_path = _job_paths(args)
    km = _key_model(args)
    g = _open_gallery(args.gallery)
    try:
        _check_model_gallery(km, g)
        reader = _reader(args, g, km)
        thr, src, target = g.resolve_threshold(args.threshold, "fpir")
        k = int(args.top_k)

        def process(chunk: Any) -> Any:
            chunk2, vals, masks, extra = _templates_of(chunk, km, reader)
            if len(chunk2):
                res = g.identify_arrays(
                    vals, k=k, threshold=thr, masks=masks if g.blocks is not None else None
                )
                cols = result_columns(chunk2.ids, res.identities, res.scores, thr)
                matches = 0 if res.accepted is None else int(res.accepted.sum())
            else:
                cols = result_columns([], np.empty((0, k), object), np.empty((0, k)), thr)
                matches = 0
            return cols, extra, {"matches": matches}

        spec = JobSpec(
            "identify",
            args.output,
            fmt,
            rej_path,
            sum_path,
            {
                "input": _input_fingerprint(args, reader),
                "input_format": reader.fmt,
                "id_field": args.id_field,
                "key_model": None if km is None else file_fingerprint(args.key_model),
                "k": k,
                "threshold": _threshold_info(thr, src, target),
                **_gallery_fingerprint(g),
            },
            {
                "threshold": _threshold_info(thr, src, target),
                "k": k,
                "input": args.input or args.images,
                "index": g.index_info(),
                "gallery_identities": len(g),
            },
        )
        summary = _run_job(args, spec, reader, process)
    finally:
        g.close()
    _say(
        args,
        f"identify: {summary['processed']:,} probes identified, {summary['rejected']:,} "
        f"rejected, {summary.get('matches', 0):,} matches"
        + (f" (threshold {thr:.4f}, {src})" if thr is not None else " (no threshold)")
        + f"; {summary['probes_per_second_this_run'] or 0:,.0f} probes/s; results in "
        f"{args.output}, summary in {sum_path}",
    )
    return int(summary["exit_code"])


def cmd_verify(args: argparse.Namespace) -> int:
    from pyfacematch.io import ResultColumns
    from pyfacematch.jobs.runner import JobSpec, file_fingerprint

    fmt, rej_path, sum_path = _job_paths(args)
    km = _key_model(args)
    g = _open_gallery(args.gallery)
    try:
        _check_model_gallery(km, g)
        fields = () if args.identity else (args.claim_field,)
        reader = _reader(args, g, km, fields=fields)
        thr, src, target = g.resolve_threshold(args.threshold, "fmr")
        if args.identity is not None and args.identity not in g:
            raise InputError(f"identity {args.identity!r} is not enrolled in {args.gallery}")

        def process(chunk: Any) -> Any:
            chunk2, vals, masks, extra = _templates_of(chunk, km, reader)
            pid: list[str] = []
            ident: list[str | None] = []
            scores: list[float] = []
            dec: list[str | None] = []
            matches = 0
            for i in range(len(chunk2)):
                claim = args.identity or chunk2.fields[args.claim_field][i]
                if claim is None or claim not in g:
                    why = (
                        f"missing claim: no {args.claim_field!r} value"
                        if claim is None
                        else "unknown identity: the claimed identity is not enrolled"
                    )
                    rej = _reject(chunk2, i, why)
                    if reader.on_error == "stop":
                        raise reader.fail(rej)
                    extra.append(rej)
                    continue
                mk = None if g.blocks is None or masks is None else int(masks[i])
                r = g.verify(claim, vals[i], threshold=thr, mask=mk)
                pid.append(chunk2.ids[i])
                ident.append(claim)
                scores.append(r.score)
                acc = r.decision.accepted
                dec.append(None if acc is None else ("match" if acc else "no-match"))
                matches += bool(acc)
            cols = ResultColumns(
                pid, np.ones(len(pid), np.int32), ident, np.asarray(scores, np.float32), dec
            )
            return cols, extra, {"matches": matches}

        spec = JobSpec(
            "verify",
            args.output,
            fmt,
            rej_path,
            sum_path,
            {
                "input": _input_fingerprint(args, reader),
                "input_format": reader.fmt,
                "id_field": args.id_field,
                "claim": args.identity or f"field:{args.claim_field}",
                "key_model": None if km is None else file_fingerprint(args.key_model),
                "threshold": _threshold_info(thr, src, target),
                **_gallery_fingerprint(g),
            },
            {"threshold": _threshold_info(thr, src, target), "input": args.input or args.images},
        )
        summary = _run_job(args, spec, reader, process)
    finally:
        g.close()
    _say(
        args,
        f"verify: {summary['processed']:,} probes verified, {summary['rejected']:,} rejected, "
        f"{summary.get('matches', 0):,} matches; results in {args.output}",
    )
    return int(summary["exit_code"])


def cmd_remove(args: argparse.Namespace) -> int:
    from pyfacematch.errors import UnknownIdentityError
    from pyfacematch.io import Reject, write_rejects

    ids: list[tuple[int, str]] = [(0, i) for i in [*args.ids, *args.id_opts]]
    if args.input:
        fh = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115
        try:
            for ln, line in enumerate(fh, 1):
                s = line.strip()
                if s:
                    ids.append((ln, s))
        finally:
            if fh is not sys.stdin:
                fh.close()
    if not ids:
        raise InputError("give identity ids to remove (arguments or --input FILE)")
    g = _open_gallery(args.gallery)
    removed = 0
    rejects = []
    try:
        for n, (ln, ident) in enumerate(ids, 1):
            try:
                g.remove(ident)
                removed += 1
            except UnknownIdentityError:
                where = f"{args.input} line {ln}" if ln else f"argument {n}"
                if args.on_error == "stop":
                    raise InputError(
                        f"{where}: identity {ident!r} is not enrolled "
                        f"({removed} removed before it); pass --on-error skip to go on"
                    ) from None
                rejects.append(Reject(n, ln or None, ident, "unknown identity: not enrolled"))
    finally:
        g.close()
    rej_path = args.rejects or _default_side(args.gallery, ".remove-rejects.csv")
    if rejects:
        write_rejects(rej_path, rejects)
    summary = {
        "command": "remove",
        "gallery": args.gallery,
        "requested": len(ids),
        "removed": removed,
        "rejected": len(rejects),
        "reject_reasons": _reason_counts(rejects),
        "rejects_file": rej_path if rejects else None,
        "exit_code": EXIT_REJECTS if rejects else EXIT_OK,
    }
    _write_summary(args, summary)
    _say(args, f"remove: {removed} identities erased, {len(rejects)} not found")
    return summary["exit_code"]


def _read_scores(path: str) -> np.ndarray:
    try:
        if path.endswith(".npy"):
            a = np.load(path, allow_pickle=False)
        else:
            a = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read impostor scores from {path!r}: {exc}") from exc
    return np.asarray(a, np.float64).ravel()


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pyfacematch.jobs.runner import prefetch

    if ((args.input or args.images) is None) == (args.scores is None):
        raise InputError(
            "give exactly one of --input (templates), --images (folder) or --scores "
            "(impostor scores)"
        )
    km = _key_model(args)
    g = _open_gallery(args.gallery)
    rejects: list[Any] = []
    try:
        _check_model_gallery(km, g)
        kw: dict[str, Any] = {"conservative": args.conservative}
        if args.fmr is not None:
            kw["fmr"] = args.fmr
        else:
            kw["fpir"] = args.fpir
        if args.scores is not None:
            rec = g.calibrate(_read_scores(args.scores), **kw)
        else:
            reader = _reader(args, g, km)
            ids: list[str] = []
            vals: list[np.ndarray] = []
            top: list[np.ndarray] = []
            for chunk in prefetch(reader.chunks()):
                chunk, v, m, extra = _templates_of(chunk, km, reader)
                rejects.extend(chunk.rejects + extra)
                if not len(chunk):
                    continue
                if args.fpir is not None:  # stream: only the top scores are kept
                    res = g.identify_arrays(v, k=1, masks=m if g.blocks is not None else None)
                    s = res.scores[:, 0] if res.scores.shape[1] else np.full(len(chunk), np.nan)
                    top.append(np.nan_to_num(s.astype(np.float64), nan=-np.inf))
                else:
                    ids.extend(chunk.ids)
                    vals.append(np.asarray(v, np.float32))
            reader.close()
            if args.fpir is not None:
                if not top:
                    raise InputError(f"{args.input}: no usable non-mated probes")
                rec = g.calibrate(np.concatenate(top), **kw)
            else:
                if not vals:
                    raise InputError(f"{args.input}: no usable templates")
                a, b = _impostor_pairs(ids, np.concatenate(vals), args.max_pairs)
                rec = g.calibrate(pairs=(a, b), **kw)
    finally:
        g.close()
    summary = {
        "command": "calibrate",
        "gallery": args.gallery,
        "kind": rec.name,
        "threshold": rec.value,
        "target": rec.target,
        "n_scores": rec.n_scores,
        "gallery_size": rec.gallery_size,
        "rejected": len(rejects),
        "reject_reasons": _reason_counts(rejects),
        "exit_code": EXIT_REJECTS if rejects else EXIT_OK,
    }
    _write_summary(args, summary)
    print(json.dumps(summary, indent=2))
    _say(
        args,
        f"calibrate: {rec.name.upper()} {rec.target:g} → threshold {rec.value:.6f} "
        f"from {rec.n_scores:,} impostor scores (stored in {args.gallery})",
    )
    return summary["exit_code"]


def _impostor_pairs(ids: list[str], t: np.ndarray, max_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random pairs of templates with different ids (all pairs when few)."""
    n = len(ids)
    lab = np.unique(np.asarray(ids, dtype=object).astype(str), return_inverse=True)[1]
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, 1)
    else:
        rng = np.random.default_rng(0)
        i = rng.integers(0, n, int(max_pairs * 1.2) + 16)
        j = rng.integers(0, n, i.size)
    keep = lab[i] != lab[j]
    i, j = i[keep][:max_pairs], j[keep][:max_pairs]
    if i.size == 0:
        raise InputError("--fmr needs templates of at least two different ids")
    return t[i], t[j]


def cmd_info(args: argparse.Namespace) -> int:
    g = _open_gallery(args.gallery)
    try:
        th = {}
        for kind in ("fmr", "fpir"):
            rec = g.threshold(kind)
            th[kind] = (
                None
                if rec is None
                else {
                    "value": rec.value,
                    "target": rec.target,
                    "n_scores": rec.n_scores,
                    "gallery_size": rec.gallery_size,
                }
            )
        info = {
            "gallery": args.gallery,
            "identities": len(g),
            "templates": g.n_templates,
            "dim": g.dim,
            "blocks": None if g.blocks is None else [int(x) for x in g.blocks],
            "index": g.index_info(),
            "thresholds": th,
        }
    finally:
        g.close()
    _write_summary(args, info)
    print(json.dumps(info, indent=2, default=str))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from pyfacematch.io import detect_format, write_table

    fmt = args.output_format or detect_format(args.output, None)
    if fmt not in ("npz", "parquet", "csv", "jsonl"):
        raise InputError(f"export writes npz, parquet, csv or jsonl, not {fmt}")
    if os.path.exists(args.output) and not args.overwrite:
        raise InputError(f"output {args.output} exists: pass --overwrite to replace it")
    g = _open_gallery(args.gallery)
    try:
        ids: list[str] = []
        rows: list[np.ndarray] = []
        for ident in g.identities():
            t = g.templates(ident)
            ids.extend([ident] * len(t))
            rows.append(t)
        vals = np.concatenate(rows) if rows else np.zeros((0, g.dim), np.float32)
        masks = None
        if g.blocks is not None:
            m = getattr(g, "_m", None)
            if m is not None and m.masks is not None:
                # masks of each identity's templates, in the same order as templates()
                masks = (
                    np.concatenate(
                        [
                            m.masks[m.tid_to_row[np.asarray(g._slot_tids[g._name_to_slot[i]])]]
                            for i in g.identities()
                        ]
                    )
                    if ids
                    else np.zeros(0, np.uint64)
                )
        write_table(args.output, fmt, ids, vals, masks=masks)
    finally:
        g.close()
    summary = {"command": "export", "output": args.output, "templates": len(ids), "exit_code": 0}
    _write_summary(args, summary)
    _say(args, f"export: {len(ids):,} templates written to {args.output}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from pyfacematch.jobs.demo import run_demo

    summary = run_demo(
        identities=args.identities,
        probes=args.probes,
        seed=args.seed,
        backend=args.backend,
        gallery=args.gallery,
        quiet=args.quiet,
    )
    _write_summary(args, summary)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from pyfacematch.bench import run_suite  # type: ignore[attr-defined]
    except ImportError:
        print(
            "pyfacematch bench: error: the benchmark suite is not installed "
            "(pyfacematch.bench.run_suite is missing)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    kw: dict[str, Any] = {}
    if args.sections:
        kw["sections"] = [x.strip() for x in args.sections.split(",") if x.strip()]
    if args.quiet:
        kw["log"] = lambda *a, **k: None
    res = run_suite(args.name, args.out, **kw)
    if isinstance(res, dict):
        _write_summary(args, res)
    return EXIT_OK


COMMANDS = {
    "enroll": cmd_enroll,
    "identify": cmd_identify,
    "verify": cmd_verify,
    "remove": cmd_remove,
    "calibrate": cmd_calibrate,
    "info": cmd_info,
    "export": cmd_export,
    "demo": cmd_demo,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.ERROR if args.quiet else logging.WARNING,
        format="pyfacematch: %(levelname)s: %(message)s",
    )
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise InputError(f"--threads must be >= 1, got {args.threads}")
            from pyfacematch import set_num_threads

            set_num_threads(args.threads)
        if getattr(args, "chunk_size", 1) < 1:
            raise InputError(f"--chunk-size must be >= 1, got {args.chunk_size}")
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # e.g. `pyfacematch info … | head`: the reader went away
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"pyfacematch {args.command}: interrupted", file=sys.stderr)
        return 130
    except (PyFaceMatchError, OSError) as exc:
        from pyfacematch.jobs.runner import describe_error

        print(f"pyfacematch {args.command}: error: {describe_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # a bug: show everything
        traceback.print_exc()
        print(
            f"pyfacematch {args.command}: internal error (exit {EXIT_INTERNAL}): please report "
            "it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
