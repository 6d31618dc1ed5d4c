"""``pyfacematch serve``: the HTTP matching service (argument parsing only; see
:mod:`pyfacematch.serve`)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_serve", "cmd_serve"]


def add_serve(subs: Any) -> None:
    """Register the ``serve`` subcommand."""
    p = subs.add_parser(
        "serve",
        help="serve galleries over HTTP (identify, verify, enroll, remove, info, calibrate)",
        description=(
            "Serve one or more galleries over HTTP with dynamic batching, API keys, "
            "Prometheus metrics and RFC 9457 errors. Flags override the --config file.\n\n"
            "example:\n  pyfacematch serve --gallery shop=shop.db --port 8080 --keys keys.toml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--gallery",
        action="append",
        default=None,
        metavar="NAME=PATH",
        help="gallery file to serve under /v1/galleries/NAME (repeatable)",
    )
    p.add_argument(
        "--gallery-key",
        action="append",
        default=None,
        metavar="NAME=FILE",
        help="master key file of an encrypted gallery (default: PYFACEMATCH_GALLERY_KEY, else "
        "the key file beside the db)",
    )
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--config", default=None, metavar="FILE", help="TOML configuration file")
    p.add_argument("--keys", default=None, metavar="FILE", help="TOML API keys file")
    p.add_argument(
        "--no-batching",
        dest="batching",
        action="store_const",
        const=False,
        default=None,
        help="one gallery call per request (for measurement)",
    )
    p.add_argument("--max-wait-ms", type=float, default=None, help="batch gathering wait (1.5)")
    p.add_argument("--max-batch", type=int, default=None, help="probe rows per batch (256)")
    p.add_argument(
        "--max-inflight",
        type=int,
        default=None,
        help="core calls of one gallery at once (default: the cores, each call on one core "
        "thread; the next batch gathers while they run)",
    )
    p.add_argument(
        "--max-refill-ms",
        type=float,
        default=None,
        help="after a batch, wait at most this long (and half the batch's time) for the "
        "answered clients' next requests (20; 0: off)",
    )
    p.add_argument(
        "--embedder",
        default=None,
        metavar="SPEC",
        help="accept photo uploads (multipart image parts): 'dlib' (dlib's detector and its "
        "descriptor on onnxruntime) or 'onnx:MODEL.onnx'; needs pip install 'pyfacematch[dlib]'",
    )
    p.add_argument(
        "--embed-workers",
        type=int,
        default=None,
        help="processes decoding and embedding photos (default 1)",
    )
    p.add_argument("--ssl-certfile", default=None, help="TLS certificate (PEM)")
    p.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM)")
    p.add_argument("--log-level", default=None, help="debug, info, warning (default info)")
    p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads one core call may use (default 1: concurrent batches, --max-inflight, "
        "use the other cores; at 1M x 512, 64 probes per call on one thread cost half the CPU "
        "per probe of the same call split over two)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM / SIGINT."""
    from pyfacematch.serve.config import load_config, parse_gallery_flag, parse_gallery_key_flag
    from pyfacematch.serve.server import run_server

    if args.threads is None:  # one core thread per call; calls run side by side (--max-inflight)
        from pyfacematch import set_num_threads

        set_num_threads(1)
    galleries = dict(parse_gallery_flag(s) for s in args.gallery) if args.gallery else None
    cfg = load_config(
        args.config,
        galleries=galleries,
        gallery_keys=dict(parse_gallery_key_flag(s) for s in args.gallery_key)
        if args.gallery_key
        else None,
        host=args.host,
        port=args.port,
        keys=args.keys,
        batching=args.batching,
        max_wait_ms=args.max_wait_ms,
        max_batch=args.max_batch,
        max_inflight=args.max_inflight,
        max_refill_ms=args.max_refill_ms,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        log_level=args.log_level,
        embedder=args.embedder,
        embed_workers=args.embed_workers,
    )
    run_server(cfg)
    return 0
