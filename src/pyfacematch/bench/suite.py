"""Named benchmark suites (``smoke``, ``quick``, ``full``): their sizes and their sections, listed.

Each section lives in its own module (:mod:`~pyfacematch.bench.scoring`,
:mod:`~pyfacematch.bench.keys`, :mod:`~pyfacematch.bench.backends`,
:mod:`~pyfacematch.bench.accuracy`, :mod:`~pyfacematch.bench.dayjob`), measures pyfacematch and
its baseline in the same run and returns tables, plots and summary rows for the report. A section whose dependency is missing (an optional package, a
part of pyfacematch that is not importable) is reported as *skipped* with the reason; a section
that raises is reported as *failed* with the error; neither stops the suite.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyfacematch.bench.accuracy import section_accuracy
from pyfacematch.bench.backends import section_backends
from pyfacematch.bench.dayjob import section_dayjob
from pyfacematch.bench.keys import section_keys
from pyfacematch.bench.scoring import section_scoring
from pyfacematch.bench.section import Log, Section, SkipSection

__all__ = ["SUITES", "SECTIONS", "run_suite", "SkipSection"]

#: sizes of each suite; ``quick`` < 10 minutes on 2 cores, ``full`` about an hour
SUITES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "scoring": {
            "n": 2000,
            "dims": [64],
            "batches": [1, 16],
            "sizes": [1000, 2000],
            "size_batch": 16,
            "cosine_d": 64,
            "cosine_calls": 5000,
        },
        "keys": {"n": 1000, "repeat": 1},
        "accuracy": {"n_ids": 600, "n_train": 60},
        "backends": {
            "n": 2000,
            "d": 128,
            "n_probes": 256,
            "single": 20,
            "tune_probes": 100,
            "sweep_points": 3,
            "backends": ("exact", "binary", "hnsw"),
        },
        "dayjob": {
            "n": 2000,
            "m": 2000,
            "d": 128,
            "exact_probes": 500,
            "recall_sample": 500,
            "batch": 500,
        },
    },
    "quick": {
        "scoring": {
            "n": 100_000,
            "dims": [512],
            "batches": [1, 64, 1024],
            "sizes": [10_000, 30_000, 100_000],
            "size_batch": 64,
            "cosine_d": 512,
        },
        "keys": {"n": 20_000, "repeat": 3},
        "accuracy": {"n_ids": 2000, "n_train": 1000},
        "backends": {
            "n": 20_000,
            "d": 512,
            "n_probes": 512,
            "single": 50,
            "tune_probes": 300,
            "sweep_points": 4,
            "hnsw_max_depth": 256,
            "backends": ("exact", "binary", "flat", "hnsw", "ivf", "ivfpq"),
        },
        "dayjob": {
            "n": 50_000,
            "m": 50_000,
            "d": 512,
            "exact_probes": 4096,
            "recall_sample": 2048,
        },
    },
    "full": {
        "scoring": {
            "n": 1_000_000,
            "dims": [512, 128],
            "batches": [1, 64, 1024],
            "sizes": [10_000, 100_000, 300_000, 1_000_000],
            "size_batch": 64,
            "cosine_d": 512,
        },
        "keys": {"n": 200_000, "repeat": 5},
        "accuracy": {"n_ids": 10_000, "n_train": 2000},
        "backends": {
            "n": 200_000,
            "d": 512,
            "n_probes": 2048,
            "single": 200,
            "tune_probes": 1000,
            "sweep_points": 6,
            "hnsw_max_depth": 1024,
            "hnswlib_max": 200_000,
            "backends": ("exact", "binary", "flat", "hnsw", "ivf", "ivfpq"),
        },
        "dayjob": {
            "n": 1_000_000,
            "m": 1_000_000,
            "d": 512,
            "exact_probes": 8192,
            "recall_sample": 4096,
        },
    },
}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


#: (key, title, function) in run order
SECTIONS: list[tuple[str, str, Section]] = [
    ("scoring", "Scoring speed against numpy, FAISS and SimSIMD", section_scoring),
    ("keys", "Landmark keys per second against numpy", section_keys),
    ("backends", "Search backends: recall@1 against probes/s (FAISS, hnswlib)", section_backends),
    (
        "accuracy",
        "Landmark-key accuracy on synthetic faces: plain vs masked cosine",
        section_accuracy,
    ),
    ("dayjob", "A scaled-down one-day job", section_dayjob),
]


def run_suite(
    name: str,
    out_dir: str | Path,
    *,
    log: Log | None = None,
    sections: list[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run a named suite and write ``out_dir``/results.json, report.md and plots (PNG + SVG).

    Parameters
    ----------
    name : {"smoke", "quick", "full"}
        ``smoke`` takes seconds (for tests), ``quick`` minutes, ``full`` about an hour.
    out_dir : str or path-like
        Report folder (created).
    log : callable or None
        Progress lines (default: print to stderr).
    sections : list of str or None
        Run only these sections (keys of :data:`SECTIONS`); the others are reported as skipped.
    overrides : mapping or None
        Section -> size parameters replacing the suite's.

    Returns
    -------
    dict
        The results written to results.json (plus ``"report"``: the path of report.md).

    Raises
    ------
    InputError
        Unknown suite or section name.
    """
    from pyfacematch.bench.report import write_json, write_report
    from pyfacematch.bench.util import machine, machine_line
    from pyfacematch.errors import InputError

    if name not in SUITES:
        raise InputError(f"unknown benchmark suite {name!r}: choose one of {', '.join(SUITES)}")
    known = [k for k, _, _ in SECTIONS]
    if sections is not None:
        bad = [s for s in sections if s not in known]
        if bad:
            raise InputError(f"unknown benchmark section(s) {bad}: choose from {', '.join(known)}")
    if log is None:

        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {k: dict(v) for k, v in SUITES[name].items()}
    for k, v in (overrides or {}).items():
        cfg.setdefault(k, {}).update(v)
    t_start = time.perf_counter()
    c_start = time.process_time()
    results: dict[str, Any] = {
        "suite": name,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": f"pyfacematch bench {name} --out {out}",
        "machine": machine(),
        "platform": platform.platform(),
        "load_average_start": _loadavg(),
        "config": cfg,
        "sections": [],
    }
    log(f"pyfacematch bench: suite {name!r} -> {out}")
    log(machine_line(results["machine"]))
    for key, title, fn in SECTIONS:
        sec: dict[str, Any] = {"key": key, "title": title, "status": "ok", "reason": None}
        t0 = time.perf_counter()
        c0 = time.process_time()
        if sections is not None and key not in sections:
            sec.update(status="skipped", reason="not selected")
        else:
            log(f"[{key}] {title}")
            try:
                sec.update(fn(cfg[key], out, log))
            except SkipSection as exc:
                sec.update(status="skipped", reason=str(exc))
            except (ImportError, AttributeError) as exc:
                sec.update(
                    status="skipped",
                    reason=f"a dependency is missing or incomplete: {exc!r}",
                    traceback=traceback.format_exc(),
                )
            except Exception as exc:  # a failing section must not stop the others
                sec.update(
                    status="failed",
                    reason=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                )
        sec["seconds"] = time.perf_counter() - t0
        sec["cpu_seconds"] = time.process_time() - c0
        if sec["status"] != "ok":
            log(f"[{key}] {sec['status']}: {sec['reason']}")
        else:
            log(f"[{key}] done in {sec['seconds']:.1f} s")
        results["sections"].append(sec)
    results["wall_s"] = time.perf_counter() - t_start
    results["cpu_s"] = time.process_time() - c_start
    results["load_average_end"] = _loadavg()
    write_json(results, out / "results.json")
    report = write_report(results, out)
    results = json.loads((out / "results.json").read_text())  # plain JSON types, as written
    results["report"] = str(report)
    log(f"pyfacematch bench: wrote {out / 'report.md'} in {results['wall_s']:.0f} s")
    return results
