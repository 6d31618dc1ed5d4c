"""The `pyfacematch` command, driven end to end in subprocesses.

Every input format and every output format; results against a brute-force
numpy search; rejects and exit codes; kill (SIGKILL) and --resume compared
byte for byte with an uninterrupted run; --help of every subcommand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.io import write_table

SUBCOMMANDS = (
    "enroll",
    "identify",
    "verify",
    "remove",
    "calibrate",
    "info",
    "export",
    "demo",
    "bench",
)
N_GAL, N_PROBE, DIM = 150, 60, 24
N_CHUNKS = -(-N_PROBE // 7)  # chunks of 7 probes


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONSAFEPATH"] = "1"
    env.pop("PYFACEMATCH_TEST_KILL", None)
    env.update(extra)
    return env


def run(*args: str, cwd: Path, stdin: bytes | None = None, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "pyfacematch", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        env=env or _env(),
        timeout=120,
    )


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A gallery enrolled through the CLI and probes in every format."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(7)
    gal = rng.standard_normal((N_GAL, DIM)).astype(np.float32)
    gids = [f"person {i}" for i in range(N_GAL)]  # a space: ids are strings, not numbers
    truth = rng.choice(N_GAL, N_PROBE, replace=False)
    probes = (_unit(gal[truth]) + 0.25 * rng.standard_normal((N_PROBE, DIM)) / np.sqrt(DIM)).astype(
        np.float32
    )
    pids = [f"p{i:03d}" for i in range(N_PROBE)]
    write_table(d / "gallery.parquet", "parquet", gids, gal)
    for fmt in ("npy", "npz", "parquet", "csv", "jsonl"):
        write_table(d / f"probes.{fmt}", fmt, pids, probes)
    r = run("enroll", "-g", "g.db", "-i", "gallery.parquet", "--summary", "enroll.json", cwd=d)
    assert r.returncode == 0, r.stderr.decode()
    # brute-force reference: float64 cosine, top 3
    s = _unit(probes) @ _unit(gal).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :3]
    ref = {pids[i]: [(gids[j], float(s[i, j])) for j in order[i]] for i in range(N_PROBE)}
    return {"dir": d, "gal": gal, "gids": gids, "probes": probes, "pids": pids, "ref": ref}


def _read_results(path: Path) -> list[dict]:
    import pyarrow as pa

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(path)
    elif path.suffix == ".csv":
        import pyarrow.csv as pcsv

        t = pcsv.read_csv(
            path,
            convert_options=pcsv.ConvertOptions(
                column_types={
                    "probe_id": pa.string(),
                    "identity": pa.string(),
                    "decision": pa.string(),
                },
                strings_can_be_null=True,
            ),
        )
    else:
        return [json.loads(x) for x in path.read_text().splitlines()]
    return t.to_pylist()


def _check_against_reference(rows: list[dict], ref: dict, k: int, ids: list[str] | None = None):
    got: dict[str, list] = {}
    for r in rows:
        got.setdefault(r["probe_id"], []).append(r)
    keys = list(ref) if ids is None else ids
    assert sorted(got) == sorted(keys)
    for pid, want in zip(keys, ref.values() if ids is None else [ref[p] for p in keys]):
        rs = got[pid]
        assert [r["rank"] for r in rs] == list(range(1, k + 1))
        assert [r["identity"] for r in rs] == [w[0] for w in want[:k]]
        np.testing.assert_allclose([r["score"] for r in rs], [w[1] for w in want[:k]], atol=2e-5)


def test_help_of_every_subcommand():
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pyfacematch", *([c] if c else []), "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        for c in (None, *SUBCOMMANDS)
    ]
    for c, p in zip((None, *SUBCOMMANDS), procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, (c, err.decode())
        text = out.decode()
        assert "examples:" in text and "exit codes:" in text, c
        if c:
            assert f"pyfacematch {c}" in text


@pytest.mark.parametrize(
    ("in_fmt", "out_fmt"),
    [
        ("csv", "parquet"),
        ("jsonl", "csv"),
        ("parquet", "jsonl"),
        ("npz", "csv"),
        ("npy", "parquet"),
    ],
)
def test_identify_every_input_and_output_format(data, in_fmt, out_fmt):
    d = data["dir"]
    out = d / f"res-{in_fmt}.{out_fmt}"
    r = run(
        "identify", "-g", "g.db", "-i", f"probes.{in_fmt}", "-o", out.name, "-k", "3",
        "--chunk-size", "17", "--threshold", "0.5", cwd=d,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    rows = _read_results(out)
    ref = data["ref"]
    if in_fmt == "npy":  # .npy has no ids: row numbers
        ref = {str(i): v for i, v in enumerate(ref.values())}
    _check_against_reference(rows, ref, 3)
    for row in rows:
        assert row["decision"] == ("match" if row["score"] >= 0.5 else "no-match")
    summary = json.loads((d / f"{out.name}.summary.json").read_text())
    assert summary["processed"] == N_PROBE and summary["rejected"] == 0
    assert summary["rows_written"] == 3 * N_PROBE
    assert summary["threshold"] == {"value": 0.5, "source": "explicit", "target": None}
    assert summary["chunks"] == 4 and summary["exit_code"] == 0
    assert summary["index"]["backend"] == "binary"
    assert summary["matches"] == sum(r["rank"] == 1 and r["decision"] == "match" for r in rows)


def test_identify_from_stdin(data):
    d = data["dir"]
    r = run(
        "identify", "-g", "g.db", "-i", "-", "--input-format", "jsonl", "-o", "stdin.jsonl",
        "--quiet", cwd=d, stdin=(d / "probes.jsonl").read_bytes(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr == b""  # --quiet
    _check_against_reference(_read_results(d / "stdin.jsonl"), data["ref"], 1)
    r = run("identify", "-g", "g.db", "-i", "-", "-o", "x.csv", cwd=d, stdin=b"")
    assert r.returncode == 2 and b"--input-format" in r.stderr


def _bad_probes(data, path: Path) -> None:
    lines = (data["dir"] / "probes.csv").read_text().splitlines()
    head, rows = lines[0], lines[1:]
    rows[4] = rows[4].rsplit(",", 1)[0]  # row 5: one number short
    f = rows[9].split(",")
    f[3] = "nan"
    rows[9] = ",".join(f)  # row 10: NaN
    f = rows[20].split(",")
    f[2] = "abc"
    rows[20] = ",".join(f)  # row 21: not a number
    path.write_text("\n".join([head, *rows]) + "\n")


def test_bad_rows_stop_or_go_to_rejects(data):
    d = data["dir"]
    _bad_probes(data, d / "bad.csv")
    r = run("identify", "-g", "g.db", "-i", "bad.csv", "-o", "bad-out.csv", cwd=d)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "bad.csv row 5 (line 6) id 'p004': malformed row" in err
    r = run(
        "identify", "-g", "g.db", "-i", "bad.csv", "-o", "bad-out.csv", "--on-error", "skip",
        "--chunk-size", "8", "--overwrite", cwd=d,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr.decode()
    rej = (d / "bad-out.csv.rejects.csv").read_text().splitlines()
    assert rej[0] == "row,line,id,reason"
    assert [x.split(",")[:3] for x in rej[1:]] == [
        ["5", "6", "p004"],
        ["10", "11", "p009"],
        ["21", "22", "p020"],
    ]
    assert "malformed row" in rej[1] and "non-finite value" in rej[2]
    assert "malformed number" in rej[3]
    s = json.loads((d / "bad-out.csv.summary.json").read_text())
    assert (s["records"], s["processed"], s["rejected"]) == (N_PROBE, N_PROBE - 3, 3)
    assert s["reject_reasons"] == {"malformed number": 1, "malformed row": 1, "non-finite value": 1}
    assert s["exit_code"] == 1
    good = [p for i, p in enumerate(data["pids"]) if i not in (4, 9, 20)]
    _check_against_reference(_read_results(d / "bad-out.csv"), data["ref"], 1, ids=good)


def _probes_with_a_rejected_chunk(data, path: Path, first: int, last: int) -> list[str]:
    """probes.jsonl where records first..last-1 (0-based) are all bad; returns the good ids."""
    lines = (data["dir"] / "probes.jsonl").read_text().splitlines()
    for i in range(first, last):
        obj = json.loads(lines[i])
        obj["template"] = obj["template"][:3]  # wrong dimension
        lines[i] = json.dumps(obj)
    path.write_text("\n".join(lines) + "\n")
    return [p for i, p in enumerate(data["pids"]) if not first <= i < last]


@pytest.mark.parametrize(("command", "fmt"), [("identify", "csv"), ("verify", "parquet")])
def test_an_all_rejected_chunk_commits_and_the_job_goes_on(data, command, fmt):
    """Issue 12 defect 5: a chunk whose records are all rejected used to exit 3, even on resume."""
    d = data["dir"]
    good = _probes_with_a_rejected_chunk(data, d / "rej-chunk.jsonl", 7, 14)  # chunk 1 of 7
    out = f"rej-chunk-{command}.{fmt}"
    claim = () if command == "identify" else ("--identity", data["gids"][0])
    args = (command, "-g", "g.db", "-i", "rej-chunk.jsonl", "-o", out, "--chunk-size", "7",
            "--on-error", "skip", "-q", *claim)  # fmt: skip
    r = run(*args, cwd=d, env=_env(PYFACEMATCH_TEST_KILL="after-manifest:2"))
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()
    man = json.loads((d / f"{out}.job" / "manifest.json").read_text())
    assert (man["chunks_done"], man["rejected"], man["processed"]) == (3, 7, 14)
    r = run(*args, "--resume", cwd=d)
    assert r.returncode == 1, r.stderr.decode()
    rows = _read_results(d / out)
    assert [x["probe_id"] for x in rows] == good
    rej = (d / f"{out}.rejects.csv").read_text().splitlines()
    assert [x.split(",")[2] for x in rej[1:]] == data["pids"][7:14]
    s = json.loads((d / f"{out}.summary.json").read_text())
    assert (s["records"], s["processed"], s["rejected"]) == (N_PROBE, N_PROBE - 7, 7)
    assert s["resumed"] is True and s["chunks"] == N_CHUNKS
    if command == "identify":
        _check_against_reference(rows, data["ref"], 1, ids=good)


def test_wrong_dimension_is_an_input_error(data):
    d = data["dir"]
    write_table(d / "short.npy", "npy", ["a"], np.ones((3, DIM - 1), np.float32))
    r = run("identify", "-g", "g.db", "-i", "short.npy", "-o", "short.csv", cwd=d)
    assert r.returncode == 2
    assert f"wrong dimension: expected {DIM} numbers, got {DIM - 1}" in r.stderr.decode()
    r = run("identify", "-g", "missing.db", "-i", "probes.csv", "-o", "m.csv", cwd=d)
    assert r.returncode == 2 and b"does not exist" in r.stderr
    r = run("identify", "-g", "g.db", "-i", "probes.csv", cwd=d)  # no -o: usage error
    assert r.returncode == 2


def _reference_run(d: Path, out: str, extra=()) -> bytes:
    r = run(
        "identify", "-g", "g.db", "-i", "probes.parquet", "-o", out, "-k", "2",
        "--chunk-size", "7", "--quiet", *extra, cwd=d,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    return (d / out).read_bytes()


@pytest.mark.parametrize(
    ("fmt", "points"),
    [
        ("csv", ["before-part:0", "after-manifest:5", f"after-summary:{N_CHUNKS}"]),
        ("parquet", ["after-part:3", f"after-concat:{N_CHUNKS}"]),
    ],
)
def test_killed_at_every_commit_step_then_resumed_is_byte_identical(data, fmt, points):
    """SIGKILL at each step of the commit protocol (split over two output formats), then --resume."""
    d = data["dir"]
    want = _reference_run(d, f"ref.{fmt}")
    for point in points:
        out = f"killed-{point.split(':')[0]}.{fmt}"
        args = ("identify", "-g", "g.db", "-i", "probes.parquet", "-o", out, "-k", "2",
                "--chunk-size", "7", "--quiet")  # fmt: skip
        r = run(*args, cwd=d, env=_env(PYFACEMATCH_TEST_KILL=point))
        assert r.returncode == -signal.SIGKILL, (point, r.stderr.decode())
        r = run(*args, "--resume", cwd=d)
        assert r.returncode == 0, (point, r.stderr.decode())
        assert (d / out).read_bytes() == want, point
        assert not (d / f"{out}.job").exists()
        s = json.loads((d / f"{out}.summary.json").read_text())
        assert s["processed"] == N_PROBE and s["rows_written"] == 2 * N_PROBE
        assert s["resumed"] is True


def test_sigkill_from_outside_mid_job_then_resume(data):
    """A real kill at an arbitrary moment of a longer job (many small chunks)."""
    d = data["dir"]
    rng = np.random.default_rng(3)
    many = np.repeat(data["probes"], 40, axis=0)
    many += 0.01 * rng.standard_normal(many.shape).astype(np.float32)
    write_table(d / "many.npy", "npy", [], many)
    args = ("identify", "-g", "g.db", "-i", "many.npy", "-o", "many.jsonl", "--chunk-size", "13",
            "-k", "2", "--quiet")  # fmt: skip
    r = run(*args[:6], "ref-many.jsonl", *args[7:], cwd=d)
    assert r.returncode == 0, r.stderr.decode()
    want = (d / "ref-many.jsonl").read_bytes()
    man = d / "many.jsonl.job" / "manifest.json"
    for kill_at in (3, 40, 120):  # chunks committed before the kill
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pyfacematch",
                *args,
                *(["--resume"] if kill_at > 3 else []),
            ],
            cwd=d,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t0 = time.monotonic()
        while p.poll() is None and time.monotonic() - t0 < 60:
            try:
                if json.loads(man.read_text())["chunks_done"] >= kill_at:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        p.wait()
    r = run(*args, "--resume", cwd=d)
    assert r.returncode == 0, r.stderr.decode()
    assert (d / "many.jsonl").read_bytes() == want
    s = json.loads((d / "many.jsonl.summary.json").read_text())
    assert s["processed"] == len(many) and s["rows_written"] == 2 * len(many)


def test_resume_refuses_another_job_and_overwrite_rules(data):
    d = data["dir"]
    args = ("identify", "-g", "g.db", "-i", "probes.csv", "-o", "other.csv", "--quiet")
    r = run(*args, cwd=d, env=_env(PYFACEMATCH_TEST_KILL="after-manifest:0"))
    assert r.returncode == -signal.SIGKILL
    r = run(*args, "-k", "2", "--resume", cwd=d)  # other options
    assert r.returncode == 2 and b"cannot resume" in r.stderr and b"k" in r.stderr
    r = run(*args, cwd=d)  # neither --resume nor --overwrite
    assert r.returncode == 2 and b"--resume" in r.stderr
    r = run(*args, "--overwrite", cwd=d)
    assert r.returncode == 0
    r = run(*args, cwd=d)
    assert r.returncode == 2 and b"exists" in r.stderr
    r = run(*args, "--resume", cwd=d)  # already complete: nothing to do
    assert r.returncode == 0


def test_resume_is_refused_after_the_gallery_changed(data):
    """A resumed job must not mix answers of two galleries: enrolling in between is refused."""
    d = data["dir"]
    r = run("enroll", "-g", "chg.db", "-i", "gallery.parquet", "-q", cwd=d)
    assert r.returncode == 0, r.stderr.decode()
    args = ("identify", "-g", "chg.db", "-i", "probes.csv", "-o", "chg.csv", "--chunk-size", "7",
            "-q")  # fmt: skip
    r = run(*args, cwd=d, env=_env(PYFACEMATCH_TEST_KILL="after-manifest:1"))
    assert r.returncode == -signal.SIGKILL
    write_table(d / "late.npy", "npy", [], data["gal"][:1])
    r = run("enroll", "-g", "chg.db", "-i", "late.npy", "-q", cwd=d)  # id "0": a new identity
    assert r.returncode == 0, r.stderr.decode()
    r = run(*args, "--resume", cwd=d)
    err = r.stderr.decode()
    assert r.returncode == 2 and "cannot resume" in err, err
    assert "generation" in err and "identities" in err
    assert json.loads((d / "chg.csv.job" / "manifest.json").read_text())["chunks_done"] == 2
    r = run(*args, "--overwrite", cwd=d)
    assert r.returncode == 0, r.stderr.decode()


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (KeyboardInterrupt, 130, "pyfacematch info: interrupted"),
        (ZeroDivisionError, 3, "pyfacematch info: internal error (exit 3)"),
        (MemoryError, 3, "please report it"),
    ],
)
def test_exit_codes_of_interrupts_and_internal_errors(
    data, monkeypatch, capsys, exc, code, message
):
    from pyfacematch.cli import main
    from pyfacematch.cli.commands import COMMANDS

    def boom(args):
        raise exc()

    monkeypatch.setitem(COMMANDS, "info", boom)
    assert main(["info", "-g", str(data["dir"] / "g.db")]) == code
    err = capsys.readouterr().err
    assert message in err
    assert ("Traceback" in err) == (code == 3)  # a bug shows its traceback, Ctrl-C does not


def test_ctrl_c_mid_job_exits_130_and_resumes(data):
    """A real SIGINT during a job: exit 130, and --resume gives the uninterrupted output."""
    d = data["dir"]
    rng = np.random.default_rng(9)
    many = np.repeat(data["probes"], 12, axis=0)  # 103 chunks of 7
    many += 0.01 * rng.standard_normal(many.shape).astype(np.float32)
    write_table(d / "int.npy", "npy", [], many)
    args = ("identify", "-g", "g.db", "-i", "int.npy", "--chunk-size", "7", "-k", "2", "-q")
    r = run(*args, "-o", "int-ref.csv", cwd=d)
    assert r.returncode == 0, r.stderr.decode()
    man = d / "int.csv.job" / "manifest.json"
    p = subprocess.Popen(
        [sys.executable, "-m", "pyfacematch", *args, "-o", "int.csv"],
        cwd=d,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # a suite started in the background (`cmd &`) runs with SIGINT ignored, which children
        # inherit: give the job the disposition a terminal gives it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    t0 = time.monotonic()
    while p.poll() is None and time.monotonic() - t0 < 60:
        try:
            if json.loads(man.read_text())["chunks_done"] >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.001)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err.decode()
    assert b"identify: interrupted" in err and b"Traceback" not in err
    assert json.loads(man.read_text())["chunks_done"] < len(many) // 7
    r = run(*args, "-o", "int.csv", "--resume", cwd=d)
    assert r.returncode == 0, r.stderr.decode()
    assert (d / "int.csv").read_bytes() == (d / "int-ref.csv").read_bytes()


def test_verify_remove_calibrate_export_info(data):
    d = data["dir"]
    gids, probes, pids = data["gids"], data["probes"], data["pids"]
    # verify: the first 10 probes claim their true identity, the next 10 a wrong one, one unknown
    truth = {p: data["ref"][p][0][0] for p in pids}
    claims = [truth[p] for p in pids[:10]] + [
        gids[(gids.index(truth[p]) + 1) % N_GAL] for p in pids[10:20]
    ]
    claims.append("nobody")
    write_table(d / "claims.jsonl", "jsonl", pids[:21], probes[:21], extra={"claim": claims})
    r = run("verify", "-g", "g.db", "-i", "claims.jsonl", "-o", "v.csv", "--threshold", "0.6",
            "--on-error", "skip", cwd=d)  # fmt: skip
    assert r.returncode == 1, r.stderr.decode()
    rows = _read_results(d / "v.csv")
    assert [x["identity"] for x in rows] == claims[:20]
    gal_unit = _unit(data["gal"])
    want = [
        float(_unit(probes[i : i + 1])[0] @ gal_unit[gids.index(c)])
        for i, c in enumerate(claims[:20])
    ]
    np.testing.assert_allclose([x["score"] for x in rows], want, atol=2e-5)
    assert [x["decision"] for x in rows] == ["match" if s >= 0.6 else "no-match" for s in want]
    rej = (d / "v.csv.rejects.csv").read_text()
    assert "p020" in rej and "unknown identity" in rej
    # calibrate FPIR from non-mated probes (random directions), stored and used by identify
    rng = np.random.default_rng(11)
    write_table(d / "nonmated.npy", "npy", [], rng.standard_normal((400, DIM)).astype(np.float32))
    r = run("calibrate", "-g", "g.db", "--fpir", "0.01", "-i", "nonmated.npy", "--quiet", cwd=d)
    assert r.returncode == 0, r.stderr.decode()
    cal = json.loads(r.stdout)
    info = json.loads(run("info", "-g", "g.db", cwd=d).stdout)
    assert info["thresholds"]["fpir"]["value"] == pytest.approx(cal["threshold"])
    assert info["identities"] == N_GAL and info["dim"] == DIM
    r = run("identify", "-g", "g.db", "-i", "probes.csv", "-o", "cal.csv", "-q", cwd=d)
    s = json.loads((d / "cal.csv.summary.json").read_text())
    assert s["threshold"]["source"] == "calibrated-fpir"
    assert s["threshold"]["value"] == pytest.approx(cal["threshold"])
    # export then remove (opt-out)
    r = run("export", "-g", "g.db", "-o", "backup.npz", cwd=d)
    assert r.returncode == 0
    with np.load(d / "backup.npz") as z:
        assert sorted(z["ids"].tolist()) == sorted(gids)
        i = z["ids"].tolist().index(gids[5])
        np.testing.assert_allclose(z["templates"][i], _unit(data["gal"][5:6])[0], atol=1e-6)
    r = run("remove", "-g", "g2.db", "x", cwd=d)
    assert r.returncode == 2
    r = run("enroll", "-g", "g2.db", "-i", "backup.npz", "-q", cwd=d)
    assert r.returncode == 0, r.stderr.decode()
    r = run("enroll", "-g", "g2.db", "-i", "backup.npz", "--on-error", "skip", "-q", cwd=d)
    assert r.returncode == 1  # every id already enrolled
    assert (d / "g2.db.enroll-rejects.csv").read_text().count("duplicate id") == N_GAL
    scores = np.random.default_rng(2).normal(0.0, 0.2, 5000)
    np.save(d / "impostors.npy", scores)
    r = run(
        "calibrate", "-g", "g2.db", "--fmr", "0.01", "--impostors", "impostors.npy", "-q", cwd=d
    )
    assert r.returncode == 0, r.stderr.decode()
    thr = json.loads(r.stdout)["threshold"]
    assert np.mean(scores >= thr) <= 0.01 < np.mean(scores >= np.max(scores[scores < thr]))
    r = run("remove", "-g", "g2.db", gids[0], "nobody", cwd=d)
    assert r.returncode == 2 and b"'nobody' is not enrolled" in r.stderr
    r = run("remove", "-g", "g2.db", "--id", gids[1], "--id", "nobody", "--on-error", "skip", "-q",
            cwd=d)  # fmt: skip
    assert r.returncode == 1
    info = json.loads(run("info", "-g", "g2.db", cwd=d).stdout)
    assert info["identities"] == N_GAL - 2  # gids[0] was removed before the stop
    r = run(
        "identify", "-g", "g2.db", "-i", "probes.csv", "-o", "after.csv", "-k", "3", "-q", cwd=d
    )
    ids = {x["identity"] for x in _read_results(d / "after.csv")}
    assert gids[0] not in ids and gids[1] not in ids


def test_bench_subcommand(data):
    try:
        from pyfacematch.bench import run_suite  # noqa: F401
    except ImportError:
        r = run("bench", "smoke", "--out", "b", cwd=data["dir"])
        assert r.returncode == 2 and b"not installed" in r.stderr
    else:
        r = run("bench", "no-such-suite", "--out", "b", cwd=data["dir"])
        assert r.returncode == 2 and b"unknown benchmark suite" in r.stderr


def test_bench_smoke_writes_its_report(data):
    """The success path: a smoke run of one section (seconds) writes results, report, summary."""
    d = data["dir"]
    r = run("bench", "smoke", "--out", "bench-out", "--sections", "keys", "--summary", "bench.json",
            "-q", cwd=d)  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    res = json.loads((d / "bench-out" / "results.json").read_text())
    assert json.loads((d / "bench.json").read_text())["sections"] == res["sections"]
    assert res["suite"] == "smoke"
    status = {s["key"]: s["status"] for s in res["sections"]}
    assert status.pop("keys") == "ok" and set(status.values()) == {"skipped"}
    keys = next(s for s in res["sections"] if s["key"] == "keys")
    assert keys["data"]["max_abs_key_diff"] < 1e-4  # the engine agrees with the numpy pipeline
    assert keys["title"] in (d / "bench-out" / "report.md").read_text()


def test_progress_lines_when_not_a_terminal(data):
    d = data["dir"]
    r = run("identify", "-g", "g.db", "-i", "probes.csv", "-o", "prog.csv", "--chunk-size", "10",
            "--log-interval", "0", cwd=d)  # fmt: skip
    assert r.returncode == 0
    lines = [x for x in r.stderr.decode().splitlines() if x.startswith("identify: ")]
    assert any(f"/{N_PROBE} probes" in x and "probes/s" in x and "ETA" in x for x in lines)
    assert lines[-1].startswith(f"identify: {N_PROBE} probes identified")


def test_landmarks_with_key_model_enroll_and_identify_masked(tmp_path):
    """Landmarks in (parquet with visibility, JSON Lines), keys made by the key model, masked search."""
    from pyfacematch.core.scoring import masked_topk
    from pyfacematch.keys import KeyModel
    from pyfacematch.keys.synth import FaceSynthesizer

    train = FaceSynthesizer("ibug68", 40, seed=1)
    tf = train.sample(np.repeat(np.arange(40), 5), seed=2, occluder="random")
    km = KeyModel.fit(
        tf.landmarks, tf.identities, scheme="ibug68", dim=32, visibility=tf.visibility
    )
    km.save(tmp_path / "km.npz")
    people = FaceSynthesizer("ibug68", 80, seed=3)
    gf = people.sample(np.arange(80), seed=4)
    gids = [f"g{i}" for i in range(80)]
    write_table(
        tmp_path / "gal.parquet", "parquet", gids, gf.landmarks, value_name="landmarks",
        extra={"visibility": [v.tolist() for v in gf.visibility]},
    )  # fmt: skip
    r = run(
        "enroll", "-g", "lm.db", "-i", "gal.parquet", "--key-model", "km.npz", "-q", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr.decode()
    who = np.arange(0, 80, 4)
    pf_ = people.sample(who, seed=5, occluder="random")
    lines = [
        json.dumps({"id": f"q{i}", "landmarks": pf_.landmarks[i].tolist(),
                    "visibility": pf_.visibility[i].astype(int).tolist()})
        for i in range(len(who))
    ]  # fmt: skip
    lines.insert(3, json.dumps({"id": "short", "landmarks": pf_.landmarks[0][:60].tolist()}))
    (tmp_path / "probes.jsonl").write_text("\n".join(lines) + "\n")
    r = run("identify", "-g", "lm.db", "-i", "probes.jsonl", "--key-model", "km.npz", "-o", "o.csv",
            "--on-error", "skip", "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1, r.stderr.decode()
    assert "wrong landmark count" in (tmp_path / "o.csv.rejects.csv").read_text()
    rows = _read_results(tmp_path / "o.csv")
    # reference: the same keys in process, brute-force masked cosine
    gk, gm = km.encode(gf.landmarks, gf.visibility)
    pk, pm = km.encode(pf_.landmarks, pf_.visibility)
    s, idx = masked_topk(pk, gk, 1, pm, gm, km.blocks)
    assert [x["probe_id"] for x in rows] == [f"q{i}" for i in range(len(who))]
    # not comparable (shared blocks < half the key): a rank-0 row with no identity
    assert [x["identity"] for x in rows] == [gids[j] if j >= 0 else None for j in idx[:, 0]]
    assert [x["rank"] for x in rows] == [1 if j >= 0 else 0 for j in idx[:, 0]]
    got = np.array([np.nan if x["score"] is None else x["score"] for x in rows])
    np.testing.assert_allclose(got, s[:, 0], atol=2e-5)  # NaN where not comparable
    assert (idx[:, 0] >= 0).sum() >= len(who) // 2
    assert np.mean([x["identity"] == f"g{w}" for x, w in zip(rows, who)]) >= 0.5
    # a key model that does not match the gallery is refused
    KeyModel.fit(tf.landmarks, tf.identities, scheme="ibug68", dim=16).save(tmp_path / "km16.npz")
    r = run("identify", "-g", "lm.db", "-i", "probes.jsonl", "--key-model", "km16.npz", "-o", "x.csv",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and b"key model" in r.stderr


@pytest.mark.slow
def test_image_folders_enroll_and_identify(tmp_path):
    """Image folders through an embedder (dlib): a folder per person, then a folder of probes."""
    pytest.importorskip("dlib")
    import shutil

    from conftest import TEST_DATA

    src = TEST_DATA / "faces"
    people = sorted(p.name for p in src.iterdir() if p.is_dir())
    gal, probes = tmp_path / "gallery", tmp_path / "probes"
    for person in people:
        imgs = sorted((src / person).glob("*.jpg"))
        (gal / person).mkdir(parents=True)
        shutil.copy(imgs[0], gal / person / imgs[0].name)
        (probes / person).mkdir(parents=True, exist_ok=True)
        shutil.copy(imgs[1], probes / person / imgs[1].name)
    (probes / "broken.jpg").write_bytes(b"not an image")
    r = run("enroll", "-g", "img.db", "--images", "gallery", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    r = run("identify", "-g", "img.db", "--images", "probes", "-o", "o.jsonl", "--on-error", "skip",
            "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1, r.stderr.decode()
    rows = _read_results(tmp_path / "o.jsonl")
    assert [(x["probe_id"].split("/")[0], x["identity"]) for x in rows] == [(p, p) for p in people]
    rej = (tmp_path / "o.jsonl.rejects.csv").read_text()
    assert "broken.jpg" in rej


def test_demo_small(tmp_path):
    r = run(
        "demo", "--identities", "2000", "--probes", "100", "--summary", "demo.json", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr.decode()
    text = r.stdout.decode()
    assert "2,000 people enrolled" in text and "probes/s" in text and "masked probes" in text
    s = json.loads((tmp_path / "demo.json").read_text())
    assert s["identities"] == 2000 and s["probes_per_condition"] == 100
    assert s["rank1_clean"] >= 0.9  # clean synthetic faces of enrolled people are found
    # masked cosine (only the blocks both faces show) finds masked probes at least as often as
    # plain cosine over the whole key, computed in the same run on the same probes
    assert s["rank1_masked"] >= s["rank1_masked_plain_cosine"]
    assert s["rank1_masked"] >= 0.9 and s["probes_per_second"] > 0


_HWM = """
import sys
from pyfacematch.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    hwm = next(x for x in open('/proc/self/status') if x.startswith('VmHWM')).split()[1]
    print('VmHWM', hwm, file=sys.stderr)
