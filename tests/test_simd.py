"""SIMD dispatch: info, forcing a level by API and by environment, thread settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import pyfacematch as pf
from pyfacematch.errors import InputError


def test_info_reports_compiled_available_active() -> None:
    info = pf.simd.info()
    assert info["compiled"][0] == "serial" and "serial" in info["available"]
    assert set(info["available"]) <= set(info["compiled"])
    assert info["active"] == info["available"][-1] or os.environ.get("PYFACEMATCH_SIMD")
    assert info["num_threads"] >= 1


def test_set_level_by_api() -> None:
    before = pf.simd.active()
    try:
        for level in pf.simd.available():
            pf.simd.set_level(level)
            assert pf.simd.active() == level
        pf.simd.set_level("auto")
        assert pf.simd.active() == pf.simd.available()[-1]
    finally:
        pf.simd.set_level(before)


def test_unknown_or_unavailable_level_is_refused() -> None:
    with pytest.raises(InputError, match="unknown SIMD level"):
        pf.simd.set_level("sse9")
    missing = [
        lvl for lvl in ("serial", "neon", "avx2", "avx512") if lvl not in pf.simd.available()
    ]
    for level in missing:
        with pytest.raises(InputError, match="not compiled|cannot run"):
            pf.simd.set_level(level)


def _active_under_env(value: str) -> tuple[str, str]:
    code = "import json, pyfacematch as pf; print(json.dumps(pf.simd.active()))"
    env = dict(os.environ, PYFACEMATCH_SIMD=value)
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout), out.stderr


def test_environment_variable_forces_a_level() -> None:
    assert _active_under_env("serial")[0] == "serial"
    best = pf.simd.available()[-1]
    assert _active_under_env(best)[0] == best


def test_environment_variable_with_a_bad_level_warns_and_falls_back() -> None:
    active, err = _active_under_env("bogus")
    assert active == pf.simd.available()[-1]
    assert "PYFACEMATCH_SIMD='bogus'" in err


def test_num_threads() -> None:
    before = pf.get_num_threads()
    try:
        pf.set_num_threads(1)
        assert pf.get_num_threads() == 1
        pf.set_num_threads(3)
        assert pf.get_num_threads() == 3
    finally:
        pf.set_num_threads(before)
    with pytest.raises(InputError, match=r"within \[1, "):
        pf.set_num_threads(0)
    with pytest.raises(InputError, match="integer"):
        pf.set_num_threads(2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 4097, 65536 * 3 + 5, 1 << 20])
def test_stream_read_sums_every_element_once_at_any_split(n: int) -> None:
    """The benchmarks' read reference (``_core.stream_read``: Σ x², chunks claimed by threads)."""
    import numpy as np

    from pyfacematch import _core

    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    want = float(np.sum(x.astype(np.float64) ** 2))
    before = pf.get_num_threads()
    try:
        for t in (1, 2, 3):
            pf.set_num_threads(t)
            assert _core.stream_read(x) == pytest.approx(want, rel=1e-5, abs=1e-6)
    finally:
        pf.set_num_threads(before)
    if n == 1:
        from pyfacematch.errors import EmptyInputError

        with pytest.raises(EmptyInputError, match="empty"):
            _core.stream_read(x[:0])


@pytest.mark.parametrize(("n", "d"), [(4 * 97 * 3 + 97, 97), (65536 * 4 + 13 * 512, 512), (7, 7)])
def test_stream_read_variants_sum_every_element_once(n: int, d: int) -> None:
    """The read variants the scoring benchmark takes the fastest of (four streams per part; rows of
    d four at a time): each reads every float once at any thread count and ragged tail."""
    import numpy as np

    from pyfacematch import _core
    from pyfacematch.errors import InputError

    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    want = float(np.sum(x.astype(np.float64)))
    before = pf.get_num_threads()
    try:
        for t in (1, 2, 3):
            pf.set_num_threads(t)
            assert _core.stream_read(x, 1) == pytest.approx(want, rel=1e-4, abs=1e-3)
            assert _core.stream_read(x, 2, d) == pytest.approx(want, rel=1e-4, abs=1e-3)
            # rows that do not divide the length: read as four streams, still every float once
            assert _core.stream_read(x, 2, d + 1) == pytest.approx(want, rel=1e-4, abs=1e-3)
    finally:
        pf.set_num_threads(before)
    with pytest.raises(InputError, match="variant"):
        _core.stream_read(x, 3)


def test_stream_prefetch_is_chosen_from_the_cpu_vendor() -> None:
    info = pf.simd.info()
    vendor = info["cpu_vendor"]
    want = os.environ.get("PYFACEMATCH_PREFETCH")
    if want in ("none", "nta"):
        assert info["stream_prefetch"] == want
    elif vendor in ("AuthenticAMD", "HygonGenuine") or not vendor:
        assert info["stream_prefetch"] == "nta"
    else:
        assert info["stream_prefetch"] == "none"


@pytest.mark.parametrize("mode", ["none", "nta"])
def test_both_stream_prefetch_modes_give_the_serial_answer(mode: str) -> None:
    # Each mode in its own process (chosen once per process), every available level, against the
    # serial oracle: batch 1 and 3 (the streaming form), rows not a multiple of 4, d not of 16.
    code = (
        "import json, numpy as np, pyfacematch as pf\n"
        "rng = np.random.default_rng(5)\n"
        "g = rng.standard_normal((1003, 77)).astype(np.float32)\n"
        "q = rng.standard_normal((3, 77)).astype(np.float32)\n"
        "pf.simd.set_level('serial'); ref = pf.topk(q, g, 7)[1].tolist()\n"
        "out = {}\n"
        "for lvl in pf.simd.available():\n"
        "    pf.simd.set_level(lvl)\n"
        "    out[lvl] = [pf.topk(q[:1], g, 7)[1].tolist() == ref[:1], pf.topk(q, g, 7)[1].tolist() == ref]\n"
        "print(json.dumps([pf.simd.info()['stream_prefetch'], out]))\n"
    )
    env = dict(os.environ, PYFACEMATCH_PREFETCH=mode)
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    used, out = json.loads(res.stdout)
    assert used == mode
    assert out and all(all(v) for v in out.values()), out


def test_machine_line_names_the_cpu_the_kernels_and_the_load() -> None:
    from pyfacematch.bench.util import machine, machine_line

    info = machine()
    line = machine_line(info)
    assert line.startswith("# machine: ")
    assert str(info["cpu_vendor"]) in line and str(info["cpu"]) in line
    simd = pf.simd.info()
    assert f"pyfacematch SIMD {simd['active']}" in line
    assert f"scan prefetch {simd['stream_prefetch']}" in line
    if simd["bf16_prefilter"]:
        assert ("on AMX" in line) is bool(simd["amx"]["active"])  # type: ignore[index]
    assert "load average " in line
