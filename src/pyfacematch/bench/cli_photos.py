"""A small photo job through the command line, against face_recognition's two-folder CLI.

5 people enrolled from one photo each, 9 other photos identified (the shared photo set: one
folder per person), rounds interleaved, wall time per round (and CPU time, user + system of the
commands: less sensitive to a busy machine than wall time):

- ``pyfacematch enroll -g G --images KNOWN`` then ``pyfacematch identify -g G --images UNKNOWN``
  (two processes: each pays start-up and model loads);
- ``face_recognition KNOWN UNKNOWN`` (one process; ``pip install --no-deps face_recognition``,
  the same dlib models from face-recognition-models), found on ``PATH`` or given with
  ``--face-recognition``; skipped with a note when absent.

Fairness: one untimed warm-up round of each first (page cache; pyfacematch's model cache, see
:mod:`pyfacematch.embed.cache`, is filled then, as by any first run on a machine). The children
run with byte-code caching on (``PYTHONDONTWRITEBYTECODE`` removed, ``PYTHONPYCACHEPREFIX`` a
temporary folder): an installed wheel ships compiled modules, as face_recognition's
site-packages have them, while an editable install under ``PYTHONDONTWRITEBYTECODE=1`` would
compile pyfacematch's ~100 modules again in every process. Both tools' answers are checked:
rank-1 of the 9 probes is printed for each.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pyfacematch.bench.util import machine, machine_line, shared_data_dir

__all__ = ["make_folders", "main"]


def make_folders(faces: Path, root: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """known/<person>/<photo>, known_flat/<person>.jpg, unknown/<photo>, and probe → person."""
    known, flat, unknown = root / "known", root / "known_flat", root / "unknown"
    for p in (known, flat, unknown):
        p.mkdir()
    truth: dict[str, str] = {}
    people = sorted(p for p in faces.iterdir() if p.is_dir())[:5]
    for n, person in enumerate(people):
        photos = sorted(f for f in person.iterdir() if f.suffix.lower() in (".jpg", ".png"))
        (known / person.name).mkdir()
        shutil.copy(photos[0], known / person.name / photos[0].name)
        shutil.copy(photos[0], flat / f"{person.name}{photos[0].suffix}")
        for f in photos[1 : 3 if n < 4 else 2]:  # 9 probes
            shutil.copy(f, unknown / f.name)
            truth[f.stem] = person.name
    return known, flat, unknown, truth


def _cpu_children() -> float:
    try:
        import resource
    except ImportError:  # Windows: no CPU figure
        return float("nan")
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the child) and standard output of a command."""
    c0, t0 = _cpu_children(), time.perf_counter()
    p = subprocess.run(
        cmd, cwd=cwd, env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - t0, _cpu_children() - c0, p.stdout.decode(errors="replace")


def _rank1_ours(res: Path, truth: dict[str, str]) -> float:
    with open(res, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["rank"] == "1"]
    top = {Path(r["probe_id"]).stem: r["identity"] for r in rows}
    return sum(top.get(k) == v for k, v in truth.items()) / len(truth)


def _rank1_fr(stdout: str, truth: dict[str, str]) -> float:
    # face_recognition prints "<file path>,<name>" per face found (tolerance 0.6)
    got = {}
    for line in stdout.splitlines():
        path, _, name = line.rpartition(",")
        got[Path(path).stem] = name
    return sum(got.get(k) == v for k, v in truth.items()) / len(truth)


def main(argv: list[str] | None = None, default_data: Path | None = None) -> dict[str, Any]:
    """Run the benchmark (``default_data``: the photo folder when ``--data`` is not given)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None, help="folder holding faces/<person>/<photo>")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--before",
        default=None,
        metavar="PYTHON",
        help="also run the same two commands with this interpreter (one whose pyfacematch is "
        "another version, e.g. the main branch's venv), as 'before', in the same rounds",
    )
    ap.add_argument(
        "--face-recognition",
        default=None,
        help="face_recognition's command (default: found on PATH)",
    )
    a = ap.parse_args(argv)
    data = Path(a.data) if a.data else (default_data or shared_data_dir(sys.argv[0]))
    faces = data / "faces"
    if not faces.is_dir():
        sys.exit(f"no photo folders under {faces}: pass --data")
    print(machine_line(machine()))
    fr = a.face_recognition or shutil.which("face_recognition")
    ours = {"pyfacematch": [sys.executable, "-m", "pyfacematch"]}
    if a.before:
        ours["before"] = [a.before, "-m", "pyfacematch"]
    names = [*ours, "face_recognition"]
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    rank1: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        known, flat, unknown, truth = make_folders(faces, root)
        for rnd in range(a.rounds + 1):  # round 0: warm-up, not timed
            if fr:
                t, c, out = _run([fr, str(flat), str(unknown)], root, env)
                rank1["face_recognition"] = _rank1_fr(out, truth)
                if rnd:
                    times["face_recognition"].append(t)
                    cpu["face_recognition"].append(c)
            for name, pfm in ours.items():
                for f in root.glob("g.db*"):
                    shutil.rmtree(f) if f.is_dir() else f.unlink()
                enroll = [*pfm, "enroll", "-g", "g.db", "--images", str(known), "--quiet"]
                t, c, _ = _run(enroll, root, env)
                t2, c2, _ = _run(
                    [*pfm, "identify", "-g", "g.db", "--images", str(unknown), "-o", "res.csv"]
                    + ["--quiet", "--overwrite"],
                    root,
                    env,
                )
                rank1[name] = _rank1_ours(root / "res.csv", truth)
                if rnd:
                    times[name].append(t + t2)
                    cpu[name].append(c + c2)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(
        f"# 5 enrolled + 9 probes, {a.rounds} interleaved rounds after a warm-up, median wall "
        f"seconds; load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    for k, v in med.items():
        print(
            f"{k}: {v:.2f} s (rounds: {', '.join(f'{x:.2f}' for x in times[k])}); CPU "
            f"{statistics.median(cpu[k]):.2f} s; rank-1 of the 9 probes {rank1[k]:.2f}"
        )
    for k in ("before", "face_recognition"):
        if k in med:
            print(
                f"ratio {k} / pyfacematch: wall {med[k] / med['pyfacematch']:.2f}, CPU "
                f"{statistics.median(cpu[k]) / statistics.median(cpu['pyfacematch']):.2f}"
            )
    if "face_recognition" not in med:
        print(
            "face_recognition not found (pip install --no-deps face_recognition, or pass "
            "--face-recognition PATH): no baseline"
        )
    return {
        "seconds": med,
        "cpu_seconds": {k: statistics.median(v) for k, v in cpu.items() if v},
        "rank1": rank1,
    }
