"""Load generators for the service benchmark: ``wrk`` (C) driven by a Lua script, or asyncio.

Both take the same requests (method, path, content type, body), keep ``clients`` keep-alive
connections busy back to back for ``seconds`` on loopback, and return the same figures:
requests, errors, wall time, latency percentiles (ms) and the load generator's own CPU seconds
(it shares the machine with the server, so its share is reported next to every figure).

``wrk`` (https://github.com/wg/wrk, Debian package ``wrk``) is an event-driven C client: one
request costs it a few microseconds, so nearly all of the machine is left to the server. Its
Lua script loads the requests from a file, sends them round-robin and prints a JSON summary
from its latency histogram (microsecond resolution). Where ``wrk`` is missing, the fallback is a
minimal HTTP/1.1 client on asyncio streams (one coroutine per connection), which costs the
server several times more of the shared CPU; its requests/s are a lower bound.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LUA", "Req", "async_load", "have_wrk", "load", "wrk_load"]

#: One request: (method, path with query, content type, body).
Req = tuple[str, str, str, bytes]

#: The wrk script: requests from the file named by PFM_REQUESTS ("METHOD PATH CTYPE LEN\n"
#: then LEN body bytes, repeated), sent round-robin from a per-thread offset; the summary is one
#: JSON line prefixed by PFM_RESULT. wrk runs LuaJIT (Lua 5.1): no integer division operator.
LUA = r"""
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  local f = assert(io.open(os.getenv("PFM_REQUESTS"), "rb"))
  local data = f:read("*a")
  f:close()
  reqs = {}
  local pos = 1
  while pos <= #data do
    local e = data:find("\n", pos, true)
    local method, path, ctype, len = data:sub(pos, e - 1):match("^(%S+) (%S+) (%S+) (%d+)$")
    len = tonumber(len)
    reqs[#reqs + 1] = wrk.format(method, path, {["Content-Type"] = ctype},
                                 data:sub(e + 1, e + len))
    pos = e + len + 1
  end
  i = (tid or 0) * 7919
end

function request()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'PFM_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def have_wrk() -> bool:
    """Whether the ``wrk`` command is installed."""
    return shutil.which("wrk") is not None


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wrk_load(
    port: int, reqs: list[Req], clients: int, seconds: float, threads: int = 2
) -> dict[str, Any]:
    """Run ``wrk`` against ``127.0.0.1:port`` for ``seconds``; figures as a dict.

    The run is bounded: wrk stops itself after ``seconds`` (requests still waiting then count
    as timeouts after 10 s) and is killed if it has not exited 60 s later. Its CPU time is the
    change in this process's reaped-children usage around the run (the server, also a child,
    is not reaped meanwhile).
    """
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk, or use --load async")
    with tempfile.TemporaryDirectory(prefix="pfm-wrk-") as tmp:
        rq, lua = Path(tmp) / "requests.bin", Path(tmp) / "pfm.lua"
        with rq.open("wb") as f:
            for method, path, ctype, body in reqs:
                f.write(f"{method} {path} {ctype} {len(body)}\n".encode() + body)
        lua.write_text(LUA)
        cmd = [exe, "-t", str(max(1, min(threads, clients))), "-c", str(clients),
               "-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(lua),
               f"http://127.0.0.1:{port}"]  # fmt: skip
        c0, w0 = _children_cpu(), time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PFM_REQUESTS": str(rq), "PATH": "/usr/bin:/bin"},
        )
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError(f"wrk did not stop within {seconds + 60:.0f} s") from None
        wall, cpu = time.perf_counter() - w0, _children_cpu() - c0
    line = next((ln for ln in out.decode().splitlines() if ln.startswith("PFM_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()[-2000:]}")
    r = json.loads(line[len("PFM_RESULT ") :])
    dur = r["duration_us"] / 1e6
    return {
        "generator": "wrk",
        "requests": r["requests"],
        "errors": sum(r[k] for k in ("connect", "read", "write", "status", "timeout")),
        "wall": dur,
        "p50": r["p50_us"] / 1000.0,
        "p90": r["p90_us"] / 1000.0,
        "p99": r["p99_us"] / 1000.0,
        "max": r["max_us"] / 1000.0,
        "client_cpu_s": cpu * dur / wall,  # wrk's setup (reading the file) left out pro rata
    }


def _raw(req: Req, port: int) -> bytes:
    method, path, ctype, body = req
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _async_run(
    port: int, raw: list[bytes], clients: int, seconds: float
) -> tuple[list[float], int]:
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(j: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = j
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                writer.write(raw[i % len(raw)])
                i += clients
                head = await reader.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        n = int(line[15:])
                await reader.readexactly(n)
                lat.append(time.perf_counter() - t0)
                if head[9:12] != b"200":
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker(j) for j in range(clients)))
    return lat, errors


def async_load(port: int, reqs: list[Req], clients: int, seconds: float) -> dict[str, Any]:
    """The fallback: ``clients`` keep-alive connections on one asyncio loop in this process.

    A minimal HTTP/1.1 client (status line, Content-Length body): much less CPU per request
    than a general client such as httpx, yet several times wrk's.
    """
    raw = [_raw(r, port) for r in reqs]
    c0, w0 = time.process_time(), time.perf_counter()
    lat, errors = asyncio.run(_async_run(port, raw, clients, seconds))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    ms = np.asarray(lat) * 1000.0 if lat else np.zeros(1)
    return {
        "generator": "asyncio",
        "requests": len(lat),
        "errors": errors,
        "wall": wall,
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
        "client_cpu_s": cpu,
    }


def load(
    generator: str, port: int, reqs: list[Req], clients: int, seconds: float
) -> dict[str, Any]:
    """Run ``generator`` ("wrk", "async" or "auto": wrk where installed)."""
    if generator == "auto":
        generator = "wrk" if have_wrk() else "async"
    if generator == "wrk":
        return wrk_load(port, reqs, clients, seconds)
    if generator == "async":
        return async_load(port, reqs, clients, seconds)
    raise ValueError(f"unknown load generator {generator!r}: wrk, async or auto")
