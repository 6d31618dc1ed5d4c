"""SIMD levels: what is compiled, what this CPU can run, what is active.

The core detects the CPU once (including the operating system's support for the wide register
state) and picks the best level; ``PYFACEMATCH_SIMD=serial|avx2|avx512|neon`` or :func:`set_level`
forces one. The serial level is the precise reference every other level is tested against.
Within a level, two choices follow the CPU at run time: the one-probe scans' software prefetch
(``prefetchnta`` on AMD, none on Intel; ``PYFACEMATCH_PREFETCH=none|nta`` overrides) and, on Intel
CPUs with AMX-BF16, AMX tiles for the bf16 first pass of large batches (``PYFACEMATCH_AMX=0`` or
:func:`set_amx` turns them off), and, with AMX-INT8, AMX tiles for the int8 compact templates'
batched scan (exact integer dots, the same answer). :func:`info` reports them.
"""

from __future__ import annotations

import os
import warnings

from pyfacematch import _core

__all__ = [
    "info",
    "set_level",
    "active",
    "available",
    "compiled",
    "cpu_features",
    "set_bf16_prefilter",
    "set_amx",
]


def compiled() -> list[str]:
    """SIMD levels compiled into this build, lowest first."""
    return list(_core.simd_compiled())


def available() -> list[str]:
    """SIMD levels this CPU and operating system can run, lowest first."""
    return list(_core.simd_available())


def active() -> str:
    """The SIMD level the kernels use now."""
    return str(_core.simd_active())


def cpu_features() -> list[str]:
    """CPU features detected (``avx2``, ``avx512f``, ``avx512vpopcntdq``, ``neon`` …)."""
    return list(_core.cpu_features())


def set_level(level: str) -> None:
    """Force a SIMD level for every later call in this process.

    Parameters
    ----------
    level : str
        ``"serial"``, ``"neon"``, ``"avx2"``, ``"avx512"``, or ``"auto"`` for the best available.

    Raises
    ------
    InputError
        If the level is unknown, not compiled in, or cannot run on this CPU.
    """
    if level == "auto":
        level = available()[-1]
    _core.simd_set(level)


def set_bf16_prefilter(on: bool) -> None:
    """Use (default) or not the bf16 first pass of large-batch :func:`pyfacematch.topk`.

    Where the CPU has AVX512_BF16, a batch of 48 probes or more is scored first
    in bf16 (twice the multiply-adds per instruction) with a proven bound on the
    rounding error, and every row that bound cannot rule out is scored again in
    float32: the result is the float32 top-k either way. ``PYFACEMATCH_BF16=0``
    turns it off for a process; this call for later calls.
    """
    _core.set_bf16_prefilter(bool(on))


def set_amx(on: bool) -> None:
    """Use (default) or not Intel AMX tiles for the bf16 first pass of large-batch top-k.

    Where the build has the AMX kernels, the CPU has AMX-BF16, the operating system enables the
    tile state and Linux grants the process the tile permission (requested at first use), the bf16
    first pass of :func:`pyfacematch.topk` (batches of 48 probes or more, active level ``avx512``)
    runs on AMX tiles, with the same proven error bound and exact float32 re-score: the result is
    the float32 top-k either way. With AMX-INT8, the int8 compact templates' scan of a batch
    (blocks of 16 probes or more) runs on tiles too (TDPBSSD: the same exact integer dots as VNNI). ``PYFACEMATCH_AMX=0`` turns it off for a process (as does any
    ``PYFACEMATCH_SIMD`` below ``avx512``); this call for later calls.
    """
    _core.set_amx(bool(on))


def info() -> dict[str, object]:
    """Levels compiled, available and active, the CPU features seen and the thread count."""
    return {
        "compiled": compiled(),
        "available": available(),
        "active": active(),
        "cpu_features": cpu_features(),
        "cpu_vendor": str(_core.cpu_vendor()),
        "cpu_family_model": tuple(_core.cpu_family_model()),
        "stream_prefetch": str(_core.stream_prefetch()),
        "bf16_prefilter": bool(_core.bf16_prefilter_active()),
        "amx": {
            "compiled": bool(_core.amx_compiled()),
            "cpu": bool(_core.cpu_has_amx_bf16()),
            "active": bool(_core.amx_active()),
            # int8 compact batches on AMX-INT8 tiles (same exact integer dots as VNNI)
            "int8": {
                "compiled": bool(_core.amx_int8_compiled()),
                "cpu": bool(_core.cpu_has_amx_int8()),
                "active": bool(_core.amx_int8_active()),
            },
        },
        "num_threads": int(_core.get_num_threads()),
        "env": os.environ.get("PYFACEMATCH_SIMD"),
    }


def _check_env() -> None:
    """Warn once at import when PYFACEMATCH_SIMD asks for a level that cannot be used here."""
    want = os.environ.get("PYFACEMATCH_SIMD")
    if not want or want == "auto" or want == active():
        return
    if want not in ("serial", "neon", "avx2", "avx512"):
        reason = "is not a SIMD level (serial, neon, avx2, avx512, auto)"
    else:
        reason = f"cannot run here (compiled: {compiled()}, available: {available()})"
    warnings.warn(
        f"PYFACEMATCH_SIMD={want!r} {reason}; using {active()!r}",
        RuntimeWarning,
        stacklevel=3,
    )
