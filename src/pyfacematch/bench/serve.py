"""Load benchmark of ``pyfacematch serve`` (issue 16): loopback, bounded in time.

Protocol: build (or reuse) a gallery file of ``n`` random unit templates of dimension ``d`` with
the default backend; start the real server (``python -m pyfacematch serve``) with batching on,
then again with ``--no-batching``, in the same run; against each, ``clients`` concurrent
keep-alive clients each send one probe per request, back to back, for ``seconds``: identify with
a binary body (float32 rows), identify with a JSON body, verify (binary). Reported per scenario:
requests/s, p50 / p90 / p99 / max latency (client side, ms), achieved probe rows per gallery call
(from the server's ``pfm_batch_rows`` histogram), the server's and the load generator's CPU use.

The load generator (:mod:`pyfacematch.bench.loadgen`) is ``wrk`` (C, event-driven) with a Lua
script sending the binary or JSON bodies, where it is installed (``apt-get install wrk``), else
a bounded asyncio client (``--load async``). Either runs on the same two cores as the server,
so its CPU share is reported next to every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.bench.loadgen import Req, have_wrk, load
from pyfacematch.bench.util import cpu_model, table, unit_rows
from pyfacematch.gallery import Gallery

__all__ = ["build_gallery", "main", "run_load", "run_photo_load"]


def build_gallery(path: Path, n: int, d: int, log: Any = print) -> None:
    """Create ``path`` with ``n`` identities of dimension ``d`` unless it already holds them."""
    if path.exists():
        with Gallery.open(path, read_only=True) as g:
            if len(g) == n and g.dim == d:
                return
        raise SystemExit(f"{path} exists with another size: remove it or choose another --folder")
    t0 = time.perf_counter()
    with Gallery.open(path, dim=d) as g:
        step = 50_000
        for s in range(0, n, step):
            m = min(step, n - s)
            g.enroll_many([f"id{i}" for i in range(s, s + m)], unit_rows(m, d, seed=s))
            log(f"  enrolled {s + m}/{n}")
    log(f"built {path} ({n} x {d}) in {time.perf_counter() - t0:.1f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc/<pid>/stat``)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants (the server and its embedding workers)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(d.name)] = int(f[1])
    tree, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p and c not in tree:
                tree.add(c)
                todo.append(c)
    total = 0.0
    for p in tree:
        try:
            total += _cpu_seconds(p)
        except OSError:
            pass
    return total


def _batch_stats(text: str, kind: str) -> tuple[float, float]:
    out = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        for k in out:
            if line.startswith(f'pfm_batch_rows_{k}{{kind="{kind}"}}'):
                out[k] = float(line.split()[-1])
    return out["count"], out["sum"]


def _request(kind: str, body_kind: str, p: np.ndarray, ident: str) -> Req:
    """One request: identify (binary float32 or JSON body) or verify (binary)."""
    if kind == "identify" and body_kind == "binary":
        return ("POST", "/v1/galleries/bench/identify", "application/octet-stream", p.tobytes())
    if kind == "identify":
        body = json.dumps({"probes": [p.tolist()]}).encode()
        return ("POST", "/v1/galleries/bench/identify", "application/json", body)
    path = f"/v1/galleries/bench/verify?identity={ident}"
    return ("POST", path, "application/octet-stream", p.tobytes())


def _photo_request(photo: bytes) -> Req:
    """One multipart identify request carrying one photo."""
    b = b"pfmbenchboundary"
    body = (
        b"--" + b + b'\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--" + b + b"--\r\n"
    )
    ctype = f"multipart/form-data;boundary={b.decode()}"  # wrk's file format: no spaces
    return ("POST", "/v1/galleries/photos/identify", ctype, body)


def run_load(
    url: str, pid: int, kind: str, body_kind: str, probes: np.ndarray, ids: list[str],
    clients: int, seconds: float, generator: str = "auto",
) -> dict[str, Any]:  # fmt: skip
    """One scenario against a running server; figures as a dict."""
    import httpx

    before = _batch_stats(httpx.get(url + "/metrics").text, kind)
    port = int(url.rsplit(":", 1)[1])
    reqs = [_request(kind, body_kind, p, ids[n]) for n, p in enumerate(probes)]
    s0 = _cpu_seconds(pid)
    r = load(generator, port, reqs, clients, seconds)
    s1 = _cpu_seconds(pid)
    after = _batch_stats(httpx.get(url + "/metrics").text, kind)
    out = _summary(f"{kind} {body_kind}", r, before, after, s1 - s0)
    out["server_peak_mib"] = _peak_mib(pid)
    return out


def _peak_mib(pid: int) -> float:
    """Peak resident memory of a process so far, MiB (Linux ``VmHWM``; NaN elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _summary(
    scenario: str,
    r: dict[str, Any],
    before: tuple[float, float],
    after: tuple[float, float],
    server_cpu_s: float,
) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms), rows per core call, server and client CPU."""
    calls, rows = after[0] - before[0], after[1] - before[1]
    wall = r["wall"]
    return {
        "scenario": scenario,
        "generator": r["generator"],
        "requests": r["requests"],
        "errors": r["errors"],
        "rps": r["requests"] / wall,
        **{k: r[k] for k in ("p50", "p90", "p99", "max")},
        "rows_per_call": rows / calls if calls else float("nan"),
        "server_cpu": server_cpu_s / wall,
        # CPU time the server spent per answered request: less sensitive than req/s to other
        # processes on the machine (cores / this = the server's capacity if it had the machine);
        # for photos it counts the server and its embedding worker processes
        "server_cpu_ms_per_request": 1000.0 * server_cpu_s / max(1, r["requests"]),
        "client_cpu": r["client_cpu_s"] / wall,  # cores used by the load generator
    }


def run_photo_load(
    url: str, pid: int, photos: list[bytes], clients: int, seconds: float, workers: int,
    generator: str = "auto",
) -> dict[str, Any]:  # fmt: skip
    """Photo identify (multipart) against a server with an embedder, and the same photos
    embedded in this process by :class:`ParallelEmbedder` with as many workers (the baseline,
    measured right after, on the same machine)."""
    import httpx

    from pyfacematch.embed.parallel import ParallelEmbedder

    port = int(url.rsplit(":", 1)[1])
    before = _batch_stats(httpx.get(url + "/metrics").text, "photo")
    s0 = _tree_cpu_seconds(pid)
    r = load(generator, port, [_photo_request(p) for p in photos], clients, seconds)
    s1 = _tree_cpu_seconds(pid)
    after = _batch_stats(httpx.get(url + "/metrics").text, "photo")
    with ParallelEmbedder("dlib", workers=workers) as emb:
        emb.embed(photos[:2])  # models loaded, as in the server
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += len(emb.embed(photos))
        base = n / (time.perf_counter() - t0)
        base_cpu_ms = 1000.0 * emb.cpu_seconds / max(1, n + 2)
    out = _summary("identify photo", r, before, after, s1 - s0)
    out.update(
        {
            "in_process_cpu_ms_per_photo": base_cpu_ms,
            "in_process_photos_per_s": base,
            "ratio_to_in_process": out["rps"] / base,
        }
    )
    return out


def _serve(
    path: Path, batching: bool, extra: list[str], name: str = "bench"
) -> tuple[str, subprocess.Popen[bytes]]:
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "pyfacematch", "serve", "--gallery", f"{name}={path}",
           "--port", str(port), "--log-level", "warning", *extra]  # fmt: skip
    if not batching:
        cmd.append("--no-batching")
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 600:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return url, proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server not ready after 600 s")


def _http_stack() -> str:
    """What uvicorn picks in this interpreter (``loop="auto"``, ``http="auto"``)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    js = "orjson" if importlib.util.find_spec("orjson") else "json"
    return f"uvicorn + {loop} + {http}, {js}"


