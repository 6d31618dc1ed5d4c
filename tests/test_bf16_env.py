"""``PYFACEMATCH_BF16``: the environment switch of the bf16 first pass of large-batch top-k.

Read once per process by the core, so each setting runs in its own interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

import pyfacematch as pf

_PROBE = """
import json, numpy as np, pyfacematch as pf
rng = np.random.default_rng(0)
q = rng.standard_normal((64, 96)).astype(np.float32)   # >= 48 probes: the bf16 path applies
g = rng.standard_normal((3000, 96)).astype(np.float32)
s, i = pf.topk(q, g, 5)
out = {"env": pf.simd.info()["bf16_prefilter"], "idx": i.tolist(), "scores": s.tolist()}
pf.simd.set_bf16_prefilter(True)
out["after_set"] = pf.simd.info()["bf16_prefilter"]
print(json.dumps(out))
"""


def _run(value: str | None) -> dict:
    env = dict(os.environ)
    env.pop("PYFACEMATCH_BF16", None)
    if value is not None:
        env["PYFACEMATCH_BF16"] = value
    r = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=120, check=True
    )
    return json.loads(r.stdout)


def _capable() -> bool:
    """Whether this machine can run the bf16 first pass at all (turned on from Python)."""
    was = pf.simd.info()["bf16_prefilter"]
    pf.simd.set_bf16_prefilter(True)
    try:
        return bool(pf.simd.info()["bf16_prefilter"])
    finally:
        pf.simd.set_bf16_prefilter(bool(was))


def test_bf16_env_turns_the_first_pass_off_and_the_call_turns_it_back_on():
    can = _capable()
    on, default = _run("1"), _run(None)
    assert on["env"] is can and default["env"] is can  # on unless asked otherwise
    for off in ("0", "off"):
        cut = _run(off)
        assert cut["env"] is False, off
        assert cut["after_set"] is can  # set_bf16_prefilter overrides the environment
        # the first pass never changes the answer: the float32 top-k either way
        assert cut["idx"] == on["idx"]
        np.testing.assert_allclose(cut["scores"], on["scores"], rtol=1e-6)


_AMX_PROBE = """
import json, numpy as np, pyfacematch as pf
rng = np.random.default_rng(0)
q = rng.standard_normal((64, 96)).astype(np.float32)
g = rng.standard_normal((3000, 96)).astype(np.float32)
s, i = pf.topk(q, g, 5)
amx = pf.simd.info()["amx"]
c = pf.CompactMatrix.from_float32(g, "int8", exact=g)
s8, i8 = pf.topk(q, c, 5)
print(json.dumps({"active": amx["active"], "cpu": amx["cpu"], "compiled": amx["compiled"],
                  "idx": i.tolist(), "int8": amx["int8"], "idx8": i8.tolist()}))
"""


def test_amx_env_and_simd_level_turn_the_tiles_off():
    def run(extra: dict[str, str]) -> dict:
        env = {
            k: v for k, v in os.environ.items() if k not in ("PYFACEMATCH_AMX", "PYFACEMATCH_SIMD")
        }
        env.update(extra)
        r = subprocess.run(
            [sys.executable, "-c", _AMX_PROBE],
            env=env,
            capture_output=True,
            timeout=120,
            check=True,
        )
        return json.loads(r.stdout)

    default = run({})
    can = default["compiled"] and default["cpu"] and _capable()
    assert default["active"] is bool(can)
    i8 = default["int8"]
    assert i8["active"] is bool(i8["compiled"] and i8["cpu"] and _capable())
    assert default["idx8"] == default["idx"]  # int8 scan + exact re-score = the float32 top-k
    for extra in (
        {"PYFACEMATCH_AMX": "0"},
        {"PYFACEMATCH_AMX": "off"},
        {"PYFACEMATCH_SIMD": "avx2"},
    ):
        cut = run(extra)
        assert cut["active"] is False, extra
        assert cut["int8"]["active"] is False, extra  # AMX-INT8 off with it
        assert cut["idx"] == default["idx"]  # the same float32 top-k either way
        assert cut["idx8"] == default["idx8"]
