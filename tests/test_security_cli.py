"""`pyfacematch enroll --encrypt --purpose`, `identify/verify --purpose`, `consent grant|withdraw|show`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np

from pyfacematch.io import write_table

DIM = 16


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env.pop("PYFACEMATCH_GALLERY_KEY", None)
    env["PYTHONSAFEPATH"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pyfacematch", *args],
        cwd=cwd,
        capture_output=True,
        env=env,
        timeout=120,
    )


def test_consent_and_encryption_from_the_command_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gal = rng.standard_normal((6, DIM)).astype(np.float32)
    gal /= np.linalg.norm(gal, axis=1, keepdims=True)
    ids = [f"person{i}" for i in range(6)]
    write_table(tmp_path / "gal.jsonl", "jsonl", ids, gal)
    write_table(tmp_path / "probes.jsonl", "jsonl", ["q0", "q1"], gal[[0, 3]])
    r = run(
        "enroll", "-g", "g.db", "-i", "gal.jsonl", "--encrypt", "--purpose", "access", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr.decode()
    con = sqlite3.connect(tmp_path / "g.db")
    blobs = [b for (b,) in con.execute("SELECT data FROM templates")]
    con.close()
    assert all(b[:4] == b"PFE1" for b in blobs) and gal[0].tobytes() not in b"".join(blobs)
    r = run(
        "consent", "grant", "-g", "g.db", "--id", "person3", "--purpose", "payment",
        "--source", "form-9", "--expires", "2999-01-01", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    shown = json.loads(run("consent", "show", "-g", "g.db", "--id", "person3", cwd=tmp_path).stdout)
    assert sorted(c["purpose"] for c in shown["consent"]) == ["access", "payment"]
    assert shown["default_purpose"] == "access"
    r = run(
        "identify", "-g", "g.db", "-i", "probes.jsonl", "-o", "pay.jsonl", "-k", "3",
        "--purpose", "payment", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    rows = [json.loads(x) for x in (tmp_path / "pay.jsonl").read_text().splitlines()]
    assert {x["identity"] for x in rows if x["identity"]} == {"person3"}
    r = run("identify", "-g", "g.db", "-i", "probes.jsonl", "-o", "acc.jsonl", cwd=tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "acc.jsonl").read_text().splitlines()]
    assert [x["identity"] for x in rows] == ["person0", "person3"]  # default purpose: access
    r = run("consent", "withdraw", "-g", "g.db", "--id", "person0", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["erased"] is True
    r = run("enroll", "-g", "g.db", "-i", "gal.jsonl", "--on-error", "skip", cwd=tmp_path)
    assert b"withdrew consent" in r.stderr, r.stderr.decode()


def test_readme_security_example_runs(tmp_path: Path, monkeypatch: object) -> None:
    import re

    readme = Path(__file__).parent.parent / "README.md"
    if not readme.exists():
        import pytest

        pytest.skip("README.md is not next to the tests (installed copy)")
    code = re.search(r"## Security and privacy\n.*?```python\n(.*?)```", readme.read_text(), re.S)
    assert code, "the README's security section has no Python example"
    monkeypatch.chdir(tmp_path)  # type: ignore[attr-defined]
    monkeypatch.delenv("PYFACEMATCH_GALLERY_KEY", raising=False)  # type: ignore[attr-defined]
    scope: dict[str, object] = {}
    exec(compile(code.group(1), "README security example", "exec"), scope)
    assert scope["res"][0].candidates[0].identity == "alice"  # type: ignore[index]
    assert scope["report"]["ok"]  # type: ignore[index]
    assert (tmp_path / "secure.db").exists()
