"""The whole test suite's logs, scanned for templates (issue 13: "captured logs of the whole
test suite contain no template bytes").

Loaded by ``conftest.py``. What is scanned, with
:func:`pyfacematch.security.leaks.scan_log_text`:

- every log record of the run (the ``pyfacematch`` loggers at DEBUG, everything
  else at the level it is configured to), through one root handler;
- every test's captured stdout and stderr (pytest captures file descriptors, so
  this includes subprocesses that inherit them);
- the output of every subprocess read through ``communicate`` (``subprocess.run``,
  ``check_output``), and the files subprocesses write their stdout or stderr to;
  output a test sends to ``DEVNULL`` goes to a scanned temporary file instead.

Any finding fails the session (exit status 1) and is listed in the summary with
the test that produced it. ``PYFACEMATCH_LOG_SCAN=0`` switches the scan off.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pyfacematch.security.leaks import scan_log_text

__all__ = ["LogScan"]


class _Records(logging.Handler):
    def __init__(self, scan: LogScan) -> None:
        super().__init__(logging.DEBUG)
        self.scan = scan
        self.fmt = logging.Formatter("%(levelname)s %(name)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.scan.add("log", self.fmt.format(record))
        except Exception:  # a record that cannot be formatted is the logging system's problem
            self.handleError(record)


class LogScan:
    """Collects text per test and scans it when the test ends."""

    def __init__(self) -> None:
        self.current = "(collection)"
        self.pending: list[tuple[str, bytes]] = []
        self.findings: list[str] = []
        self.files: set[str] = set()
        self.nbytes = 0
        self.chunks = 0
        self.tmp = tempfile.mkdtemp(prefix="pfm-logscan-")
        self.handler = _Records(self)
        self._popen_init: Any = None
        self._communicate: Any = None

    # -- collecting ---------------------------------------------------------------------------
    def add(self, source: str, text: str | bytes | None) -> None:
        if not text:
            return
        data = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
        self.pending.append((source, data))

    def flush(self, where: str) -> None:
        pending, self.pending = self.pending, []
        by_source: dict[str, list[bytes]] = {}
        for source, data in pending:
            by_source.setdefault(source, []).append(data)
        for source, parts in by_source.items():
            self._scan(f"{where} [{source}]", b"\n".join(parts))

    def _scan(self, where: str, data: bytes) -> None:
        self.nbytes += len(data)
        self.chunks += 1
        for line, what in scan_log_text(data):
            self.findings.append(f"{where}, line {line}: {what}")

    # -- hooks into logging and subprocess ------------------------------------------------------
    def install(self) -> None:
        root = logging.getLogger()
        root.addHandler(self.handler)
        logging.getLogger("pyfacematch").setLevel(logging.DEBUG)
        scan = self
        self._popen_init = subprocess.Popen.__init__
        self._communicate = subprocess.Popen.communicate
        popen_init, communicate = self._popen_init, self._communicate

        def init(self: subprocess.Popen[Any], *args: Any, **kw: Any) -> None:
            opened = []
            for name in ("stdout", "stderr"):
                target = kw.get(name)
                if target == subprocess.DEVNULL:  # kept in a file instead, to be scanned
                    fd, path = tempfile.mkstemp(dir=scan.tmp, suffix=f".{name}")
                    kw[name] = fd
                    opened.append(fd)
                    scan.files.add(path)
                elif isinstance(getattr(target, "name", None), str):
                    scan.files.add(os.path.abspath(target.name))  # type: ignore[union-attr]
            try:
                popen_init(self, *args, **kw)
            finally:
                for fd in opened:
                    os.close(fd)

        def communicate_and_keep(self: subprocess.Popen[Any], *a: Any, **k: Any) -> Any:
            out, err = communicate(self, *a, **k)
            scan.add("subprocess stdout", out)
            scan.add("subprocess stderr", err)
            return out, err

        subprocess.Popen.__init__ = init  # type: ignore[method-assign]
        subprocess.Popen.communicate = communicate_and_keep  # type: ignore[method-assign]

    def uninstall(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        if self._popen_init is not None:
            subprocess.Popen.__init__ = self._popen_init  # type: ignore[method-assign]
            subprocess.Popen.communicate = self._communicate  # type: ignore[method-assign]

    def scan_files(self) -> None:
        for path in sorted(self.files):
            try:
                data = Path(path).read_bytes()
            except OSError:
                continue  # removed with its test's folder
            self._scan(f"subprocess output file {path}", data)


_KEY = pytest.StashKey[LogScan]()
_current: LogScan | None = None  # the run's scan (report hooks are not given the config)


def pytest_configure(config: pytest.Config) -> None:
    global _current
    if os.environ.get("PYFACEMATCH_LOG_SCAN", "1") == "0":
        return
    scan = LogScan()
    scan.install()
    config.stash[_KEY] = scan
    _current = scan


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _current is None:
        return
    if report.when == "teardown":  # its sections hold the setup's and call's output too
        _current.add("stdout", report.capstdout)
        _current.add("stderr", report.capstderr)
        _current.flush(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    scan = session.config.stash.get(_KEY, None)
    if scan is None:
        return
    scan.flush("(session)")
    scan.scan_files()
    scan.uninstall()
    if scan.findings and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    scan = config.stash.get(_KEY, None)
    if scan is None:
        return
    tr = terminalreporter
    if scan.findings:
        tr.section("log scan: TEMPLATES IN LOGS", sep="=", red=True)
        for f in scan.findings:
            tr.write_line(f)
    tr.write_line(
        f"log scan: {scan.nbytes:,} bytes of logs and output in {scan.chunks:,} pieces "
        f"(+{len(scan.files)} subprocess output files), {len(scan.findings)} template(s) found"
    )
