"""A/B speed check between two installed versions, by CPU time (issue 14: "no slower than today").

Each version is a Python interpreter with pyfacematch installed (e.g. a venv built from the issue's
"today", 6a732d3, and one from HEAD). In alternating rounds (A B, then B A, …) a fresh child process
of each builds the same synthetic gallery (N identities, d = 512: clustered unit templates, as
the gallery benchmark's protocol; the build is not timed) and times, in CPU seconds of the whole
process (``time.process_time``: every thread, and it survives a loaded machine):

- the default gallery (``binary`` backend): ``identify_arrays`` batched (chunks of 1,024) and one
  probe at a time;
- the ``exact`` backend: batched and one at a time;
- ``pyfacematch demo`` (a child of that interpreter, ``pyfacematch.cli.main``: its CPU from
  ``getrusage``).

Per task it prints the median over rounds of each version and the ratio A/B (> 1: B uses less CPU).
Only public API present in both versions is used (``Gallery(dim, backend)``, ``enroll_many``,
``identify_arrays``, the ``demo`` command).

``--kernels`` instead times, in this process, the batch-1024 float32 top-k's first-pass choices
(AMX-BF16 tiles, AVX-512 BF16, the float32 packed kernel) and the int8 compact path (AMX-INT8
tiles, VNNI) in alternating rounds, by CPU time: last session's throw-away A/B scripts.

    python bench/ab.py --a /work/venv-kern3-old/bin/python --b /work/venv-kern3/bin/python
    python bench/ab.py --kernels --n 262144
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

__all__ = ["CHILD", "main", "run_child", "run_demo", "kernels_ab"]

# The child: numpy + the public API of both versions only. argv: n, d, batched, single, seed.
CHILD = r"""
import json, sys, time
import numpy as np
import pyfacematch as pf
from pyfacematch import Gallery

n, d, nb, ns, seed = (int(x) for x in sys.argv[1:6])
rng = np.random.default_rng(seed)
centres = rng.standard_normal((n, d)).astype(np.float32)
centres /= np.linalg.norm(centres, axis=1, keepdims=True)

def noisy(c, r):
    x = c + 0.734 * r.standard_normal(c.shape).astype(np.float32) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

gal = noisy(centres, np.random.default_rng(seed + 1))
who = np.random.default_rng(seed + 2).integers(0, n, nb)
probes = noisy(centres[who], np.random.default_rng(seed + 3))
names = [f"id{i}" for i in range(n)]
out = {}
for backend in ("binary", "exact"):
    g = Gallery(dim=d, backend=backend)
    g.enroll_many(names, gal)
    g.identify_arrays(probes[:64], k=1)  # warm-up: lazy state, thread pool
    c = time.process_time()
    hits = 0
    for a in range(0, nb, 1024):
        r = g.identify_arrays(probes[a : a + 1024], k=1)
        hits += sum(1 for j, x in enumerate(r.identities[:, 0]) if x == f"id{who[a + j]}")
    out[f"{backend} batched"] = (time.process_time() - c) / nb
    c = time.process_time()
    for i in range(ns):
        g.identify_arrays(probes[i : i + 1], k=1)
    out[f"{backend} single"] = (time.process_time() - c) / ns
    out[f"{backend} rank-1"] = hits / nb
    g.close()
    del g
print(json.dumps({"cpu_s_per_probe": out, "version": getattr(pf, "__version__", "?"),
                  "simd": pf.simd.info().get("active")}))
