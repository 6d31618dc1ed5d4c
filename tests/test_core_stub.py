"""The type stub of the compiled module (``src/pyfacematch/_core.pyi``) against the module itself.

Two checks: mypy's stubtest on the installed extension (where mypy is installed: the ``dev`` extra),
and, always, a comparison of the stub's functions and parameter names with the module's names and
the signatures pybind11 writes on the first line of each docstring.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyfacematch
from pyfacematch import _core

STUB = Path(pyfacematch.__file__).with_name("_core.pyi")


def stub_functions() -> dict[str, list[str]]:
    """Function name → parameter names (positional-only marker dropped), read from the stub."""
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            out[node.name] = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    return out


def runtime_functions() -> dict[str, object]:
    return {n: getattr(_core, n) for n in dir(_core) if not n.startswith("__")}


def doc_params(fn: object) -> list[str] | None:
    """Parameter names from pybind11's 'name(a: T, b: U) -> R' first docstring line, or None."""
    doc = getattr(fn, "__doc__", None) or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    name = getattr(fn, "__name__", "")
    m = re.match(rf"{re.escape(name)}\((.*)\)\s*->", first)
    if not m:
        return None
    inner, params, depth, cur = m.group(1), [], 0, ""
    for ch in inner:  # split on top-level commas only (types hold brackets and commas)
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            params.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        params.append(cur)
    names = [p.split(":")[0].strip() for p in params]
    return [n for n in names if n not in ("/", "*")]


def test_stub_lists_exactly_the_module_functions() -> None:
    stub, runtime = set(stub_functions()), set(runtime_functions())
    assert runtime - stub == set(), f"in _core but not in _core.pyi: {sorted(runtime - stub)}"
    assert stub - runtime == set(), f"in _core.pyi but not in _core: {sorted(stub - runtime)}"


def test_stub_parameter_names_match_the_bindings() -> None:
    stub = stub_functions()
    checked = 0
    for name, fn in runtime_functions().items():
        params = doc_params(fn)
        if params is None:  # the raw METH_FASTCALL cosine: positional (a, b) by its docstring
            assert name == "cosine", f"_core.{name} has no pybind11 signature line"
            assert "cosine(a, b)" in (fn.__doc__ or "")
            assert stub[name] == ["a", "b"]
            continue
        assert stub[name] == params, f"_core.{name}: stub {stub[name]} vs module {params}"
        checked += 1
    assert checked >= 25


def test_geometry_functions_are_in_the_stub() -> None:
    stub = stub_functions()
    for name in ("geometry_align", "geometry_features", "geometry_encode"):
        assert name in stub


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy (the dev extra) is not installed"
)
def test_stubtest_accepts_the_stub() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "pyfacematch._core"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]
