"""The reader fuzzers: every seed of the corpus is read without a crash, then a short atheris run.

A crash is any exception other than the package's typed errors (see ``tests/fuzz/harness.py``).
The long runs are by hand: ``python tests/fuzz/fuzz_readers.py <target> -max_total_time=300 …``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyfacematch

FUZZ = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ))
import harness  # noqa: E402

SECONDS = float(os.environ.get("PYFACEMATCH_FUZZ_SECONDS", "3"))


def test_every_target_has_seeds():
    for target in harness.TARGETS:
        assert any((harness.CORPUS / target).iterdir()), target


@pytest.mark.parametrize("target", sorted(harness.TARGETS))
def test_seed_corpus_reads_without_a_crash(target):
    seeds = sorted((harness.CORPUS / target).iterdir())
    for seed in seeds:
        data = seed.read_bytes()
        harness.run_one(target, data)
        for cut in (1, len(data) // 2, len(data) - 1):  # truncations of each seed
            harness.run_one(target, data[:cut])


def test_harness_reports_untyped_exceptions_as_crashes(monkeypatch):
    """A harness that swallowed every exception could never find anything."""
    from pyfacematch.io import RecordReader

    def boom(*a, **k):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(RecordReader, "count_records", boom)
    with pytest.raises(ZeroDivisionError):
        harness.run_one("csv", b"id,f0\na,1\n\x01")


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (pip install -e '.[fuzz]'); the seed corpus still ran",
)
@pytest.mark.skipif(
    "editable" in type(getattr(pyfacematch.__spec__, "loader", None)).__module__,
    reason="editable install: atheris sees no coverage through scikit-build-core's editable "
    "loader (CI runs this on a regular install)",
)
@pytest.mark.parametrize("target", sorted(harness.TARGETS))
def test_short_atheris_run(tmp_path, target):
    work = tmp_path / "new"
    work.mkdir()
    out = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "fuzz_readers.py"),
            target,
            f"-max_total_time={SECONDS:g}",
            "-timeout=20",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            str(work),
            str(harness.CORPUS / target),
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Done" in out.stderr and list(tmp_path.glob("crash-*")) == []
    # coverage was collected (a run that sees no coverage explores nothing)
    assert re.search(r"INITED cov: [1-9]", out.stderr), out.stderr[-2000:]
