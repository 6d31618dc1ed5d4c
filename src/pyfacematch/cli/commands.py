"""One function per subcommand: turn the parsed arguments into a call of ``pyfacematch.jobs``,
write the summary and print one line. Each returns the exit code; errors propagate to
:func:`pyfacematch.cli.main`, which maps them to exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from pyfacematch.cli.distributed import cluster_job, cmd_shard
from pyfacematch.cli.multimodal import cmd_multimodal
from pyfacematch.cli.serve import cmd_serve
from pyfacematch.errors import InputError
from pyfacematch.jobs.audit import audit_export, audit_prune, audit_verify
from pyfacematch.jobs.calibrate import calibrate_gallery
from pyfacematch.jobs.common import JobOutput, write_summary
from pyfacematch.jobs.consent import consent_action
from pyfacematch.jobs.encode import Source
from pyfacematch.jobs.encrypt import encrypt_gallery
from pyfacematch.jobs.enroll import enroll_records
from pyfacematch.jobs.export import export_templates, gallery_info
from pyfacematch.jobs.identify import identify_job
from pyfacematch.jobs.leaks import leak_report
from pyfacematch.jobs.remove import read_ids, remove_identities
from pyfacematch.jobs.verify import verify_job

__all__ = ["COMMANDS", "parse_blocks"]


def _say(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr, flush=True)


def _source(args: argparse.Namespace) -> Source:
    return Source(
        input=args.input,
        images=args.images,
        embedder=args.embedder,
        landmarker=getattr(args, "landmarker", None),
        workers=getattr(args, "workers", 1),
        input_format=args.input_format,
        id_field=args.id_field,
        chunk_size=args.chunk_size,
        on_error=args.on_error,
    )


def _output(args: argparse.Namespace) -> JobOutput:
    return JobOutput(
        path=args.output,
        format=args.output_format,
        rejects=args.rejects,
        summary=args.summary,
        resume=args.resume,
        overwrite=args.overwrite,
        log_interval=args.log_interval,
    )


def parse_blocks(s: str | None) -> np.ndarray | None:
    """``--blocks 0,a,b,…,d`` as int64 offsets (None when not given)."""
    if not s:
        return None
    try:
        return np.asarray([int(x) for x in s.split(",")], np.int64)
    except ValueError:
        raise InputError(f"--blocks expects comma-separated integer offsets, got {s!r}") from None


def cmd_enroll(args: argparse.Namespace) -> int:
    s = enroll_records(
        args.gallery,
        _source(args),
        key_model=args.key_model,
        backend=args.backend,
        blocks=parse_blocks(args.blocks),
        on_duplicate=args.on_duplicate,
        rejects=args.rejects,
        quiet=args.quiet,
        purpose=args.purpose,
        encrypt=True if args.encrypt else None,
        serving=True if getattr(args, "serving", False) else None,
    )
    write_summary(args.summary, s)
    _say(
        args,
        f"enroll: {s['templates_enrolled']:,} templates of {s['identities_enrolled']:,} "
        f"identities enrolled, {s['rejected']:,} rejected, {s['seconds']:.1f} s; gallery now "
        f"holds {s['gallery_identities']:,} identities"
        + (f"; rejects in {s['rejects_file']}" if s["rejects_file"] else ""),
    )
    return int(s["exit_code"])


def cmd_identify(args: argparse.Namespace) -> int:
    out = _output(args)
    if args.cluster or args.scheduler:
        s = cluster_job(args, "identify", _source(args), out)
    else:
        s = identify_job(
            args.gallery,
            _source(args),
            out,
            k=args.top_k,
            threshold=args.threshold,
            key_model=args.key_model,
            quiet=args.quiet,
            purpose=args.purpose,
        )
    thr = s["threshold"]
    _say(
        args,
        f"identify: {s['processed']:,} probes identified, {s['rejected']:,} "
        f"rejected, {s.get('matches', 0):,} matches"
        + (
            f" (threshold {thr['value']:.4f}, {thr['source']})"
            if thr["value"] is not None
            else " (no threshold)"
        )
        + f"; {s.get('probes_per_second_this_run') or 0:,.0f} probes/s; results in "
        f"{args.output}, summary in {out.resolved()[2]}",
    )
    return int(s["exit_code"])


def cmd_verify(args: argparse.Namespace) -> int:
    if args.cluster or args.scheduler:
        s = cluster_job(args, "verify", _source(args), _output(args))
    else:
        s = _verify_local(args)
    _say(
        args,
        f"verify: {s['processed']:,} probes verified, {s['rejected']:,} rejected, "
        f"{s.get('matches', 0):,} matches; results in {args.output}",
    )
    return int(s["exit_code"])


def _verify_local(args: argparse.Namespace) -> dict[str, Any]:
    return verify_job(
        args.gallery,
        _source(args),
        _output(args),
        identity=args.identity,
        claim_field=args.claim_field,
        threshold=args.threshold,
        key_model=args.key_model,
        quiet=args.quiet,
        purpose=args.purpose,
    )


def cmd_remove(args: argparse.Namespace) -> int:
    ids = [(0, i) for i in [*args.ids, *args.id_opts]]
    if args.input:
        ids += read_ids(args.input)
    s = remove_identities(
        args.gallery, ids, source=args.input, on_error=args.on_error, rejects=args.rejects
    )
    write_summary(args.summary, s)
    _say(args, f"remove: {s['removed']} identities erased, {s['rejected']} not found")
    return int(s["exit_code"])


def cmd_calibrate(args: argparse.Namespace) -> int:
    s = calibrate_gallery(
        args.gallery,
        fmr=args.fmr,
        fpir=args.fpir,
        source=_source(args) if (args.input or args.images) is not None else None,
        scores=args.scores,
        key_model=args.key_model,
        max_pairs=args.max_pairs,
        conservative=args.conservative,
    )
    write_summary(args.summary, s)
    print(json.dumps(s, indent=2))
    _say(
        args,
        f"calibrate: {s['kind'].upper()} {s['target']:g} → threshold {s['threshold']:.6f} "
        f"from {s['n_scores']:,} impostor scores (stored in {args.gallery})",
    )
    return int(s["exit_code"])


def cmd_consent(args: argparse.Namespace) -> int:
    s = consent_action(
        args.gallery,
        args.action,
        args.identity,
        purpose=args.purpose,
        source=args.source,
        expires=args.expires,
    )
    write_summary(args.summary, s)
    print(json.dumps(s, indent=2))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    if args.action == "verify":
        s = audit_verify(args.gallery, args.expect_head)
        write_summary(args.summary, s)
        print(json.dumps(s, indent=2))
        if s["ok"]:
            _say(
                args,
                f"audit verify: {s['records']} records OK; head {s['head']['seq']}:"
                f"{s['head']['hash']} (anchor it elsewhere to detect deletion of newer records)",
            )
            return 0
        bad = s["first_bad"]
        print(
            f"pyfacematch audit: first bad record: {bad['seq']}: {bad['reason']}", file=sys.stderr
        )
        return 1
    if args.action == "export":
        if not args.output:
            raise InputError("audit export needs -o/--output FILE.jsonl")
        s = audit_export(args.gallery, args.output)
        _say(args, f"audit export: {s['records']} records written to {args.output}")
    elif args.action == "prune":
        if not args.before:
            raise InputError("audit prune needs --before DATE (ISO 8601)")
        s = audit_prune(args.gallery, args.before)
        _say(args, f"audit prune: {s['pruned']} records before {args.before} pruned")
    else:
        return cmd_audit_leaks(args)
    write_summary(args.summary, s)
    return 0


def cmd_audit_leaks(args: argparse.Namespace) -> int:
    rep, md = leak_report(args.gallery, extra=args.scan, output=args.output)
    write_summary(args.summary, rep)
    if not args.quiet:
        print(md)
    return 0 if rep["clean"] else 1


def cmd_encrypt(args: argparse.Namespace) -> int:
    s = encrypt_gallery(args.gallery, args.key_file)
    write_summary(args.summary, s)
    _say(
        args,
        f"encrypt: {s['templates']} templates of {args.gallery} encrypted in place "
        f"({s['seconds']} s); run `pyfacematch audit leaks -g {args.gallery}` to check",
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = gallery_info(args.gallery)
    write_summary(args.summary, info)
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    s = export_templates(
        args.gallery, args.output, output_format=args.output_format, overwrite=args.overwrite
    )
    write_summary(args.summary, s)
    _say(args, f"export: {s['templates']:,} templates written to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pyfacematch.jobs.demo import run_demo

    s = run_demo(
        identities=args.identities,
        probes=args.probes,
        seed=args.seed,
        backend=args.backend,
        gallery=args.gallery,
        quiet=args.quiet,
    )
    write_summary(args.summary, s)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from pyfacematch.bench import run_suite
    except ImportError:
        raise InputError(
            "the benchmark suite is not installed (pyfacematch.bench.run_suite is missing)"
        ) from None
    kw: dict[str, Any] = {}
    if args.sections:
        kw["sections"] = [x.strip() for x in args.sections.split(",") if x.strip()]
    if args.quiet:
        kw["log"] = lambda *a, **k: None
    res = run_suite(args.name, args.out, **kw)
    if isinstance(res, dict):
        write_summary(args.summary, res)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "enroll": cmd_enroll,
    "identify": cmd_identify,
    "verify": cmd_verify,
    "remove": cmd_remove,
    "calibrate": cmd_calibrate,
    "info": cmd_info,
    "consent": cmd_consent,
    "encrypt": cmd_encrypt,
    "audit": cmd_audit,
    "export": cmd_export,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "serve": cmd_serve,  # pyfacematch.cli.serve
    "shard": cmd_shard,  # pyfacematch.cli.distributed
    "multimodal": cmd_multimodal,  # pyfacematch.cli.multimodal
}
