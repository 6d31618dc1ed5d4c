"""Overhead of encryption at rest + cancelable templates + search audit, all on vs all off.

A thin entry point over :func:`pyfacematch.bench.trust.measure_trust` (the protocol is there).

    python bench/trust.py [--n 100000] [--dim 512] [--batch 1000] [--single 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pyfacematch.bench.trust import measure_trust
from pyfacematch.bench.util import machine, machine_line


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000, help="templates in each gallery")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1000, help="probes per batched identify")
    ap.add_argument("--single", type=int, default=200, help="single-probe calls per round")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds (medians)")
    ap.add_argument("--workdir", help="folder for the two galleries (default: the temp folder)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    info = machine()
    print(machine_line(info))
    r = measure_trust(
        a.n, a.dim, batch=a.batch, single=a.single, repeat=a.repeat, workdir=a.workdir
    )
    print(f"# trust overhead, {a.n:,} x {a.dim}, default backend; ratio = on / off")
    print("| measure | off | on | ratio |")
    print("| --- | --- | --- | --- |")
    print(
        f"| enroll (s, chunks of 10k) | {r['enroll_s']['off']:.2f} | {r['enroll_s']['on']:.2f} | {r['enroll_ratio']:.2f} |"
    )
    print(
        f"| open (s, median) | {r['open_s']['off']:.3f} | {r['open_s']['on']:.3f} | {r['open_ratio']:.2f} |"
    )
    bp = r["identify_batched_probes_per_s"]
    print(
        f"| identify batched (probes/s) | {bp['off']:,.0f} | {bp['on']:,.0f} | {r['identify_batched_ratio']:.2f} (time) |"
    )
    sm = r["identify_single_ms"]
    print(
        f"| identify single (ms/call) | {sm['off']:.2f} | {sm['on']:.2f} | {r['identify_single_ratio']:.2f} |"
    )
    ro = r["identify_single_read_only_ms"]
    print(
        f"| identify single, 'on' gallery read-only (ms/call; audit off / on = sidecar) | {ro['off']:.2f} | {ro['on']:.2f} | {r['identify_single_read_only_ratio']:.2f} |"
    )
    print(
        f"# encrypt in place (copy of 'off'): {r['encrypt_in_place_s']:.1f} s "
        f"(open before: {r['encrypt_in_place_open_s']:.1f} s); answers identical: "
        f"{r['encrypt_in_place_same_answers']}; read-only records chained in: "
        f"{r['read_only_records_imported']} (writable open incl. import: {r['open_with_import_s']:.1f} s)"
    )
    print(
        f"# mated probes: same top-1 on vs off {r['same_top1_mated_on_vs_off']:.3f}, "
        f"max top-1 score difference {r['max_top1_score_diff_mated']:.1e}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": info, "trust": r}, indent=2, default=str))
    return r


if __name__ == "__main__":
    main()
