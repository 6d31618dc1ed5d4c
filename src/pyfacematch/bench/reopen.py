"""Gallery reopen at scale (issue 15): ``Gallery(...)`` mapped from its serving folder vs rebuilt.

A synthetic gallery (as in the gallery benchmark) is enrolled a chunk at a time through
``Gallery.enroll_many`` into a gallery file with ``serving=True`` (in a child process, whose peak
memory is the streaming-enroll figure). Then, each in a fresh process with the page cache warm:
``Gallery(path, read_only=True)`` mapping the folder, and the same file opened with
``serving=False`` (the store read and the index rebuilt — what every open did before); each
reports open → first answer, ms per probe one at a time after that, peak RSS (VmHWM), and a
digest of its answers, which must be equal.

Run through ``python bench/compact.py --gallery PATH --n 1000000`` (the gallery is kept and reused).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_child", "open_child", "run"]

BACKEND = "binary"
OPTIONS = {"rerank_store": "int8"}


def build_child(path: str, n: int, d: int, chunk: int) -> dict[str, Any]:
    """Enroll n synthetic identities a chunk at a time (fresh process): seconds, peak RSS."""
    import pyfacematch as pf
    from pyfacematch.bench.compact import _rows, _rss_mb
    from pyfacematch.bench.synthdata import SyntheticIdentities

    s = SyntheticIdentities(n, d, seed=0, chunk=8192)
    t0 = time.perf_counter()
    g = pf.Gallery(d, path=path, backend=BACKEND, backend_options=OPTIONS, serving=True)
    for start in range(0, n, chunk):
        x = _rows(s, start, min(chunk, n - start))
        g.enroll_many([f"s{j}" for j in range(start, start + len(x))], x)
    g.close()
    return {"enroll_s": time.perf_counter() - t0, "peak_rss_mb": _rss_mb()}


def open_child(mode: str, path: str, probes_file: str, single: int) -> dict[str, Any]:
    """Open the gallery (fresh process) mapped or rebuilt; first answer, then one at a time.

    ``mode``: ``mapped`` / ``rebuild``, with ``-nocheck`` for ``integrity_check=False`` (no
    SQLite ``quick_check`` of the whole file at open)."""
    check = not mode.endswith("-nocheck")
    mode = mode.removesuffix("-nocheck")
    import pyfacematch as pf
    from pyfacematch.bench.compact import _rss_mb

    q = np.load(probes_file)
    t0 = time.perf_counter()
    g = pf.Gallery(
        path=path,
        read_only=True,
        backend_options=OPTIONS,
        serving=None if mode == "mapped" else False,
        audit_searches=False,
        integrity_check=check,
    )
    first = g.identify_arrays(q[:1], k=10)
    t_first = time.perf_counter() - t0
    h = hashlib.sha256()
    h.update(first.scores.tobytes() + "|".join(first.identities.ravel().tolist()).encode())
    t1 = time.perf_counter()
    for j in range(1, single + 1):
        a = g.identify_arrays(q[j : j + 1], k=10)
        h.update(a.scores.tobytes() + "|".join(a.identities.ravel().tolist()).encode())
    per_probe = (time.perf_counter() - t1) / max(single, 1)
    info = g.info()["serving"]
    mapped = bool(info and info["mapped"] and info["not_used_because"] is None)
    g.close()
    return {
        "mode": mode,
        "quick_check": check,
        "mapped": mapped,
        "open_to_first_s": t_first,
        "single_ms": per_probe * 1e3,
        "peak_rss_mb": _rss_mb(),
        "answers_sha256": h.hexdigest()[:16],
    }


def _py(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pyfacematch.bench.compact", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ))
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def run(path: Path, n: int, d: int, single: int, chunk: int = 65536) -> dict[str, Any]:
    """Build (if missing) and measure; prints a table and returns the figures."""
    from pyfacematch.bench.synthdata import SyntheticIdentities
    from pyfacematch.bench.util import table

    out: dict[str, Any] = {"n": n, "d": d, "backend": BACKEND, "options": OPTIONS}
    if not path.exists():
        b = _py("--child-build", str(path), "--n", str(n), "--d", str(d), "--chunk", str(chunk))
        out["build"] = b
        print(
            f"# enrolled {n:,} × {d} through Gallery.enroll_many in chunks of {chunk:,} with "
            f"serving=True: {b['enroll_s']:.1f} s, peak RSS {b['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    else:
        print(f"# using the gallery {path}")
    folder = Path(str(path) + ".index") / "serving"
    disk = sum(f.stat().st_size for f in folder.iterdir()) if folder.exists() else 0
    out["serving_bytes_per_identity"] = disk / max(n, 1)
    q, _ = SyntheticIdentities(n, d, seed=0).mated_probes(single + 1, seed=2)
    pfile = str(path) + ".probes.npy"
    np.save(pfile, np.ascontiguousarray(q, np.float32))
    kids = [
        _py("--child-open", mode, str(path), "--probes-file", pfile, "--single", str(single))
        for mode in ("mapped", "rebuild", "mapped-nocheck", "rebuild-nocheck")
    ]
    out["children"] = kids
    print("\n## Gallery(path, read_only=True): open → first answer (fresh process, cache warm)\n")
    print(
        table(
            [
                "opening",
                "SQLite quick_check",
                "open→first answer (s)",
                "ms/probe after",
                "peak RSS (MB)",
                "answers",
            ],
            [
                [
                    "serving folder mapped" if r["mode"] == "mapped" else "rebuilt from the store",
                    "yes" if r["quick_check"] else "no",
                    f"{r['open_to_first_s']:.2f}",
                    f"{r['single_ms']:.1f}",
                    f"{r['peak_rss_mb']:.0f}",
                    r["answers_sha256"],
                ]
                for r in kids
            ],
        )
    )
    same = len({r["answers_sha256"] for r in kids}) == 1
    out["answers_identical"] = same
    ratio = kids[1]["open_to_first_s"] / max(kids[0]["open_to_first_s"], 1e-9)
    ratio_nc = kids[3]["open_to_first_s"] / max(kids[2]["open_to_first_s"], 1e-9)
    print(
        f"\n# answers identical (scores + identities, {single + 1} probes): {same}; "
        f"mapped open→first answer {ratio:.1f}× faster than the rebuild ({ratio_nc:.1f}× "
        f"without quick_check); serving folder "
        f"{out['serving_bytes_per_identity']:.0f} bytes/identity on disk"
    )
    return out
