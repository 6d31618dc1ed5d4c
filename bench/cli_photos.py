"""A small photo job through the command line, against face_recognition's two-folder CLI.

5 people enrolled from one photo each, 9 other photos identified (the shared photo set: one
folder per person), three interleaved rounds, wall time per round:

- ``pyfacematch enroll -g G --images KNOWN`` then ``pyfacematch identify -g G --images UNKNOWN``;
- ``face_recognition KNOWN UNKNOWN`` (``pip install --no-deps face_recognition``; it uses the
  same dlib models from face-recognition-models), skipped with a note when it is not installed.

    python bench/cli_photos.py [--data ../shared/data] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyfacematch.bench.util import machine, machine_line, shared_data_dir


def _folders(faces: Path, root: Path) -> tuple[Path, Path, Path]:
    known, flat, unknown = root / "known", root / "known_flat", root / "unknown"
    for p in (known, flat, unknown):
        p.mkdir()
    people = sorted(p for p in faces.iterdir() if p.is_dir())[:5]
    for n, person in enumerate(people):
        photos = sorted(f for f in person.iterdir() if f.suffix.lower() in (".jpg", ".png"))
        (known / person.name).mkdir()
        shutil.copy(photos[0], known / person.name / photos[0].name)
        shutil.copy(photos[0], flat / f"{person.name}{photos[0].suffix}")
        for f in photos[1 : 3 if n < 4 else 2]:  # 9 probes
            shutil.copy(f, unknown / f.name)
    return known, flat, unknown


def _timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--data",
        default=str(shared_data_dir(__file__)),
        help="folder holding faces/<person>/<photo>",
    )
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    faces = Path(a.data) / "faces"
    if not faces.is_dir():
        sys.exit(f"no photo folders under {faces}: pass --data")
    print(machine_line(machine()))
    fr = shutil.which("face_recognition")
    pfm = [sys.executable, "-m", "pyfacematch"]
    out: dict[str, list[float]] = {"pyfacematch": [], "face_recognition": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        known, flat, unknown = _folders(faces, root)
        for _ in range(a.rounds):
            if fr:
                out["face_recognition"].append(_timed([fr, str(flat), str(unknown)], root))
            for f in root.glob("g.db*"):
                shutil.rmtree(f) if f.is_dir() else f.unlink()
            t = _timed([*pfm, "enroll", "-g", "g.db", "--images", str(known), "--quiet"], root)
            t += _timed(
                [*pfm, "identify", "-g", "g.db", "--images", str(unknown), "-o", "res.csv"]
                + ["--quiet", "--overwrite"],
                root,
            )
            out["pyfacematch"].append(t)
    med = {k: statistics.median(v) for k, v in out.items() if v}
    print(f"# 5 enrolled + 9 probes, {a.rounds} interleaved rounds, median wall seconds")
    for k, v in med.items():
        print(f"{k}: {v:.2f} s (rounds: {', '.join(f'{x:.2f}' for x in out[k])})")
    if "face_recognition" in med:
        print(
            f"ratio face_recognition / pyfacematch: {med['face_recognition'] / med['pyfacematch']:.2f}"
        )
    else:
        print(
            "face_recognition not installed (pip install --no-deps face_recognition): no baseline"
        )
    return med


if __name__ == "__main__":
    main()
