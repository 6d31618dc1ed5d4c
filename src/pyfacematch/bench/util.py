"""Helpers shared by the benchmarks: timing by median, machine description, Markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SIMD_FLAGS",
    "shared_data_dir",
    "median_times_interleaved",
    "median_time",
    "cpu_info",
    "cpu_model",
    "machine",
    "machine_line",
    "unit_rows",
    "table",
]


def median_times_interleaved(
    fns: dict[str, Callable[[], Any]], repeat: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median wall time of each ``fns[name]()`` in seconds, the engines run in turn in each round.

    On a shared machine a neighbour's burst then lands on every engine alike instead of on
    whichever one happened to be running, so the ratios between them stay fair.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: float(statistics.median(v)) for name, v in samples.items()}


def median_time(
    fn: Callable[[], Any], repeat: int = 5, warmup: int = 1, min_time: float = 0.0
) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs (after ``warmup`` runs).

    With ``min_time`` > 0, each sample loops ``fn`` until that many seconds pass and divides.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        n = 0
        t0 = time.perf_counter()
        while True:
            fn()
            n += 1
            el = time.perf_counter() - t0
            if el >= min_time:
                break
        samples.append(el / n)
    return statistics.median(samples)


#: CPU flags that decide which kernels run (printed with every table; the full list is in the JSON)
SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_vpopcntdq",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
)


def cpu_info() -> dict[str, Any]:
    """CPU vendor, model name and feature flags from ``/proc/cpuinfo`` (platform data elsewhere).

    Returns
    -------
    dict
        ``vendor`` (e.g. ``"AuthenticAMD"``), ``model`` (e.g. ``"AMD EPYC"``), ``family`` and
        ``model_number`` (strings, may be None), ``flags`` (sorted list of every flag).
    """
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # first processor only
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = fields.get("flags") or fields.get("Features") or ""
    return {
        "vendor": fields.get("vendor_id") or fields.get("CPU implementer") or platform.machine(),
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "family": fields.get("cpu family"),
        "model_number": fields.get("model"),
        "flags": sorted(flags.split()),
    }


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    return str(cpu_info()["model"])


def machine() -> dict[str, Any]:
    """CPU model, cores, SIMD level and library versions, for the report."""
    import pyfacematch as pf

    cpu = cpu_info()
    info: dict[str, Any] = {
        "cpu": cpu["model"],
        "cpu_vendor": cpu["vendor"],
        "cpu_family": cpu["family"],
        "cpu_model_number": cpu["model_number"],
        "cpu_flags": cpu["flags"],
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyfacematch": pf.__version__,
        "simd": pf.simd.info(),
    }
    for mod in ("faiss", "simsimd", "hnswlib", "onnxruntime"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "installed")
        except ImportError:
            info[mod] = None
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: t.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for t in threadpool_info()
        ]
    except ImportError:
        pass
    return info


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One line for the top of every printed table: CPU vendor, model, SIMD flags, cores, level.

    Parameters
    ----------
    info : dict or None
        A :func:`machine` result (computed when None).
    """
    m = machine() if info is None else info
    flags = set(m.get("cpu_flags") or ())
    simd = [f for f in SIMD_FLAGS if f in flags]
    fam = (
        f" (family {m['cpu_family']}, model {m['cpu_model_number']})"
        if m.get("cpu_family") is not None
        else ""
    )
    sd = m["simd"] if isinstance(m.get("simd"), dict) else {}
    level = sd.get("active") if sd else m.get("simd")
    threads = sd.get("num_threads")
    amx = sd.get("amx")
    kernels = ""
    if sd:
        kernels = f", scan prefetch {sd.get('stream_prefetch', '?')}, " + (
            f"bf16 first pass {'on AMX' if amx.get('active') else 'AVX-512 BF16'}"
            if isinstance(amx, dict) and sd.get("bf16_prefilter")
            else f"bf16 first pass {'on' if sd.get('bf16_prefilter') else 'off'}"
        )
        i8 = amx.get("int8") if isinstance(amx, dict) else None
        if isinstance(i8, dict):
            kernels += f", int8 batches {'on AMX' if i8.get('active') else 'VNNI/SIMD'}"
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return (
        f"# machine: {m.get('cpu_vendor')} {m.get('cpu')}{fam}, {m.get('cores')} cores; "
        f"flags {' '.join(simd) or '(no SIMD flag listed)'}; "
        f"pyfacematch SIMD {level}, {threads} threads{kernels}; numpy {m.get('numpy')}, "
        f"faiss {m.get('faiss')}; load average {load}"
    )


def unit_rows(n: int, d: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """n random unit float32 rows of dimension d (generated in chunks to bound memory)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - s), d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + len(x)] = x
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if v == 0 or 0.01 <= abs(v) < 1e5:
                return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
            return f"{v:.3g}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[j]) for r in cells)) for j, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join(
        [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)]
    )


def shared_data_dir(script: str) -> Path:
    """The shared photo set for a ``bench/`` script: ``$PYFACEMATCH_SHARED_DATA`` (as the tests
    read it, ``tests/conftest.py``), else ``../shared/data`` beside the checkout holding ``script``."""
    env = os.environ.get("PYFACEMATCH_SHARED_DATA")
    return Path(env) if env else Path(script).resolve().parents[1].parent / "shared" / "data"