def main(argv: list[str] | None = None) -> int:
    """Command line of ``bench/serve.py``; prints a Markdown table and writes JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="identities (default 100000)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    ap.add_argument("--folder", default="/tmp/pfm-bench-serve", help="gallery files are kept here")
    ap.add_argument("--out", default=None, help="JSON results file")
    ap.add_argument("--server-args", default="", help="extra serve flags, space separated")
    ap.add_argument(
        "--photos",
        default=None,
        metavar="DIR",
        help="also identify these photos (*.jpg, searched recursively) through a server started "
        "with --embedder dlib, against a 128-d gallery of --n identities; baseline: the same "
        "photos embedded in-process",
    )
    ap.add_argument("--photo-clients", type=int, default=8)
    ap.add_argument("--embed-workers", type=int, default=1)
    ap.add_argument("--skip-templates", action="store_true", help="only the photo scenario")
    ap.add_argument(
        "--load",
        choices=("auto", "wrk", "async"),
        default="auto",
        help="load generator: wrk (C, with a Lua script), async (Python asyncio client) or "
        "auto (wrk where installed)",
    )
    ap.add_argument(
        "--scenarios",
        default="identify-binary,identify-json,verify-binary",
        help="comma-separated subset of identify-binary, identify-json, verify-binary",
    )
    ap.add_argument(
        "--batching", choices=("both", "on", "off"), default="both", help="servers to run"
    )
    a = ap.parse_args(argv)
    folder = Path(a.folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"g{a.n}x{a.dim}.db"
    if not a.skip_templates:
        build_gallery(path, a.n, a.dim)
    rng = np.random.default_rng(7)
    probes = unit_rows(1024, a.dim, seed=10**9)
    ids = [f"id{int(i)}" for i in rng.integers(0, a.n, 1024)]
    generator = a.load if a.load != "auto" else ("wrk" if have_wrk() else "async")
    scenarios = [tuple(x.strip().split("-", 1)) for x in a.scenarios.split(",") if x.strip()]
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[a.batching]
    rows = []
    for batching in () if a.skip_templates else modes:
        url, proc = _serve(path, batching, a.server_args.split())
        try:
            for kind, body in scenarios:
                r = run_load(
                    url, proc.pid, kind, body, probes, ids, a.clients, a.seconds, generator
                )
                r["batching"] = "on" if batching else "off"
                rows.append(r)
                print(json.dumps(r), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    if a.photos:
        photos = [p.read_bytes() for p in sorted(Path(a.photos).rglob("*.jpg"))]
        if not photos:
            raise SystemExit(f"no *.jpg under {a.photos}")
        ppath = folder / f"g{a.n}x128.db"
        build_gallery(ppath, a.n, 128)
        extra = ["--embedder", "dlib", "--embed-workers", str(a.embed_workers)]
        url, proc = _serve(ppath, True, extra + a.server_args.split(), name="photos")
        try:
            r = run_photo_load(
                url, proc.pid, photos, a.photo_clients, a.seconds, a.embed_workers, generator
            )
            r["batching"] = "on"
            rows.append(r)
            print(json.dumps(r), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} logical CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end; gallery {a.n} x {a.dim}; "
          f"{a.clients} keep-alive clients, one probe per request, {a.seconds:g} s per scenario; "
          f"load generator {generator}; server HTTP stack {_http_stack()}\n")  # fmt: skip
    heads: list[str] = ["batching", "scenario", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    heads += ["rows/call", "server CPU", "server CPU ms/req", "client CPU", "server peak MiB"]
    heads += ["errors"]
    cells: list[list[Any]] = []
    for r in rows:
        cells.append(
            [r["batching"], r["scenario"], f"{r['rps']:.0f}"]
            + [f"{r[k]:.1f}" for k in ("p50", "p90", "p99", "max", "rows_per_call")]
            + [f"{r['server_cpu']:.2f}", f"{r['server_cpu_ms_per_request']:.2f}"]
            + [f"{r['client_cpu']:.2f}", f"{r.get('server_peak_mib', float('nan')):.0f}"]
            + [r["errors"]]
        )
    print(table(heads, cells))
    by = {(r["batching"], r["scenario"]): r for r in rows}
    for sc in ("identify binary", "identify json", "verify binary"):
        on, off = by.get(("on", sc)), by.get(("off", sc))
        if on and off:
            print(
                f"{sc}: batching on / off = {on['rps'] / off['rps']:.2f}x requests/s, "
                f"server CPU per request {off['server_cpu_ms_per_request']:.2f} / "
                f"{on['server_cpu_ms_per_request']:.2f} ms = "
                f"{off['server_cpu_ms_per_request'] / on['server_cpu_ms_per_request']:.2f}x"
            )
    ph = by.get(("on", "identify photo"))
    if ph:
        print(
            f"identify photo: {ph['rps']:.1f} photos/s through the server ({a.photo_clients} "
            f"clients, {ph['rows_per_call']:.1f} photos per embed call) against "
            f"{ph['in_process_photos_per_s']:.1f}/s embedded in-process with the same "
            f"{a.embed_workers} worker(s) = {ph['ratio_to_in_process']:.2f}x; CPU per photo "
            f"{ph['server_cpu_ms_per_request']:.1f} ms (server + workers) against "
            f"{ph['in_process_cpu_ms_per_photo']:.1f} ms (in-process workers)"
        )
    if a.out:
        Path(a.out).write_text(json.dumps({"n": a.n, "dim": a.dim, "rows": rows}, indent=1))
    return 0
