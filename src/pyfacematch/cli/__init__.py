"""The ``pyfacematch`` command: enroll, identify, verify, remove, calibrate, info, export, demo, bench.

``cli.parser`` builds the argument parser, ``cli.commands`` calls :mod:`pyfacematch.jobs` and
prints, and :func:`main` maps what happened to the exit code: ``0`` success; ``1`` finished, but
some records were rejected (see the rejects file and the JSON summary); ``2`` usage or input error
(bad option, unreadable file, a bad record with ``--on-error stop``, gallery missing …: nothing
was left half done that ``--resume`` cannot finish); ``3`` internal error (a bug: please report
it with the traceback); ``130`` interrupted (Ctrl-C; an ``identify``/``verify`` job can be
resumed).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence

from pyfacematch.cli.commands import COMMANDS
from pyfacematch.cli.parser import EXIT_CODES, FORMATS_HELP, build_parser
from pyfacematch.errors import InputError, PyFaceMatchError
from pyfacematch.jobs.encode import encode_chunk  # importable here as before the split
from pyfacematch.jobs.runner import describe_error

__all__ = [
    "COMMANDS",
    "EXIT_CODES",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REJECTS",
    "EXIT_USAGE",
    "FORMATS_HELP",
    "build_parser",
    "encode_chunk",
    "main",
]

EXIT_OK = 0
EXIT_REJECTS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


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
        return EXIT_INTERRUPTED
    except (PyFaceMatchError, OSError) as exc:
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
