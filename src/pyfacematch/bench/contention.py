"""Contention scenarios of the durability harness: two writers, and a reader during remove.

:func:`run_two_writers`
    Process A opens a gallery for writing; process B opens the same file.
    The promise: B is refused with a typed error naming the other writer, and
    the lock dies with A (after A is SIGKILLed, a new writer opens). Until
    locking exists this records what happens instead: whether B was admitted,
    whether B still returns a person A removed, and whether B's close wrote
    that person's template to a file.
:func:`run_reader_during_remove`
    A foreign SQLite connection holds a read transaction (``BEGIN`` +
    ``SELECT``) while the gallery removes an identity. The promise: the
    removal is all or nothing from the caller's view (either it returns and
    the person is gone from store and memory, or it raises and nothing
    changed), and once the reader ends and the gallery is closed no file
    holds the removed template.

:func:`run_checkpoint_leftovers`
    A process writing index checkpoints is SIGKILLed while a checkpoint's
    temporary file exists; the gallery is reopened and a person removed. The
    promise: no temporary file survives to hold the removed template once
    ``remove()`` has returned (temporary files are swept on open and before
    erasure completes).

Each returns a dict: ``name``, ``summary`` (one line for the table),
``violations`` (list of str, empty when every promise held) and ``facts``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.bench.leakscan import raw_template, scan_files, stored_templates
from pyfacematch.errors import PyFaceMatchError, UnknownIdentityError

__all__ = [
    "run_checkpoint_leftovers",
    "run_reader_during_remove",
    "run_two_writers",
    "serve_holder",
]

_SEED = 12


def _make_gallery(folder: str, backend: str, dim: int, n: int) -> Path:
    from pyfacematch import Gallery

    gdir = Path(folder) / "gallery"
    gdir.mkdir(parents=True, exist_ok=False)
    path = gdir / "gallery.db"
    x = np.stack([raw_template(_SEED, s, dim) for s in range(n)])
    with Gallery.open(path, dim=dim, backend=backend) as g:
        g.enroll_many([f"p{s}" for s in range(n)], x)
    return path


def _patterns(serials: list[int], dim: int) -> dict[str, bytes]:
    t = stored_templates(_SEED, serials, dim)
    return {f"p{s}#{s}": row.tobytes() for s, row in zip(serials, t)}


# --------------------------------------------------------------------------- holder process
def serve_holder(path: str, dim: int) -> None:
    """A process that holds a gallery and obeys JSON commands on stdin (one per line).

    Commands: ``{"cmd": "open"}``, ``{"cmd": "remove", "id": s}``,
    ``{"cmd": "probe", "serial": n}`` (identify top-3 ids and verify score of
    ``p<n>``), ``{"cmd": "close"}``. Each gets one JSON reply line on stdout
    with ``ok`` and either results or the error's ``type`` and ``msg``.
    """
    from pyfacematch import Gallery

    g: Any = None
    for line in sys.stdin:
        cmd = json.loads(line)
        reply: dict[str, Any] = {"ok": True}
        try:
            if cmd["cmd"] == "open":
                g = Gallery.open(path)
            elif cmd["cmd"] == "remove":
                g.remove(cmd["id"])
            elif cmd["cmd"] == "probe":
                s = int(cmd["serial"])
                probe = stored_templates(_SEED, [s], dim)
                reply["identify"] = list(g.identify_arrays(probe, k=3).identities[0])
                try:
                    reply["verify"] = g.verify(f"p{s}", probe[0]).score
                except UnknownIdentityError:
                    reply["verify"] = None
            elif cmd["cmd"] == "close":
                g.close()
        except Exception as exc:
            reply = {
                "ok": False,
                "type": type(exc).__name__,
                "typed": isinstance(exc, PyFaceMatchError),
                "msg": str(exc)[:300],
            }
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class _Holder:
    def __init__(self, path: Path, dim: int) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pyfacematch.bench.contention",
            "--holder",
            str(path),
            str(dim),
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def send(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            return {"ok": False, "type": "died", "typed": False, "msg": err[-300:]}
        return dict(json.loads(line))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap(None)

    def finish(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self._reap(60.0)

    def _reap(self, timeout: float | None) -> None:
        self.proc.wait(timeout=timeout)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None and not f.closed:
                f.close()


def run_two_writers(
    folder: str | os.PathLike[str], backend: str = "binary", dim: int = 64, n: int = 300
) -> dict[str, Any]:
    """Two processes open one gallery for writing; see the module docstring.

    Parameters
    ----------
    folder : path
        New folder for this scenario's gallery.
    backend, dim : str, int
        Gallery backend and template dimension.
    n : int
        Identities enrolled first (above 256 the index is active and, for
        FAISS backends, checkpointed).
    """
    folder = os.fspath(folder)
    path = _make_gallery(folder, backend, dim, n)
    victim = 5
    facts: dict[str, Any] = {}
    violations: list[str] = []
    a, b = _Holder(path, dim), _Holder(path, dim)
    try:
        ra = a.send(cmd="open")
        facts["first_open"] = ra
        rb = b.send(cmd="open")
        facts["second_writer_admitted"] = rb["ok"]
        if rb["ok"]:
            violations.append("a second writer opened the gallery while the first held it")
        elif not rb.get("typed"):
            violations.append(f"second writer refused with an untyped {rb['type']}: {rb['msg']}")
        else:
            facts["refusal"] = f"{rb['type']}: {rb['msg']}"
        facts["remove_by_first"] = a.send(cmd="remove", id=f"p{victim}")
        if rb["ok"]:
            pb = b.send(cmd="probe", serial=victim)
            stale = pb.get("verify") is not None or f"p{victim}" in (pb.get("identify") or [])
            facts["second_returns_removed"] = stale
            if stale:
                violations.append(
                    f"after the first writer's remove('p{victim}') returned, the second "
                    f"still returns it (identify {pb.get('identify')}, verify score "
                    f"{pb.get('verify')})"
                )
            facts["second_close"] = b.send(cmd="close")
            leaks, _ = scan_files(path.parent, _patterns([victim], dim))
            facts["leaks_after_second_close"] = [lk.file for lk in leaks]
            if leaks:
                violations.append(
                    "the second writer's close wrote the removed template to "
                    + ", ".join(sorted({lk.file for lk in leaks}))
                )
        b.finish()
        a.kill()  # the first writer crashes while holding the gallery
        c = _Holder(path, dim)
        rc = c.send(cmd="open")
        facts["open_after_crash"] = rc
        if not rc["ok"]:
            violations.append(f"no writer can open after the first one crashed: {rc['msg']}")
        else:
            pc = c.send(cmd="probe", serial=victim)
            if pc.get("verify") is not None or f"p{victim}" in (pc.get("identify") or []):
                violations.append(f"p{victim} is returned again after reopening")
            c.send(cmd="close")
        c.finish()
    finally:
        for h in (a, b):
            if h.proc.poll() is None:
                h.kill()
    leaks, _ = scan_files(path.parent, _patterns([victim], dim))
    facts["final_leaks"] = [lk.file for lk in leaks]
    if leaks:
        violations.append(
            f"removed p{victim}'s template is still in "
            + ", ".join(sorted({lk.file for lk in leaks}))
            + " after every process closed"
        )
    summary = (
        ("second writer ADMITTED" if facts["second_writer_admitted"] else "second writer refused")
        + (
            f", stale removed returned: {facts.get('second_returns_removed')}"
            if facts["second_writer_admitted"]
            else ""
        )
        + f", leaked files after close: {len(facts['final_leaks'])}"
        + f", violations {len(violations)}"
    )
    return {"name": "two writers", "summary": summary, "violations": violations, "facts": facts}


def run_reader_during_remove(
    folder: str | os.PathLike[str], backend: str = "binary", dim: int = 64, n: int = 300
) -> dict[str, Any]:
    """Remove an identity while a foreign connection holds a read transaction.

    Parameters as in :func:`run_two_writers`.
    """
    from pyfacematch import Gallery

    folder = os.fspath(folder)
    path = _make_gallery(folder, backend, dim, n)
    victim = 7
    name = f"p{victim}"
    probe = stored_templates(_SEED, [victim], dim)
    facts: dict[str, Any] = {}
    violations: list[str] = []
    g = Gallery.open(path)
    reader = sqlite3.connect(os.fspath(path), isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM templates").fetchone()
        t0 = time.perf_counter()
        try:
            g.remove(name)
            facts["remove"] = "returned"
        except Exception as exc:
            facts["remove"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            if not isinstance(exc, PyFaceMatchError):
                violations.append(f"remove raised an untyped {type(exc).__name__}")
        facts["remove_seconds"] = round(time.perf_counter() - t0, 2)
        with sqlite3.connect(os.fspath(path)) as look:
            in_store = look.execute(
                "SELECT count(*) FROM identities WHERE name=?", (name,)
            ).fetchone()[0]
        facts["in_store"] = bool(in_store)
        in_memory = name in g.identities()
        top = g.identify_arrays(probe, k=3).identities[0]
        returned = name in list(top)
        try:
            g.verify(name, probe[0])
            verified = True
        except UnknownIdentityError:
            verified = False
        facts.update(in_memory=in_memory, identify_returns=returned, verify_accepts=verified)
        if facts["remove"] == "returned" and (in_store or in_memory or returned or verified):
            violations.append(
                f"remove returned but the person is still there (store {bool(in_store)}, "
                f"memory {in_memory}, identify {returned}, verify {verified})"
            )
        if facts["remove"] != "returned" and not in_store and (in_memory or returned or verified):
            violations.append(
                "remove raised after committing the delete: the store no longer holds "
                f"{name} but identify ({returned}) / verify ({verified}) still return it"
            )
        if facts["remove"] != "returned" and not in_store and not in_memory:
            facts["note"] = "remove raised although the removal took effect"
        held = scan_files(path.parent, _patterns([victim], dim))[0]
        facts["leaks_while_reader_holds"] = sorted({lk.file for lk in held})
    finally:
        reader.rollback()
        reader.close()
    if facts["remove"] != "returned":
        try:
            g.remove(name)
            facts["retry"] = "returned"
        except Exception as exc:
            facts["retry"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            if isinstance(exc, UnknownIdentityError) and (
                name in g.identities() or name in list(g.identify_arrays(probe, k=3).identities[0])
            ):
                violations.append(
                    "retrying remove() raises UnknownIdentityError while identify still "
                    f"returns {name}"
                )
    left = scan_files(path.parent, _patterns([victim], dim))[0]
    facts["leaks_after_reader_ends"] = sorted({lk.file for lk in left})
    g.close()
    leaks = scan_files(path.parent, _patterns([victim], dim))[0]
    facts["leaks_after_close"] = sorted({lk.file for lk in leaks})
    if leaks:
        violations.append(f"{name}'s template is still in {facts['leaks_after_close']} after close")
    with Gallery.open(path) as g2:
        if name in g2.identities() and facts["remove"] == "returned":
            violations.append(f"{name} is back after reopening")
    summary = (
        f"remove {facts['remove'].split(':')[0]} after {facts['remove_seconds']} s, "
        f"still returned {facts['identify_returns'] or facts['verify_accepts']}, "
        f"retry {facts.get('retry', '-').split(':')[0]}, violations {len(violations)}"
    )
    return {
        "name": "reader during remove",
        "summary": summary,
        "violations": violations,
        "facts": facts,
    }


def checkpoint_forever(path: str) -> None:
    """Open the gallery at ``path`` and write index checkpoints until killed."""
    from pyfacematch import Gallery

    g = Gallery.open(path)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        g.checkpoint()


def run_checkpoint_leftovers(
    folder: str | os.PathLike[str],
    backend: str = "flat",
    dim: int = 64,
    n: int = 300,
    attempts: int = 30,
) -> dict[str, Any]:
    """SIGKILL a process while a checkpoint's temporary file exists, then remove a person.

    Parameters as in :func:`run_two_writers`; ``backend`` must write index
    checkpoints (``flat``, ``hnsw``, ``ivf``, ``ivfpq``). ``attempts`` bounds
    the kills tried to catch a temporary file holding the victim's template
    (``facts["leftover"]`` says whether one was caught; if not, nothing was
    proven either way).
    """
    from pyfacematch import Gallery

    folder = os.fspath(folder)
    path = _make_gallery(folder, backend, dim, n)
    index_dir = path.with_name(path.name + ".index")
    victim = 9
    facts: dict[str, Any] = {"leftover": False, "attempts": 0}
    violations: list[str] = []
    pattern = _patterns([victim], dim)
    for _ in range(attempts):
        facts["attempts"] += 1
        cmd = [sys.executable, "-m", "pyfacematch.bench.contention", "--checkpoints", str(path)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            if proc.stdout is None or proc.stdout.readline().strip() != "ready":
                continue
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10.0:
                if index_dir.is_dir() and any(".tmp" in f.name for f in index_dir.iterdir()):
                    break
                time.sleep(0.0005)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        holding = sorted(
            {lk.file for lk in scan_files(path.parent, pattern)[0] if ".tmp" in lk.file}
        )
        if holding:  # a temporary file caught after the victim's row was written
            facts["leftover"] = True
            facts["leftover_files"] = holding
            break
    if not facts["leftover"]:
        return {
            "name": "checkpoint leftovers",
            "summary": f"no temporary file holding the victim caught in {facts['attempts']} "
            "kills (nothing proven)",
            "violations": violations,
            "facts": facts,
        }
    g = Gallery.open(path)
    g.remove(f"p{victim}")
    after_remove = sorted({lk.file for lk in scan_files(path.parent, pattern)[0]})
    facts["leaks_after_remove"] = after_remove
    if after_remove:
        violations.append(
            f"after remove('p{victim}') returned, its template is still in {after_remove} "
            "(a temporary checkpoint file left by a killed process)"
        )
    g.close()
    after_close = sorted({lk.file for lk in scan_files(path.parent, pattern)[0]})
    facts["leaks_after_close"] = after_close
    if after_close:
        violations.append(f"after close, p{victim}'s template is still in {after_close}")
    summary = (
        f"temp file holding the victim caught after {facts['attempts']} kill(s), "
        f"still there after remove: {bool(after_remove)}, "
        f"after close: {bool(after_close)}, violations {len(violations)}"
    )
    return {
        "name": "checkpoint leftovers",
        "summary": summary,
        "violations": violations,
        "facts": facts,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--holder"]:
        serve_holder(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--checkpoints"]:
        checkpoint_forever(sys.argv[2])
