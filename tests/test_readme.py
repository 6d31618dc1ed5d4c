"""The README's quickstart runs as written, and its test command is the one CI runs."""

from __future__ import annotations

import re

import pytest
from conftest import REPO


def _readme() -> str:
    path = REPO / "README.md"
    if not path.exists():
        pytest.skip("README.md is not next to the tests (installed copy)")
    return path.read_text()


def test_quickstart_runs(tmp_path, monkeypatch) -> None:
    code = re.search(r"## Quickstart \(Python\)\n\n```python\n(.*?)```", _readme(), re.S)
    assert code, "the README has no Python quickstart block"
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(code.group(1), "README quickstart", "exec"), scope)
    assert scope["result"].candidates[0].identity == "alice"  # type: ignore[attr-defined]
    assert (tmp_path / "people.db").exists()


def test_ci_runs_the_readme_test_command() -> None:
    readme = _readme()
    ci = (REPO / ".ci" / "run").read_text()
    command = 'pip install ".[test]" && pytest -q'
    assert command in readme and command in ci
