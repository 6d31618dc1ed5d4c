"""The argument parser of the ``pyfacematch`` command: one function per subcommand's arguments."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from pyfacematch.cli.distributed import add_cluster_opts, add_shard
from pyfacematch.cli.multimodal import add_multimodal
from pyfacematch.cli.serve import add_serve

__all__ = ["EXIT_CODES", "FORMATS_HELP", "SUBCOMMANDS", "build_parser"]

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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


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
        "--landmarker",
        choices=("mediapipe", "dlib"),
        help="--images with --key-model: find the landmarks with MediaPipe Face Mesh (478 points "
        "with irises; schemes mediapipe478, dense200) or dlib (68; ibug68); default: the one the "
        "key model's scheme takes",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="--images with an embedder: embed in N processes (0: one per core; default 1)",
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
        help="input holds landmarks (or --images: find them with --landmarker): make keys with "
        "this key model (.npz from KeyModel.save)",
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


def _purpose_opt(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--purpose", metavar="PURPOSE", help=what)


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


# --------------------------------------------------------------------------- subcommands
def add_enroll(subs: Any) -> None:
    """The ``enroll`` subcommand and its arguments."""
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
    _purpose_opt(
        p,
        "consent purpose recorded with each identity (source: the input's name); a new "
        "gallery takes it as its default purpose",
    )
    p.add_argument(
        "--encrypt",
        action="store_true",
        help="create the gallery encrypted at rest (AES-256-GCM; key in PATH.key or "
        "PYFACEMATCH_GALLERY_KEY)",
    )
    p.add_argument(
        "--serving",
        action="store_true",
        help="keep a memory-mapped serving folder PATH.index/serving, appended chunk by chunk: "
        "float32 templates stay on disk while enrolling, and the gallery reopens by mapping it "
        "instead of rebuilding (not with --encrypt)",
    )
    _common(p)


def add_identify(subs: Any) -> None:
    """The ``identify`` subcommand and its arguments."""
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
    _purpose_opt(
        p, "purpose of the search: only identities consenting to it (default: the gallery's)"
    )
    add_cluster_opts(p)
    _common(p)


def add_verify(subs: Any) -> None:
    """The ``verify`` subcommand and its arguments."""
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
    _purpose_opt(
        p, "purpose of the check: claims without consent for it are rejects (default: gallery's)"
    )
    add_cluster_opts(p)
    _common(p)


def add_remove(subs: Any) -> None:
    """The ``remove`` subcommand and its arguments."""
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


def add_calibrate(subs: Any) -> None:
    """The ``calibrate`` subcommand and its arguments."""
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


def add_info(subs: Any) -> None:
    """The ``info`` subcommand and its arguments."""
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


def add_encrypt(subs: Any) -> None:
    """The ``encrypt`` subcommand and its arguments."""
    p = _sub(
        subs,
        "encrypt",
        "encrypt an existing plaintext gallery at rest, in place (crash-safe)",
        """
        Seal every template row (AES-256-GCM, envelope keys) in one transaction, rewrite the
        index checkpoint encrypted and scrub the plaintext (old checkpoint files deleted,
        database rebuilt with VACUUM, WAL truncated). Interrupted at any point, the gallery
        reopens either fully plaintext or fully encrypted. Then run `audit leaks`.
        """,
        """
        pyfacematch encrypt -g people.db
        pyfacematch encrypt -g people.db --key-file /secure/people.key
        """,
    )
    _gallery_opt(p)
    p.add_argument(
        "--key-file",
        metavar="PATH",
        help="master key file (created 0600 if missing; default: PYFACEMATCH_GALLERY_KEY, "
        "else GALLERY.key); later opens must use the same key",
    )
    _common(p)


def add_export(subs: Any) -> None:
    """The ``export`` subcommand and its arguments."""
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


def add_demo(subs: Any) -> None:
    """The ``demo`` subcommand and its arguments."""
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


def add_consent(subs: Any) -> None:
    """The ``consent`` subcommand and its arguments."""
    p = _sub(
        subs,
        "consent",
        "grant, withdraw or show an identity's consent per purpose",
        """
        Consent per purpose (GDPR art. 7): identify and verify for a purpose only consider
        identities whose consent covers it and has not expired. 'withdraw' without --purpose
        withdraws every purpose: the identity is erased (as by 'remove') and a tombstone (a
        salted hash of the id, no biometric data) refuses its re-enrollment until new consent
        is granted. Prints the identity's consent records as JSON.
        """,
        """
        pyfacematch consent grant -g people.db --id alice --purpose payment --source form-17
        pyfacematch consent grant -g people.db --id bob --purpose access --source app --expires 2027-12-31
        pyfacematch consent withdraw -g people.db --id alice --purpose marketing
        pyfacematch consent withdraw -g people.db --id alice       # opt-out of everything
        pyfacematch consent show -g people.db --id alice
        """,
    )
    p.add_argument("action", choices=("grant", "withdraw", "show"))
    _gallery_opt(p)
    p.add_argument("--id", dest="identity", required=True, metavar="ID", help="identity id")
    _purpose_opt(p, "purpose (grant: required; withdraw: omit to withdraw every purpose)")
    p.add_argument("--source", metavar="TEXT", help="grant: where the consent comes from")
    p.add_argument(
        "--expires", metavar="DATE", help="grant: ISO 8601 date or date-time it expires (UTC)"
    )
    _common(p)


def add_audit(subs: Any) -> None:
    """The ``audit`` subcommand and its arguments."""
    p = _sub(
        subs,
        "audit",
        "verify or export the tamper-evident audit trail; prune it; look for data leaks",
        """
        verify: recompute the hash chain and the signed checkpoints of the gallery's audit
        trail; name the first edited, inserted, deleted or reordered record (exit 1). Prints
        the head SEQ:HASH: keep it elsewhere (write-once log, ticket) and pass it back with
        --expect-head to detect deletion of the newest records too.
        export: write the trail as JSON Lines for an outside auditor (no biometric data).
        prune: delete records older than --before; a signed anchor stands for them.
        leaks: examine every file of the gallery and its jobs for leaks (exit 1 if any).
        The audit key is PYFACEMATCH_AUDIT_KEY or the file GALLERY.audit.key.
        """,
        """
        pyfacematch audit verify -g people.db
        pyfacematch audit verify -g people.db --expect-head 1200:3f…
        pyfacematch audit export -g people.db -o trail.jsonl
        pyfacematch audit prune -g people.db --before 2026-01-01
        pyfacematch audit leaks -g people.db -o leaks.json
        """,
    )
    p.add_argument("action", choices=("verify", "export", "prune", "leaks"))
    _gallery_opt(p)
    p.add_argument("-o", "--output", metavar="PATH", help="export: JSONL file; leaks: JSON report")
    p.add_argument("--before", metavar="DATE", help="prune: records older than this date")
    p.add_argument("--expect-head", metavar="SEQ:HASH", help="verify: an anchored head")
    p.add_argument(
        "--scan",
        action="append",
        default=[],
        metavar="PATH",
        help="leaks: also examine these job outputs, rejects or log files/folders",
    )
    _common(p)


def add_bench(subs: Any) -> None:
    """The ``bench`` subcommand and its arguments."""
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


SUBCOMMANDS = {
    "enroll": add_enroll,
    "identify": add_identify,
    "verify": add_verify,
    "remove": add_remove,
    "calibrate": add_calibrate,
    "info": add_info,
    "consent": add_consent,
    "encrypt": add_encrypt,
    "audit": add_audit,
    "export": add_export,
    "demo": add_demo,
    "bench": add_bench,
    "serve": add_serve,  # pyfacematch.cli.serve
    "shard": add_shard,  # pyfacematch.cli.distributed
    "multimodal": add_multimodal,  # pyfacematch.cli.multimodal
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyfacematch`` command."""
    from pyfacematch import __version__

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
    top.add_argument("--version", action="version", version=f"pyfacematch {__version__}")
    subs = top.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS.values():
        add(subs)
    return top
