"""What an opt-out costs: ``remove()`` latency per erasure-scrub mode (issue 12).

A removal's ``VACUUM`` scrub (why: :mod:`pyfacematch.gallery.erasure`) costs
time in proportion to the file. This protocol enrolls ``n`` identities of one
``dim``-float template into three galleries and removes ``removes`` of them,
one call at a time, measuring:

- ``immediate``: ``remove()`` scrubs before it returns;
- ``background``: ``remove()`` returns after the commit and WAL truncation,
  the scrub (timed separately, through ``complete_erasure()``) runs later and
  covers every removal committed since the previous one;
- ``no scrub`` (baseline, the behaviour before the leak was found, which
  leaves stale copies of moved rows in pages): the store's delete with
  ``secure_delete`` and a WAL truncation only.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pyfacematch.bench.leakscan import stored_templates

__all__ = ["measure_erasure"]


def _fill(path: Path, n: int, dim: int, seed: int, **opts: Any) -> Any:
    from pyfacematch import Gallery

    g = Gallery.open(path, dim=dim, backend="flat", audit_searches=False, **opts)
    chunk = 20_000
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        g.enroll_many([f"p{i}" for i in range(lo, hi)], stored_templates(seed, range(lo, hi), dim))
    g.checkpoint()
    return g


def measure_erasure(
    n: int = 20_000, dim: int = 512, removes: int = 9, seed: int = 0, workdir: str | None = None
) -> dict[str, Any]:
    """Median ``remove()`` seconds per mode, scrub seconds, file size (see module docstring)."""
    from pyfacematch.gallery.store import Store

    out: dict[str, Any] = {"n": n, "dim": dim, "removes": removes}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        victims = [f"p{i}" for i in range(0, n, max(1, n // removes))][:removes]
        for mode in ("immediate", "background"):
            g = _fill(root / f"{mode}.db", n, dim, seed, erasure_scrub=mode, erasure_delay=3600)
            out["file_mb"] = (root / f"{mode}.db").stat().st_size / 2**20
            calls, scrubs = [], []
            try:
                for v in victims:
                    t0 = time.perf_counter()
                    g.remove(v)
                    calls.append(time.perf_counter() - t0)
                    if mode == "background":  # the scrub one removal owes, timed apart
                        t0 = time.perf_counter()
                        g.complete_erasure()
                        scrubs.append(time.perf_counter() - t0)
            finally:
                g.close()
            out[mode] = {"remove_s": statistics.median(calls)}
            if scrubs:
                out[mode]["scrub_s"] = statistics.median(scrubs)
        _fill(root / "plain.db", n, dim, seed).close()
        store = Store(root / "plain.db")
        calls = []
        try:
            for v in victims:
                t0 = time.perf_counter()
                store.delete_identity(v, truncate_wal=False)
                store.wal_checkpoint()
                calls.append(time.perf_counter() - t0)
        finally:
            store.close()
        out["no_scrub"] = {"remove_s": statistics.median(calls)}
    return out