"""


def run_child(python: str, n: int, d: int, batched: int, single: int, seed: int) -> dict[str, Any]:
    """One child of ``python``: CPU seconds per probe of each task (JSON from :data:`CHILD`)."""
    p = subprocess.run(
        [python, "-c", CHILD, str(n), str(d), str(batched), str(single), str(seed)],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        raise RuntimeError(f"{python}: the A/B child failed:\n{p.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def run_demo(python: str, identities: int, probes: int) -> float:
    """CPU seconds (user + system) of ``pyfacematch demo`` (quiet) run by ``python`` in a child."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the console script's entry point (older versions have no ``python -m pyfacematch``)
    p = subprocess.run(
        [python, "-c", "import sys; from pyfacematch.cli import main; sys.exit(main())", "demo",
         "--identities", str(identities), "--probes", str(probes), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if p.returncode != 0:
        raise RuntimeError(f"{python} -m pyfacematch demo failed:\n{p.stderr[-2000:]}")
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def kernels_ab(n: int, d: int, m: int, rounds: int, log: Any = print) -> dict[str, float]:
    """CPU seconds per probe of a batch-``m`` top-10 under each first-pass choice, alternating.

    float32 gallery: AMX-BF16 first pass, AVX-512 BF16 first pass, the float32 packed kernel (no
    first pass); int8 compact gallery (exact re-score): AMX-INT8 tiles, VNNI. Every variant's
    answer is checked equal to the float32 one (the same exact top-10). Needs the avx512 level.
    """
    import pyfacematch as pf
    from pyfacematch import _core
    from pyfacematch.bench.util import unit_rows

    g = unit_rows(n, d, seed=5)
    q = unit_rows(m, d, seed=6)
    c8 = pf.CompactMatrix.from_float32(g, "int8", exact=g)

    def setting(amx: bool, bf16: bool) -> None:
        pf.simd.set_amx(amx)
        pf.simd.set_bf16_prefilter(bf16)

    variants: dict[str, tuple[bool, bool, Any]] = {
        "float32, AMX-BF16 first pass": (True, True, g),
        "float32, AVX-512 BF16 first pass": (False, True, g),
        "float32, no first pass": (False, False, g),
        "int8 compact, AMX-INT8": (True, True, c8),
        "int8 compact, VNNI": (False, True, c8),
    }
    setting(False, False)
    want = pf.topk(q, g, 10)
    samples: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for r in range(rounds):
            for name, (amx, bf16, gal) in variants.items():
                setting(amx, bf16)
                if name.startswith("float32, AMX") and not _core.amx_active():
                    continue
                if name.startswith("int8 compact, AMX") and not _core.amx_int8_active():
                    continue
                c0 = time.process_time()
                got = pf.topk(q, gal, 10)
                samples[name].append((time.process_time() - c0) / m)
                if r == 0 and not (
                    np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0])
                ):
                    raise AssertionError(f"{name}: top-10 differs from the float32 answer")
    finally:
        setting(True, True)
    out = {k: statistics.median(v) for k, v in samples.items() if v}
    for k, v in samples.items():
        if not v:
            log(f"  {k}: skipped (not available on this CPU/build)")
    return out


def main(argv: list[str] | None = None) -> int:
    from pyfacematch.bench.util import machine, machine_line, table

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--a", help="interpreter of version A (the baseline), e.g. an old venv's python"
    )
    ap.add_argument("--b", default=sys.executable, help="interpreter of version B (default: this)")
    ap.add_argument("--n", type=int, default=100_000, help="gallery identities (default 100,000)")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--batched", type=int, default=4096, help="probes of the batched tasks")
    ap.add_argument("--single", type=int, default=200, help="probes timed one at a time")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo-identities", type=int, default=100_000, help="0 skips the demo")
    ap.add_argument("--demo-probes", type=int, default=500)
    ap.add_argument("--kernels", action="store_true", help="the in-process first-pass A/B instead")
    ap.add_argument("--batch", type=int, default=1024, help="--kernels: probes per call")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)
    print(machine_line(machine()), flush=True)
    if a.kernels:
        n = a.n if a.n != 100_000 else 262_144
        print(f"# kernels A/B: top-10 of {a.batch} probes over {n:,} × {a.d}, {a.rounds} rounds")
        res = kernels_ab(n, a.d, a.batch, a.rounds)
        base = res.get("float32, no first pass")
        rows = [[k, v * 1e3, base / v if base else float("nan")] for k, v in res.items()]
        print(table(["variant", "CPU ms per probe", "× float32 (no first pass)"], rows))
        print(machine_line(machine()))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"kernels": res}, f, indent=2)
        return 0
    if not a.a:
        ap.error("--a (the baseline interpreter) is required unless --kernels")
    pythons = {"A": a.a, "B": a.b}
    samples: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    info: dict[str, Any] = {}
    for r in range(a.rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        for v in order:
            t0 = time.perf_counter()
            child = run_child(pythons[v], a.n, a.d, a.batched, a.single, a.seed)
            info[v] = {"version": child["version"], "simd": child["simd"]}
            for k, x in child["cpu_s_per_probe"].items():
                samples[v].setdefault(k, []).append(x)
            if a.demo_identities:
                samples[v].setdefault("demo (CPU s)", []).append(
                    run_demo(pythons[v], a.demo_identities, a.demo_probes)
                )
            print(f"  round {r + 1} {v}: {time.perf_counter() - t0:.0f} s wall", flush=True)
    med = {v: {k: statistics.median(x) for k, x in s.items()} for v, s in samples.items()}
    rows = []
    for k in med["A"]:
        ma, mb = med["A"][k], med["B"].get(k, float("nan"))
        if k.endswith("rank-1"):
            rows.append([k, ma, mb, "—"])
            continue
        scale = 1.0 if k.startswith("demo") else 1e3  # ms per probe
        rows.append([k, ma * scale, mb * scale, ma / mb])
    print(
        f"\n# A = {a.a} ({info['A']}), B = {a.b} ({info['B']}); N = {a.n:,}, d = {a.d}; "
        f"medians of {a.rounds} alternating rounds; CPU ms per probe (demo: CPU s per run)"
    )
    print(table(["task", "A", "B", "A / B (>1: B cheaper)"], rows))
    print(machine_line(machine()))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "medians": med, "samples": samples}, f, indent=2)
    return 0
