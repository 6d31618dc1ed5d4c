"""What an opt-out costs: ``remove()`` latency per erasure-scrub mode, vs no scrub at all.

A thin entry point over :func:`pyfacematch.bench.erasure.measure_erasure` (protocol there).

    python bench/erasure.py [--n 20000] [--dim 512] [--removes 9]
"""

from __future__ import annotations

import argparse

from pyfacematch.bench.erasure import measure_erasure
from pyfacematch.bench.util import machine, machine_line


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20_000, help="identities (one template each)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--removes", type=int, default=9, help="remove() calls per mode (median)")
    ap.add_argument("--workdir", help="folder for the galleries (default: the temp folder)")
    a = ap.parse_args(argv)
    print(machine_line(machine()))
    r = measure_erasure(a.n, a.dim, a.removes, workdir=a.workdir)
    base = r["no_scrub"]["remove_s"]
    print(
        f"# remove() cost, {a.n:,} identities x {a.dim}, flat backend, file {r['file_mb']:.0f} MB"
    )
    print("| mode | remove() ms (median) | x no-scrub | scrub s (median) |")
    print("| --- | --- | --- | --- |")
    for mode, label in (
        ("no_scrub", "no scrub (pre-fix; leaks)"),
        ("immediate", "immediate"),
        ("background", "background"),
    ):
        m = r[mode]
        scrub = f"{m['scrub_s']:.2f}" if "scrub_s" in m else "-"
        print(f"| {label} | {m['remove_s'] * 1e3:.1f} | {m['remove_s'] / base:.1f} | {scrub} |")
    return r


if __name__ == "__main__":
    main()
