"""Gallery search benchmark (issue 4 protocol).

Synthetic gallery: N identities at d = 512, centres uniform on the sphere, a
template is normalise(centre + 0.734·g/√d) (two templates of one identity:
cosine ≈ 0.65, of two identities ≈ 0). The gallery holds one template per
identity; each probe is a fresh template of an enrolled identity.

For every gallery backend (through the real ``Gallery.identify_arrays`` API:
validation, lock, shortlist, exact re-rank, fusion): build time, self-tuning
time and chosen depth, bytes of codes per identity beyond the float32
templates, probes/s at batch 1 and 1024, recall@1 against exact search, and
the share of search time spent in the exact re-rank. In the same run:
plain FAISS (the same indexes, no re-ranking, same depth),
``faiss.IndexBinaryFlat`` + core re-rank, and hnswlib. Then the real dlib
embeddings (``faces_johns.npz``) as a check that 1-bit codes still rank well
on an uncentred model.

Usage::

    python bench/gallery.py --n 200000            # the issue's N is 1_000_000
    python bench/gallery.py --n 20000 --backends exact,binary --no-hnswlib
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import pyfacematch
from pyfacematch import gallery as gallery_mod
from pyfacematch.bench.backends import rate
from pyfacematch.bench.synthdata import SyntheticIdentities
from pyfacematch.index import FaissBackend, TemplateMatrix


def synth(n: int, d: int, n_probes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gallery (n, d), mated probes (n_probes, d) and their identities: the suite's generator."""
    ids = SyntheticIdentities(n, d, seed=seed)
    probes, probe_ids = ids.mated_probes(n_probes, seed=seed + 1)
    return ids.gallery(), probes, probe_ids


def make_gallery(name: str, m: TemplateMatrix, **kw: object) -> tuple[object, float, float]:
    """A Gallery over an existing matrix (skips the SQLite copy): build + tune times."""
    g = gallery_mod.Gallery(dim=m.dim, backend=name, **kw)
    g._m = m
    g._slot_names = [f"id{i}" for i in range(m.n)]
    g._n_identities = m.n
    g._max_templates = 1
    t0 = time.perf_counter()
    g._backend.rebuild(m)
    t1 = time.perf_counter()
    g._tune()
    t2 = time.perf_counter()
    return g, t1 - t0, t2 - t1


def recall_rows(rows: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean(rows == ref))


