"""Gallery search benchmark (issue 4 protocol): a thin entry point over
:func:`pyfacematch.bench.backends.measure_backends`, the code ``pyfacematch bench`` runs.

Synthetic gallery: N identities at d = 512, centres uniform on the sphere, a template is
normalise(centre + 0.734·g/√d) (two templates of one identity: cosine ≈ 0.65, of two
identities ≈ 0). The gallery holds one template per identity; each probe is a fresh template of
an enrolled identity.

For every gallery backend (through the real ``Gallery`` API: ``enroll_many`` into an in-memory
gallery, index build, self-tuning, then ``identify_arrays``): enroll+build+tune time, chosen
depth, bytes of codes per identity, probes/s at batch 1 and 1024, recall@1 against exact search
and the share of search time spent in the exact re-rank. In the same run: the approximate
backends' depth sweeps, plain FAISS (the same indexes, no re-ranking), ``faiss.IndexBinaryFlat``
and the core's ``hamming_topk`` + re-rank, and hnswlib. Then the real dlib embeddings
(``faces_johns.npz``) as a check that 1-bit codes still rank well on an uncentred model.

Usage::

    python bench/gallery.py --n 200000            # the issue's N is 1_000_000
    python bench/gallery.py --n 20000 --backends exact,binary --no-hnswlib
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.bench.backends import backends_tables, measure_backends, measure_real_codes
from pyfacematch.bench.report import write_json
from pyfacematch.bench.util import machine, machine_line, table


def real_check() -> dict[str, Any] | None:
    """1-bit codes on the real dlib descriptors (uncentred): leave-one-out recall@1."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces_johns.npz"
    if not path.exists():
        print(f"\n# real embeddings: {path} not found, skipped")
        return None
    e = np.load(path)["embeddings"]
    print(
        f"\n# real embeddings: dlib {e.shape[1]}-d, n={e.shape[0]}, leave-one-out, recall@1 of codes+rerank vs exact"
    )
    r = measure_real_codes(e)
    for label, by_c in r.items():
        print(f"  {label}: " + ", ".join(f"C={c}: {v:.3f}" for c, v in by_c.items()))
    return r


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--probes", type=int, default=2048)
    ap.add_argument("--single", type=int, default=300, help="probes timed one at a time")
    ap.add_argument("--backends", default="exact,binary,flat,hnsw,ivf,ivfpq")
    ap.add_argument("--no-hnswlib", action="store_true")
    ap.add_argument("--hnswlib-max", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--tune-similarity",
        type=float,
        default=None,
        help="cosine of the self-tuning probes (default: the Gallery default, 0.5; "
        "the protocol's genuine cosine is about 0.65)",
    )
    ap.add_argument("--sweep-points", type=int, default=6, help="depths per approximate backend")
    ap.add_argument("--no-real", action="store_true", help="skip the real-embeddings check")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    info = machine()
    print(machine_line(info))
    print(
        f"# gallery bench: N={a.n} d={a.d} probes={a.probes} "
        f"tune_similarity={a.tune_similarity or 'default'}",
        flush=True,
    )
    r = measure_backends(
        a.n,
        a.d,
        backends=tuple(b for b in a.backends.split(",") if b),
        n_probes=a.probes,
        single=a.single,
        sweep_points=a.sweep_points,
        hnswlib_max=a.hnswlib_max,
        tune_similarity=a.tune_similarity,
        hnswlib=not a.no_hnswlib,
        seed=a.seed,
        log=lambda s: print(s, flush=True),
    )
    print(f"# mate found at rank 1 by exact search: {r['mate_at_rank1_exact']:.4f}")
    for t in backends_tables(r):
        print(f"\n{t['title']}\n{table(t['headers'], t['rows'])}")
    for what, why in r["skipped"].items():
        print(f"# {what}: skipped ({why})")
    r["real"] = None if a.no_real else real_check()
    if a.json:
        write_json({"machine": info, "backends": r}, Path(a.json))
    return r


if __name__ == "__main__":
    main()
