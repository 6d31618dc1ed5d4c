"""Landmark keys: encode speed against a vectorised numpy pipeline, synthetic accuracy with
occluders, and the real-faces report. A thin entry point: the protocols are
:mod:`pyfacematch.bench.keys` (speed) and :mod:`pyfacematch.bench.accuracy` (accuracy), the same
code ``pyfacematch bench`` runs.

    python bench/keys.py speed      [--n 200000] [--repeat 5]
    python bench/keys.py accuracy   [--identities 10000] [--train 2000]
    python bench/keys.py real
    python bench/keys.py synth      (a million 200-point faces)

Speed: ``KeyModel.encode`` and the numpy pipeline encode the same faces, one warm-up call each,
then ``--repeat`` interleaved rounds; medians of wall-clock faces/s and CPU µs per face.
Accuracy (dense200, 2-D): a key model fitted on ``--train`` identities (5 faces each, disjoint);
the gallery holds one face of each of ``--identities`` identities; mated probes are another face
of the first half, non-mated probes faces of as many identities never enrolled. Per probe
condition (clean, mask, hand, sunglasses): plain cosine (keys ignoring visibility) against masked
cosine (keys from the visible points, region masks, min_fraction 0.3). FNIR at FPIR = 0.01 is
:func:`pyfacematch.metrics.fnir_at_fpir` (mate counted at rank 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pyfacematch.bench.accuracy import measure_key_accuracy
from pyfacematch.bench.keys import (
    measure_key_speed,
    measure_real_keys,
    measure_synth_speed,
    speed_table,
)
from pyfacematch.bench.report import write_json
from pyfacematch.bench.util import machine, machine_line, table


def speed(n: int, repeat: int) -> dict[str, Any]:
    r = measure_key_speed(n, repeat=repeat)
    t = speed_table(r)
    print(f"encode dense200 2-D, d={r['key_dim']}, threads={r['threads']}, random occluders")
    print(table(t["headers"], t["rows"]))
    print(t["note"])
    return r


def accuracy(n_ids: int, n_train: int) -> dict[str, Any]:
    r = measure_key_accuracy(n_ids, n_train, log=lambda s: None)
    r.pop("det")
    n_mated = r["rows"][0]["n_mated"]
    print(f"gallery {n_ids} identities; {n_mated} mated + {n_mated} non-mated probes per condition")
    print(
        table(
            ["probe", "scoring", "rank-1", "FNIR@FPIR=0.01", "FNIR 95 % CI", "shared dims"],
            [
                [
                    x["probe"],
                    x["scoring"],
                    f"{x['rank1']:.4f}",
                    f"{x['fnir_at_fpir_0.01']:.4f}",
                    f"[{x['fnir_ci95'][0]:.4f}, {x['fnir_ci95'][1]:.4f}]",
                    f"{x['shared_fraction']:.2f}",
                ]
                for x in r["rows"]
            ],
        )
    )
    return r


def real() -> dict[str, Any]:
    path = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces_johns_landmarks.npz"
    out = measure_real_keys(path)
    for name, r in out.items():
        scheme, kind = name.split("/")
        print(
            f"{scheme:<13} {kind:<8} LOO rank-1 {r['hits']}/{r['n']} = {r['rank1']:.3f}; "
            f"genuine mean {r['genuine_mean']:.3f} [min {r['genuine_min']:.3f}, max "
            f"{r['genuine_max']:.3f}]; impostor mean {r['impostor_mean']:.3f} "
            f"[min {r['impostor_min']:.3f}, max {r['impostor_max']:.3f}]"
        )
    return out


def synth_speed() -> dict[str, Any]:
    out = measure_synth_speed()
    for dims, sec in out.items():
        print(f"synth: 1,000,000 dense200 faces, {dims}-D, random occluders: {sec:.1f} s")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["speed", "accuracy", "real", "synth"])
    ap.add_argument("--n", type=int, default=200000, help="faces encoded by both engines (speed)")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds, median reported (speed)")
    ap.add_argument("--identities", type=int, default=10000, help="gallery size (accuracy)")
    ap.add_argument("--train", type=int, default=2000, help="training identities (accuracy)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    info = machine()
    print(machine_line(info))
    r = {
        "speed": lambda: speed(a.n, a.repeat),
        "accuracy": lambda: accuracy(a.identities, a.train),
        "real": real,
        "synth": synth_speed,
    }[a.what]()
    if a.json:
        write_json({"machine": info, a.what: r}, Path(a.json))
    return r


if __name__ == "__main__":
    main()
