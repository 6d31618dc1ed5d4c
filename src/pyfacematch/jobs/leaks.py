"""``pyfacematch audit leaks``: the data-leak audit of a gallery, as JSON and Markdown."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pyfacematch.errors import InputError
from pyfacematch.jobs.common import open_gallery
from pyfacematch.security.leaks import render_markdown

__all__ = ["leak_report"]


def leak_report(
    gallery: str | os.PathLike[str],
    *,
    extra: Sequence[str | os.PathLike[str]] = (),
    output: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], str]:
    """Run the audit; write ``output`` (JSON) and ``output`` with ``.md`` (Markdown) when given.

    Returns the report and its Markdown text.
    """
    if not os.path.isfile(os.fspath(gallery)):
        raise InputError(f"gallery {os.fspath(gallery)!r} does not exist")
    g = open_gallery(gallery, read_only=True)
    try:
        rep = g.leak_audit(extra)
    finally:
        g.close()
    md = render_markdown(rep)
    if output is not None:
        out = os.fspath(output)
        for path, text in (
            (out, json.dumps(rep, indent=2)),
            (os.path.splitext(out)[0] + ".md", md),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
    return rep, md
