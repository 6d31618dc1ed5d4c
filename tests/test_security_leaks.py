"""`audit leaks`: clean on a fresh encrypted gallery; flags planted plaintext, modes, removed data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import unit_rows

from pyfacematch.gallery import Gallery
from pyfacematch.gallery.secret import ENV_VAR
from pyfacematch.io import write_table
from pyfacematch.jobs.common import JobOutput
from pyfacematch.jobs.encode import Source
from pyfacematch.jobs.identify import identify_job
from pyfacematch.jobs.leaks import leak_report

DIM = 32


pytestmark = pytest.mark.usefixtures("no_key_env")


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    return unit_rows(rng, n, DIM)


def _kinds(rep: dict) -> set[str]:
    return {f["kind"] for f in rep["findings"] if f["severity"] != "info"}


def _build(tmp_path: Path, encrypt: bool = True) -> tuple[Path, np.ndarray]:
    db = tmp_path / "g" / "people.db"
    db.parent.mkdir(mode=0o700)
    x = _unit(np.random.default_rng(0), 300)
    with Gallery(DIM, path=db, backend="flat", encrypt=encrypt) as g:
        g.enroll_many([f"p{i}" for i in range(300)], x)
        g.remove("p5")
        g.checkpoint()
    return db, x


def test_fresh_encrypted_gallery_and_its_job_outputs_are_clean(tmp_path: Path) -> None:
    db, x = _build(tmp_path)
    probes = tmp_path / "jobs"
    probes.mkdir(mode=0o700)
    write_table(probes / "probes.jsonl", "jsonl", [f"q{i}" for i in range(20)], x[:20])
    os.chmod(probes / "probes.jsonl", 0o600)
    out = probes / "out"
    out.mkdir(mode=0o700)
    identify_job(
        db,
        Source(os.fspath(probes / "probes.jsonl")),
        JobOutput(os.fspath(out / "r.csv")),
        k=3,
        quiet=True,
    )
    rep, md = leak_report(db, extra=[out])  # the job's results and summary: no probe template
    assert rep["clean"], rep["findings"]
    assert rep["files_scanned"] >= 4 and rep["audit"]["ok"]
    assert "CLEAN" in md
    rep2, _ = leak_report(db, extra=[probes / "probes.jsonl"])  # the probes themselves: caught
    assert "template-as-text" in _kinds(rep2)


def test_planted_plaintext_template_and_world_readable_file(
    tmp_path: Path,
) -> None:
    db, x = _build(tmp_path)
    (db.parent / "people.db.dump").write_bytes(b"\0" * 100 + x[9].tobytes() + b"\1" * 50)
    (db.parent / "people.db.dump").chmod(0o600)
    log = db.parent / "people.db.notes"
    log.write_text("nothing biometric\n")
    log.chmod(0o644)
    rep, _ = leak_report(db)
    kinds = _kinds(rep)
    assert "plaintext-template" in kinds  # the planted template (x[9] is enrolled)
    assert "permissions" in kinds  # the world-readable file
    files = {f["file"]: f for f in rep["findings"]}
    assert files[os.fspath(db.parent / "people.db.dump")]["kind"] == "plaintext-template"
    assert not rep["clean"]


def test_removed_identity_left_in_an_old_checkpoint(tmp_path: Path) -> None:
    db, x = _build(tmp_path)
    idx = db.with_name(db.name + ".index")
    (ck,) = idx.iterdir()
    keep = tmp_path / "aside.faiss"
    shutil.copy2(ck, keep)
    with Gallery.open(db) as g:
        g.remove("p7")
    old = idx / ("flat-g" + ck.name.split("-g")[1].split("-")[0] + "-0badc0de.faiss")
    shutil.copy2(keep, old)  # an old checkpoint copied back (a restore, a sync tool …)
    old.chmod(0o600)
    rep, _ = leak_report(db)
    mine = [f for f in rep["findings"] if f["file"] == os.fspath(old)]
    assert {f["kind"] for f in mine} == {"orphan-template", "stale-checkpoint"}, mine
    orphan = next(f for f in mine if f["kind"] == "orphan-template")
    assert "1 unit-vector runs" in orphan["detail"]  # p7, and only p7
    assert not rep["clean"]


def test_unencrypted_gallery_is_not_clean(tmp_path: Path) -> None:
    db, _ = _build(tmp_path, encrypt=False)
    rep, _ = leak_report(db)
    kinds = _kinds(rep)
    assert {"plaintext-template", "unencrypted"} <= kinds
    hits = [f for f in rep["findings"] if f["kind"] == "plaintext-template"]
    assert any(f["file"] == os.fspath(db) or f["file"].endswith("-wal") for f in hits)


def test_cli_exit_codes(tmp_path: Path) -> None:
    db, x = _build(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    cmd = [
        sys.executable,
        "-m",
        "pyfacematch",
        "audit",
        "leaks",
        "-g",
        str(db),
        "-o",
        str(tmp_path / "rep.json"),
    ]
    r = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert (tmp_path / "rep.md").exists() and (tmp_path / "rep.json").stat().st_mode & 0o077 == 0
    (db.parent / "people.db.tmp").write_bytes(x[3].tobytes())
    r = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
    assert r.returncode == 1 and b"plaintext-template" in r.stdout


def test_logs_and_error_messages_hold_no_template(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Everything a gallery logs or raises on the paths of this issue, at DEBUG: no template
    bytes and no run of template values written as numbers."""
    import logging
    import re
    import sqlite3

    caplog.set_level(logging.DEBUG)
    db, x = _build(tmp_path)
    messages: list[str] = []
    with Gallery.open(db, purpose="access") as g:
        g.identify(x[:5], k=3, purpose="access")
        g.grant_consent("p1", "payment", source="s")
        g.withdraw_consent("p2")
        try:
            g.verify("p3", x[3], purpose="payment")
        except Exception as exc:  # NoConsentError
            messages.append(str(exc))
        g.rotate_data_key()
        assert g.info()["security"]["encrypted"]
    con = sqlite3.connect(db)
    (tid, blob) = con.execute("SELECT tid, data FROM templates LIMIT 1").fetchone()
    con.execute("UPDATE templates SET data=? WHERE tid=?", (blob[:-1] + bytes([blob[-1] ^ 1]), tid))
    con.commit()
    con.close()
    try:
        Gallery.open(db)
    except Exception as exc:  # TamperedRecordError
        messages.append(str(exc))
    messages += [r.getMessage() for r in caplog.records]
    text = "\n".join(messages)
    assert len(messages) >= 2  # the two error messages, and whatever was logged
    numbers = re.compile(r"(-?\d\.\d{3,}[,\s]+){6,}")  # six or more decimals in a row
    assert not numbers.search(text)
    for v in x[:10]:
        assert v.tobytes()[:8].hex() not in text and repr(float(v[0]))[:8] not in text
