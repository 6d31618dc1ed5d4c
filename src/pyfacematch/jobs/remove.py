"""Opt-out in bulk: erase a list of identities from a gallery, rejecting unknown ids."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from pyfacematch.errors import InputError, UnknownIdentityError
from pyfacematch.io import Reject, write_rejects
from pyfacematch.jobs.common import exit_code, open_gallery, reason_counts

__all__ = ["read_ids", "remove_identities"]


def read_ids(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """``(line number, id)`` of a file with one identity id per line (``"-"``: standard input).

    Blank lines are skipped; ids are stripped of surrounding white space.
    """
    fh = sys.stdin if os.fspath(path) == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    try:
        return [(ln, s) for ln, line in enumerate(fh, 1) if (s := line.strip())]
    finally:
        if fh is not sys.stdin:
            fh.close()


def remove_identities(
    gallery: str | os.PathLike[str],
    ids: Sequence[tuple[int, str]],
    *,
    source: str | None = None,
    on_error: str = "stop",
    rejects: str | None = None,
) -> dict[str, Any]:
    """Erase identities from the gallery file ``gallery``, in order.

    Parameters
    ----------
    gallery : path
        An existing gallery file.
    ids : sequence of (int, str)
        ``(line, id)``: the line of ``source`` the id came from, 0 for an id given directly.
    source : str or None
        File the ids were read from (named in errors and rejects).
    on_error : {"stop", "skip"}
        An id that is not enrolled: stop (identities erased before it stay erased) or reject it.
    rejects : str or None
        Rejects file (default ``<gallery>.remove-rejects.csv``), written when there are rejects.

    Returns
    -------
    dict
        Summary: ``requested``, ``removed``, ``rejected``, ``reject_reasons``,
        ``rejects_file``, ``exit_code``.

    Raises
    ------
    InputError
        No ids; an unknown id with ``on_error="stop"`` (says how many were erased before it).
    """
    if on_error not in ("stop", "skip"):
        raise InputError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    if not ids:
        raise InputError("give identity ids to remove (arguments or --input FILE)")
    g = open_gallery(gallery)
    removed = 0
    rejected: list[Reject] = []
    try:
        for n, (ln, ident) in enumerate(ids, 1):
            try:
                g.remove(ident)
                removed += 1
            except UnknownIdentityError:
                where = f"{source} line {ln}" if ln else f"argument {n}"
                if on_error == "stop":
                    raise InputError(
                        f"{where}: identity {ident!r} is not enrolled "
                        f"({removed} removed before it); pass --on-error skip to go on"
                    ) from None
                rejected.append(Reject(n, ln or None, ident, "unknown identity: not enrolled"))
    finally:
        g.close()
    rej_path = rejects or f"{os.fspath(gallery)}.remove-rejects.csv"
    if rejected:
        write_rejects(rej_path, rejected)
    return {
        "command": "remove",
        "gallery": os.fspath(gallery),
        "requested": len(ids),
        "removed": removed,
        "rejected": len(rejected),
        "reject_reasons": reason_counts(rejected),
        "rejects_file": rej_path if rejected else None,
        "exit_code": exit_code(len(rejected)),
    }
