"""Overhead of the trust features: encryption at rest + cancelable transform + search audit.

Two galleries of the same templates on disk, default backend: "off" (unencrypted, plain
templates, searches not audited) and "on" (AES-256-GCM rows and checkpoints, keyed orthonormal
transform, identify records queued for the audit writer thread). Measured in one run:

- enroll: the same templates enrolled in chunks of ``chunk`` into each (one run each, "off"
  first; each chunk is one transaction);
- open: close and reopen each, ``repeat`` interleaved rounds (decryption happens here);
- identify, batched: ``batch`` probes per call; single: one probe per call, ``single`` calls;
  ``repeat`` interleaved rounds, medians;
- identify single on the "on" gallery opened **read-only**, search audit off vs on: "on"
  appends each search record to its sidecar file (one ``write()`` per call,
  :mod:`pyfacematch.gallery.auditsidecar`), chained in by the next writable open (timed);
- encrypt in place: a copy of the "off" gallery encrypted by ``Gallery.encrypt_in_place`` (one
  transaction, then old checkpoints deleted, ``VACUUM``, encrypted checkpoint), one run; its
  answers are checked equal to the plaintext gallery's.

The ratio is on/off (1.00 = no overhead). On a shared machine the absolute figures are noisy;
the ratios are measured in the same run, rounds interleaved, so a neighbour's burst lands on both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.bench.util import median_times_interleaved, unit_rows
from pyfacematch.gallery import Gallery

__all__ = ["measure_trust"]

_ENV = "PYFACEMATCH_GALLERY_KEY"


def _open(path: Path, on: bool) -> Gallery:
    return Gallery.open(path, audit_searches=on)


def measure_trust(
    n: int = 100_000,
    dim: int = 512,
    *,
    batch: int = 1000,
    single: int = 200,
    repeat: int = 5,
    chunk: int = 10_000,
    seed: int = 0,
    workdir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run the measurements; a dict of medians (seconds) and on/off ratios."""
    tmp = Path(tempfile.mkdtemp(prefix="pfm-trust-", dir=workdir))
    saved = os.environ.pop(_ENV, None)
    try:
        x = unit_rows(n, dim, seed)
        ids = [f"id{i}" for i in range(n)]
        probes = unit_rows(batch, dim, seed + 1)
        probes[: batch // 2] = x[: batch // 2]  # half mated
        paths = {"off": tmp / "off.db", "on": tmp / "on.db"}
        enroll_s: dict[str, float] = {}
        for name in ("off", "on"):
            on = name == "on"
            t0 = time.perf_counter()
            g = Gallery(
                dim,
                path=paths[name],
                encrypt=on,
                cancelable=on,
                audit_searches=on,
                actor="bench",
            )
            for s in range(0, n, chunk):
                g.enroll_many(ids[s : s + chunk], x[s : s + chunk])
            g.close()
            enroll_s[name] = time.perf_counter() - t0

        def reopen(name: str) -> Any:
            return lambda: _open(paths[name], name == "on").close()

        open_s = median_times_interleaved(
            {"off": reopen("off"), "on": reopen("on")}, repeat=max(3, repeat // 2), warmup=0
        )
        gs = {name: _open(paths[name], name == "on") for name in paths}
        try:
            a = gs["off"].identify_arrays(probes, k=10)
            b = gs["on"].identify_arrays(probes, k=10)
            m = batch // 2  # mated probes: the answer must not change
            same_top1 = float(np.mean(a.identities[:m, 0] == b.identities[:m, 0]))
            max_diff = float(np.nanmax(np.abs(a.scores[:m, 0] - b.scores[:m, 0])))
            one = probes[:single]

            def batched_of(g: Gallery) -> Callable[[], Any]:
                return lambda: g.identify_arrays(probes, k=10)

            def singles_of(g: Gallery) -> Callable[[], Any]:
                def run() -> None:
                    for p in one:
                        g.identify_arrays(p, k=10)

                return run

            batched = median_times_interleaved(
                {nm: batched_of(g) for nm, g in gs.items()}, repeat=repeat
            )
            single_s = median_times_interleaved(
                {nm: singles_of(g) for nm, g in gs.items()}, repeat=repeat
            )
            audited = gs["on"].audit_flush()
        finally:
            for g in gs.values():
                g.close()
        # the same "on" gallery read-only, search audit off vs on: the sidecar's own cost
        ro = {
            nm: Gallery.open(paths["on"], read_only=True, audit_searches=nm == "on")
            for nm in ("off", "on")
        }
        try:
            single_ro = median_times_interleaved(
                {nm: singles_of(g) for nm, g in ro.items()}, repeat=repeat
            )
        finally:
            for g in ro.values():
                g.close()

        def sidecar_lines() -> int:
            return sum(len(f.read_bytes().splitlines()) for f in tmp.glob("on.db.audit-ro-*.jsonl"))

        written = sidecar_lines()
        t0 = time.perf_counter()
        with Gallery.open(paths["on"]):  # the writable open chains the read-only records in
            t_import = time.perf_counter() - t0
        imported = written - sidecar_lines()
        # encrypt in place: a copy of the plaintext gallery (its files only, no WAL left)
        inplace = tmp / "inplace.db"
        shutil.copy2(paths["off"], inplace)
        t0 = time.perf_counter()
        with Gallery.open(inplace) as g:
            t_open = time.perf_counter() - t0
            t1 = time.perf_counter()
            g.encrypt_in_place()
            t_enc = time.perf_counter() - t1
            c = g.identify_arrays(probes, k=10)
        same_inplace = bool(
            np.array_equal(a.identities, c.identities) and np.array_equal(a.scores, c.scores)
        )
        return {
            "n": n,
            "dim": dim,
            "batch": batch,
            "single_calls": single,
            "repeat": repeat,
            "backend": "binary (default)",
            "same_top1_mated_on_vs_off": same_top1,
            "max_top1_score_diff_mated": max_diff,
            "enroll_s": enroll_s,
            "enroll_ratio": enroll_s["on"] / enroll_s["off"],
            "open_s": open_s,
            "open_ratio": open_s["on"] / open_s["off"],
            "identify_batched_probes_per_s": {k: batch / v for k, v in batched.items()},
            "identify_batched_ratio": batched["on"] / batched["off"],
            "identify_single_ms": {k: 1e3 * v / single for k, v in single_s.items()},
            "identify_single_ratio": single_s["on"] / single_s["off"],
            "audit_records_left_to_flush": audited,
            "identify_single_read_only_ms": {k: 1e3 * v / single for k, v in single_ro.items()},
            "identify_single_read_only_ratio": single_ro["on"] / single_ro["off"],
            "read_only_records_imported": imported,
            "open_with_import_s": t_import,
            "encrypt_in_place_s": t_enc,
            "encrypt_in_place_open_s": t_open,
            "encrypt_in_place_same_answers": same_inplace,
        }
    finally:
        if saved is not None:
            os.environ[_ENV] = saved
        shutil.rmtree(tmp, ignore_errors=True)