sys.exit(rc)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_is_bounded_by_the_chunk_not_the_input(data):
    """Peak memory of a 15× larger job grows by far less than its probes would take."""
    d = data["dir"]
    rng = np.random.default_rng(5)
    dim = 128  # 150,000 probes: 77 MB as float32 in the file
    write_table(d / "memgal.npy", "npy", [], rng.standard_normal((200, dim)).astype(np.float32))
    assert run("enroll", "-g", "mem.db", "-i", "memgal.npy", "-q", cwd=d).returncode == 0
    peaks = {}
    for n in (10_000, 150_000):
        write_table(d / f"mem{n}.npy", "npy", [], rng.standard_normal((n, dim)).astype(np.float32))
        r = subprocess.run(
            [sys.executable, "-c", _HWM, "identify", "-g", "mem.db", "-i", f"mem{n}.npy",
             "-o", f"mem{n}.csv", "-k", "2", "-q", "--chunk-size", "5000"],
            cwd=d, capture_output=True, env=_env(), timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr.decode()
        peaks[n] = int(r.stderr.decode().split("VmHWM")[1].split()[0]) / 1024  # MiB
    # holding (or memory-mapping) the 150,000 probes, or their 300,000 result rows, would
    # take over 70 MiB more than 10,000 do
    assert peaks[150_000] - peaks[10_000] < 25, peaks
