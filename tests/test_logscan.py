"""The whole-suite log scan (tests/_logscan.py) and the text scanner under it catch templates
written to logs in every usual form, and stay quiet on ordinary log lines."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.security.leaks import scan_log_text


def _unit(d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    return x / np.linalg.norm(x)


FORMS = ["list", "repr", "str", "json", "base64", "hex", "bytes", "f16"]


# 16-bit runs are looked for from 64 values on (shorter ones match noise), so no f16 below 64.
@pytest.mark.parametrize(
    ("d", "form"), [(d, f) for d in (8, 16, 128, 512) for f in FORMS if f != "f16" or d >= 64]
)
def test_each_form_of_a_template_in_a_log_line_is_found(d: int, form: str) -> None:
    x = _unit(d, d)
    text = {
        "list": str(x.tolist()),
        "repr": repr(x),  # numpy wraps it over many lines
        "str": str(x),
        "json": ",".join(f"{v:.6g}" for v in x),
        "base64": base64.b64encode(x.tobytes()).decode(),
        "hex": x.tobytes().hex(),
        "bytes": repr(x.tobytes()),
        "f16": base64.urlsafe_b64encode(x.astype(np.float16).tobytes()).decode(),
    }[form]
    log = f"2026-12-03 13:00:00,001 INFO pyfacematch.gallery enrolled 'alice' {text}\nnext\n"
    found = scan_log_text(log.encode())
    assert found and found[0][0] == 1, found


def test_ordinary_log_lines_are_clean() -> None:
    lines = [
        "2026-12-03 13:47:02,123 INFO pyfacematch.serve identify 64 rows in 3.1 ms",
        "scores [0.91, 0.45, 0.33, 0.2, 0.1, 0.05, 0.01, 0.5, 0.7, 0.62, 0.3, 0.12]",
        "/tmp/pytest-of-root/pytest-12/test_abc0/g.db.index/checkpoint-0000000000000001.bin",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "ciphertext " + base64.b64encode(np.random.default_rng(3).bytes(2048)).decode(),
        "ids " + " ".join(str(i) for i in range(200)),
        "x" * 5000,
        "1" * 100_000,  # long digit strings cost linear time
    ]
    assert scan_log_text("\n".join(lines).encode()) == []


def _run_suite(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(Path(__file__).with_name("_logscan.py"), tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(body)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


PRELUDE = """
import base64, logging, subprocess, sys
import numpy as np
x = np.random.default_rng(7).standard_normal(128).astype(np.float32)
x /= np.linalg.norm(x)
"""


@pytest.mark.parametrize(
    ("how", "body"),
    [
        (
            "debug log",
            "def test_a():\n    logging.getLogger('pyfacematch.x').debug('t=%s', x.tolist())\n",
        ),
        ("print", "def test_a():\n    print(base64.b64encode(x.tobytes()).decode())\n"),
        (
            "subprocess",
            "def test_a():\n    subprocess.run([sys.executable, '-c', "
            "'import sys; sys.stderr.write(sys.argv[1])', x.tobytes().hex()], capture_output=True)\n",
        ),
        (
            "devnull",
            "def test_a():\n    subprocess.run([sys.executable, '-c', 'print(sys.argv[1])'.replace("
            "'print', 'import sys; print'), repr(x.tolist())], stdout=subprocess.DEVNULL)\n",
        ),
    ],
)
def test_a_suite_that_logs_a_template_fails(tmp_path: Path, how: str, body: str) -> None:
    r = _run_suite(tmp_path, PRELUDE + body)
    assert r.returncode == 1, (how, r.stdout, r.stderr)
    assert "1 passed" in r.stdout  # the test itself passed: the scan failed the session
    assert "TEMPLATES IN LOGS" in r.stdout and "1 template(s) found" in r.stdout
    if how != "devnull":
        assert "test_inner.py::test_a" in r.stdout  # names the test


def test_a_clean_suite_passes(tmp_path: Path) -> None:
    r = _run_suite(
        tmp_path, PRELUDE + "def test_a():\n    logging.getLogger('pyfacematch').info('n=%d', 5)\n"
    )
    assert r.returncode == 0, r.stdout
    assert "0 template(s) found" in r.stdout