def row(table: list, **kv: object) -> None:
    table.append(kv)
    print("  " + "  ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


def main() -> None:
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
    args = ap.parse_args()

    import faiss

    print(
        f"# gallery bench: N={args.n} d={args.d} probes={args.probes} cores={os.cpu_count()} "
        f"simd={pyfacematch.core.simd.info() if hasattr(pyfacematch.core.simd, 'info') else '?'} "
        f"faiss={faiss.__version__} tune_similarity={args.tune_similarity or 'default'}",
        flush=True,
    )
    t0 = time.perf_counter()
    gal, probes, pid = synth(args.n, args.d, args.probes, args.seed)
    print(f"# synthetic data: {time.perf_counter() - t0:.1f}s", flush=True)
    m = TemplateMatrix(args.d, masked=False, capacity=args.n)
    ids = np.arange(args.n, dtype=np.int64)
    m.append(gal, ids + 1, ids, None)  # template ids start at 1 like SQLite
    del gal

    # exact reference
    t0 = time.perf_counter()
    ref_s, ref_i = pyfacematch.topk(probes, m.view, 1)
    t_exact = time.perf_counter() - t0
    ref = ref_i[:, 0]
    print(
        f"# exact top-1 of {args.probes} probes: {t_exact:.2f}s; mate found at rank 1: "
        f"{np.mean(ref == pid):.4f}",
        flush=True,
    )

    table: list[dict] = []
    backends = [b for b in args.backends.split(",") if b]
    keep: dict[str, object] = {}
    for name in backends:
        print(f"## {name}", flush=True)
        kw = {} if args.tune_similarity is None else {"tune_similarity": args.tune_similarity}
        g, t_build, t_tune = make_gallery(name, m, **kw)
        b = g._backend

        def api(p: np.ndarray, g=g) -> object:
            return g.identify_arrays(p, k=1)

        res = api(probes)
        rows_got = np.array([int(x[2:]) for x in res.identities[:, 0]])
        rec = recall_rows(rows_got, ref)
        b1024 = rate(api, probes, 1024, args.probes)
        b1 = rate(api, probes, 1, args.single)
        share = ""
        if name != "exact":
            p = probes[:1024]
            t0 = time.perf_counter()
            cand = b.shortlist(m, p, 1)
            t1 = time.perf_counter()
            pyfacematch.rerank(p, m.view, cand, 1)
            t2 = time.perf_counter()
            share = f"{100 * (t2 - t1) / (t2 - t0):.1f}%"
        info = g.index_info()
        row(
            table,
            backend=name,
            build_s=round(t_build, 2),
            tune_s=round(t_tune, 2),
            depth=info.get("depth"),
            scan=info.get("scan_shortlist"),
            tuned_recall=info.get("measured_recall_at_1"),
            bytes_per_id=round(b.code_bytes_per_template(), 1),
            ps_b1=round(b1),
            ps_b1024=round(b1024),
            recall1=round(rec, 4),
            rerank_share=share,
        )
        keep[name] = g

    # plain FAISS: the same indexes, their own top-1, no re-ranking
    for name in ("flat", "hnsw", "ivf", "ivfpq"):
        g = keep.get(name)
        if g is None or not isinstance(g._backend, FaissBackend) or g._backend.index is None:
            continue
        index = g._backend.index

        def plain(p: np.ndarray, index=index) -> np.ndarray:
            return index.search(p, 1)[1]

        lab = plain(probes)[:, 0]
        row(
            table,
            backend=f"faiss-{name} (no rerank)",
            depth=g._backend.depth,
            ps_b1=round(rate(plain, probes, 1, args.single)),
            ps_b1024=round(rate(plain, probes, 1024, args.probes)),
            recall1=round(recall_rows(lab - 1, ref), 4),
        )

    # faiss.IndexBinaryFlat on the same centred codes + the core's exact re-rank
    gb = keep.get("binary")
    if gb is not None:
        bb = gb._backend
        codes = bb.codes(m.n)
        t0 = time.perf_counter()
        bidx = faiss.IndexBinaryFlat(codes.shape[1] * 8)
        bidx.add(codes)
        t_b = time.perf_counter() - t0
        for c in sorted({16, int(bb.depth)}):

            def fb(p: np.ndarray, c=c) -> np.ndarray:
                q = pyfacematch.pack_signs(p, center=bb.center)
                _, cand = bidx.search(q, c)
                return pyfacematch.rerank(p, m.view, cand, 1)[1]

            got = fb(probes)[:, 0]
            row(
                table,
                backend=f"faiss-IndexBinaryFlat+rerank C={c}",
                build_s=round(t_b, 2),
                bytes_per_id=codes.shape[1],
                ps_b1=round(rate(fb, probes, 1, args.single)),
                ps_b1024=round(rate(fb, probes, 1024, args.probes)),
                recall1=round(recall_rows(got, ref), 4),
            )
        # the core's own scan at the same shortlist lengths, no Gallery API around it
        for c in sorted({16, int(bb.depth)}):

            def cb(p: np.ndarray, c=c) -> np.ndarray:
                q = pyfacematch.pack_signs(p, center=bb.center)
                _, cand = pyfacematch.hamming_topk(q, codes, c)
                return pyfacematch.rerank(p, m.view, cand, 1)[1]

            got = cb(probes)[:, 0]
            row(
                table,
                backend=f"core hamming_topk+rerank C={c}",
                bytes_per_id=codes.shape[1],
                ps_b1=round(rate(cb, probes, 1, args.single)),
                ps_b1024=round(rate(cb, probes, 1024, args.probes)),
                recall1=round(recall_rows(got, ref), 4),
            )

    if not args.no_hnswlib:
        try:
            import hnswlib
        except ImportError:
            print("# hnswlib not installed: skipped")
        else:
            n_h = min(args.n, args.hnswlib_max)
            sub = m.view[:n_h]
            # only probes whose exact answer in the full gallery lies in the subset
            hp = np.ascontiguousarray(probes[ref < n_h])
            href = ref[ref < n_h]
            t0 = time.perf_counter()
            h = hnswlib.Index(space="ip", dim=args.d)
            h.init_index(max_elements=n_h, M=32, ef_construction=80, random_seed=1)
            h.add_items(sub, np.arange(n_h), num_threads=os.cpu_count() or 1)
            t_h = time.perf_counter() - t0
            for ef in (64, 128, 256, 512, 1024):
                h.set_ef(ef)

                def hq(p: np.ndarray) -> np.ndarray:
                    return h.knn_query(p, k=1)[0]

                got = hq(hp)[:, 0]
                row(
                    table,
                    backend=f"hnswlib M=32 ef={ef} (N={n_h}, {hp.shape[0]} probes)",
                    build_s=round(t_h, 2),
                    ps_b1=round(rate(hq, hp, 1, args.single)),
                    ps_b1024=round(rate(hq, hp, 1024, args.probes)),
                    recall1=round(recall_rows(got, href), 4),
                )

    # ratios against the exact backend through the same API
    base = next((r for r in table if r.get("backend") == "exact"), None)
    print(
        "\n| backend | build s | tune s | depth | bytes/id | probes/s b=1 | probes/s b=1024 |"
        " ×exact b=1024 | recall@1 | rerank share |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        ratio = ""
        if base and r.get("ps_b1024"):
            ratio = f"{r['ps_b1024'] / base['ps_b1024']:.1f}"
        print(
            f"| {r.get('backend')} | {r.get('build_s', '')} | {r.get('tune_s', '')} | "
            f"{r.get('depth', '')}{'' if r.get('scan') is None else ' (scan ' + str(r['scan']) + ')'} | {r.get('bytes_per_id', '')} | {r.get('ps_b1', '')} | "
            f"{r.get('ps_b1024', '')} | {ratio} | {r.get('recall1', '')} | "
            f"{r.get('rerank_share', '')} |"
        )
    real_check()


def real_check() -> None:
    """1-bit codes on real dlib descriptors (uncentred): leave-one-out recall@1."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces_johns.npz"
    if not path.exists():
        print(f"\n# real embeddings: {path} not found, skipped")
        return
    e = np.load(path)["embeddings"].astype(np.float32)
    n = e.shape[0]
    print(
        f"\n# real embeddings: dlib 128-d, n={n}, leave-one-out, recall@1 of codes+rerank vs exact"
    )
    cos = e @ e.T
    np.fill_diagonal(cos, -np.inf)
    ref = cos.argmax(1)
    for label, center in (("centred on gallery mean", e.mean(0)), ("no centring", None)):
        codes = pyfacematch.pack_signs(e, center=center)
        out = []
        for c in (1, 2, 4, 8):
            hits = 0
            for i in range(n):
                keep = np.r_[0:i, i + 1 : n]
                _, cand = pyfacematch.hamming_topk(codes[i], np.ascontiguousarray(codes[keep]), c)
                _, top = pyfacematch.rerank(e[i], np.ascontiguousarray(e[keep]), cand, 1)
                hits += int(keep[top[0]] == ref[i])
            out.append(f"C={c}: {hits / n:.3f}")
        print(f"  {label}: " + ", ".join(out))


if __name__ == "__main__":
    main()
