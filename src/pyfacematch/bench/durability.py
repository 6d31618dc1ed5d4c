"""Durability harness: random SIGKILLs against one gallery file, then proof of what survived.

Protocol
--------
A *supervisor* creates a gallery in its own folder and then runs ``cycles``
cycles. In each cycle it starts a *worker* subprocess that opens the gallery
and performs random operations through the public API (``enroll``,
``enroll_many``, ``enroll(..., on_duplicate="append")``, ``remove``,
``checkpoint``, ``close`` + re-open, ``rebuild_index``, ``identify``). The
worker appends to an acknowledgement log (JSON lines, each ``fsync``-ed): a
``begin`` record before each call (what it will do, with the serial numbers of
its templates) and an ``ack`` record after the call returns. The supervisor
SIGKILLs the worker at a random time (mostly while it works, sometimes while
it opens the gallery), then

1. every ``scan_every`` cycles, before anything opens the gallery again, scans
   every file under the gallery's folder for the bytes of the templates of
   acknowledged removals (:mod:`pyfacematch.bench.leakscan`);
2. opens the gallery (a failure is a *failed open*), resolves the one call
   that may have been in flight (it may have landed or not, but all or
   nothing), and checks that every acknowledged enrollment is present with its
   exact templates (else *lost*), that no acknowledged removal is listed,
   returned by ``identify`` or accepted by ``verify`` (else *resurrected*),
   and that no identity appeared that nobody enrolled;
3. closes it (which writes a checkpoint, as any owner would).

At the end the folder is scanned again for every removed template, including
removals that were in flight when the worker was killed but had committed.
The two-writer and reader-during-remove scenarios live in
:mod:`pyfacematch.bench.contention`; :func:`main` runs all three and prints one
summary table. Templates are seeded functions of a serial number, so no
template bytes ever need to be written to the log.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.bench.leakscan import Leak, raw_template, scan_files, stored_templates
from pyfacematch.errors import IndexTrainingError, UnknownIdentityError

__all__ = [
    "AckLog",
    "AckModel",
    "check_gallery",
    "create_gallery",
    "scan_gallery",
    "DurabilityConfig",
    "DurabilityReport",
    "Violation",
    "format_report",
    "main",
    "run_durability",
    "run_worker",
]

GALLERY_FILE = "gallery.db"

#: The worker scrubs inside ``remove()``, so the promise checked after every kill is the
#: strongest one: an acknowledged removal left nothing in any file. (In ``"background"``
#: mode the promise is weaker by design — stale page copies live until the scrub, at most
#: ``erasure_delay`` s later or at the next writable open — see pyfacematch.gallery.erasure.)
SCRUB = "immediate"

#: Relative weight of each worker operation.
OP_WEIGHTS: dict[str, int] = {
    "enroll": 26,
    "enroll_many": 14,
    "append": 8,
    "remove": 28,
    "checkpoint": 8,
    "reopen": 5,
    "rebuild": 3,
    "identify": 6,
}


@dataclass
class DurabilityConfig:
    """Settings of one harness run.

    Attributes
    ----------
    folder : str
        Working folder: ``gallery/`` (scanned) and ``acks.log`` are created in it.
    cycles : int
        Worker start → SIGKILL → check cycles.
    backend : str
        Gallery backend (``"binary"``, ``"flat"``, ``"hnsw"``, …).
    dim : int
        Template dimension.
    initial : int
        Identities enrolled before the first cycle (above 256 templates the
        approximate backends are active and checkpoint files are written).
    seed : int
        Seed of templates, operations and kill times.
    max_delay : float
        Seconds: the kill comes uniformly within this long after the worker
        has opened the gallery.
    early_kill : float
        Share of cycles killed while the worker is still starting or opening.
    scan_every : int
        Scan the folder for removed templates every this many cycles (0: only
        at the end).
    verify_sample : int
        Older removed identities re-checked with ``verify`` each cycle (those
        removed in the cycle are always checked).
    evidence : str or None
        Folder to keep a copy of the gallery folder and the acknowledgement log in, each time a
        scan finds a leak (for forensics: which file, page and offset).
    nice : int
        Niceness added to the worker processes (the machine may be shared).
    spawn : {"forkserver", "exec"}
        How workers start: forked from a preloaded fork server, or a fresh
        interpreter each cycle.
    """

    folder: str
    cycles: int = 30
    backend: str = "binary"
    dim: int = 64
    initial: int = 300
    seed: int = 0
    max_delay: float = 1.0
    early_kill: float = 0.1
    scan_every: int = 10
    verify_sample: int = 50
    nice: int = 0
    spawn: str = "forkserver"
    evidence: str | None = None

    @property
    def gallery_dir(self) -> Path:
        return Path(self.folder) / "gallery"

    @property
    def gallery_path(self) -> Path:
        return self.gallery_dir / GALLERY_FILE

    @property
    def log_path(self) -> Path:
        return Path(self.folder) / "acks.log"


@dataclass(frozen=True)
class Violation:
    """A broken promise: which cycle, which kind, what was seen (ids only, no templates)."""

    cycle: int
    kind: str
    detail: str


@dataclass
class DurabilityReport:
    """What a run did and found; ``violations`` empty means every promise held."""

    backend: str
    cycles: int = 0
    kills: int = 0
    early_kills: int = 0
    worker_exits: int = 0
    ops_acknowledged: Counter[str] = field(default_factory=Counter)
    kills_in_flight: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    resurrected: int = 0
    failed_opens: int = 0
    torn: int = 0
    phantoms: int = 0
    worker_errors: int = 0
    leaks: list[Leak] = field(default_factory=list)
    leak_scans: int = 0
    scanned_bytes: int = 0
    removed_checked: int = 0
    enrolled_checked: int = 0
    seconds: float = 0.0
    violations: list[Violation] = field(default_factory=list)
    scenarios: list[dict[str, Any]] = field(default_factory=list)

    def violate(self, cycle: int, kind: str, detail: str) -> None:
        self.violations.append(Violation(cycle, kind, detail))
        # as it happens: a long run's first violation should not wait for the summary
        print(f"  VIOLATION cycle {cycle}: {kind}: {detail}", file=sys.stderr, flush=True)

    @property
    def leaked_files(self) -> int:
        return len({lk.file for lk in self.leaks})

    @property
    def leaked_bytes(self) -> int:
        return sum(lk.matched_bytes for lk in self.leaks)


# --------------------------------------------------------------------------- ack log
class AckLog:
    """Append-only JSON-lines log, every record ``fsync``-ed before returning."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, record: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def read_records(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete records after ``offset`` (a torn last line is not a record) and the new offset."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out, offset + end


# --------------------------------------------------------------------------- worker
def run_worker(spec: dict[str, Any]) -> None:
    """Body of the worker subprocess: random operations until killed.

    ``spec`` holds ``gallery``, ``log``, ``seed``, ``serial`` (first template
    serial to use), ``dim``, ``lo``/``hi`` (identity counts that steer enroll
    versus remove) and ``max_ops`` (stop after this many, 0 = never).
    """
    from pyfacematch import Gallery

    log = AckLog(spec["log"])
    seed, dim = int(spec["seed"]), int(spec["dim"])
    serial = int(spec["serial"])
    rng = random.Random(f"{seed}:{spec['cycle']}")
    g = Gallery.open(spec["gallery"], erasure_scrub=SCRUB)
    log.write({"t": "ready", "pid": os.getpid()})
    ids = g.identities()
    lo, hi = int(spec["lo"]), int(spec["hi"])
    max_ops = int(spec.get("max_ops", 0))
    names, weights = list(OP_WEIGHTS), list(OP_WEIGHTS.values())
    seq = 0
    while not max_ops or seq < max_ops:
        op = rng.choices(names, weights)[0]
        if len(ids) < lo and op == "remove":
            op = "enroll"
        if len(ids) > hi and op in ("enroll", "enroll_many"):
            op = "remove"
        if op in ("remove", "append") and not ids:
            op = "enroll"
        seq += 1
        rec: dict[str, Any] = {"t": "begin", "seq": seq, "op": op}
        if op in ("enroll", "enroll_many"):
            n_ids = 1 if op == "enroll" else rng.randint(2, 12)
            rows = [rng.randint(1, 2) for _ in range(n_ids)]
            serials = []
            for r in rows:
                serials.append(list(range(serial, serial + r)))
                serial += r
            rec["ids"] = [f"p{s[0]}" for s in serials]
            rec["serials"] = serials
        elif op == "append":
            rec["ids"] = [rng.choice(ids)]
            rec["serials"] = [[serial]]
            serial += 1
        elif op == "remove":
            rec["ids"] = [rng.choice(ids)]
        log.write(rec)
        try:
            if op in ("enroll", "enroll_many", "append"):
                flat = [(i, s) for i, ss in zip(rec["ids"], rec["serials"]) for s in ss]
                x = np.stack([raw_template(seed, s, dim) for _, s in flat])
                if op == "enroll":
                    g.enroll(rec["ids"][0], x)
                elif op == "append":
                    g.enroll(rec["ids"][0], x, on_duplicate="append")
                else:
                    g.enroll_many([i for i, _ in flat], x)
            elif op == "remove":
                g.remove(rec["ids"][0])
            elif op == "checkpoint":
                g.checkpoint()
            elif op == "reopen":
                g.close()
                g = Gallery.open(spec["gallery"], erasure_scrub=SCRUB)
            elif op == "rebuild":
                try:
                    g.rebuild_index()
                except IndexTrainingError:  # a typed, documented refusal: nothing changed
                    pass
            elif op == "identify" and ids:
                pick = [rng.choice(ids) for _ in range(8)]
                g.identify(np.concatenate([g.templates(i)[:1] for i in pick]), k=3)
        except Exception as exc:  # recorded; the supervisor decides what it means
            log.write({"t": "err", "seq": seq, "type": type(exc).__name__, "msg": str(exc)[:300]})
            if op == "reopen":  # the gallery may be closed now: open it or give up
                g = Gallery.open(spec["gallery"], erasure_scrub=SCRUB)
            ids = g.identities()
            continue
        log.write({"t": "ack", "seq": seq})
        if op in ("enroll", "enroll_many"):
            ids.extend(rec["ids"])
        elif op == "remove":
            ids.remove(rec["ids"][0])
    g.close()
    log.write({"t": "done"})
    log.close()


# --------------------------------------------------------------------------- supervisor
class AckModel:
    """What the supervisor knows: acknowledged state plus the calls whose fate is open.

    ``present`` maps each acknowledged identity to its template serials,
    ``removed`` the acknowledged removals, ``removed_unacked`` removals that
    were in flight at a kill and turned out committed; ``pending`` holds calls
    begun but not acknowledged until :meth:`resolve` decides them from what a
    reopened gallery holds.
    """

    def __init__(self, seed: int, dim: int) -> None:
        self.seed, self.dim = seed, dim
        self.present: dict[str, list[int]] = {}  # id -> template serials (acknowledged)
        self.removed: dict[str, list[int]] = {}  # acknowledged removals
        self.removed_unacked: dict[str, list[int]] = {}  # in flight at a kill, committed
        self.serials: dict[str, list[int]] = {}  # every serial ever sent for an id
        self.pending: list[dict[str, Any]] = []  # begun, not acknowledged
        self.next_serial = 0
        self.removed_this_cycle: list[str] = []
        self._cache: dict[int, np.ndarray] = {}

    def apply(self, records: list[dict[str, Any]], report: DurabilityReport, cycle: int) -> str:
        """Apply a worker's records; return the operation in flight at the kill ('' if none)."""
        begun: dict[int, dict[str, Any]] = {}
        in_flight = ""
        for r in records:
            t = r["t"]
            if t == "begin":
                begun[r["seq"]] = r
                in_flight = r["op"]
                for i, ss in zip(r.get("ids", []), r.get("serials", [])):
                    self.serials.setdefault(i, []).extend(ss)
                    self.next_serial = max(self.next_serial, max(ss) + 1)
            elif t == "ack":
                rec = begun.pop(r["seq"])
                in_flight = ""
                report.ops_acknowledged[rec["op"]] += 1
                self._acknowledge(rec)
            elif t == "err":
                rec = begun.pop(r["seq"])
                in_flight = ""
                report.worker_errors += 1
                report.violate(
                    cycle,
                    "worker error",
                    f"{rec['op']} {rec.get('ids', '')}: {r['type']}: {r['msg']}",
                )
                self.pending.append(rec)
        self.pending.extend(begun.values())
        return in_flight

    def _acknowledge(self, rec: dict[str, Any]) -> None:
        op = rec["op"]
        if op in ("enroll", "enroll_many"):
            for i, ss in zip(rec["ids"], rec["serials"]):
                self.present[i] = list(ss)
        elif op == "append":
            i = rec["ids"][0]
            self.present.setdefault(i, []).extend(rec["serials"][0])
        elif op == "remove":
            i = rec["ids"][0]
            self.present.pop(i, None)
            self.removed[i] = list(self.serials.get(i, []))
            self.removed_unacked.pop(i, None)
            self.removed_this_cycle.append(i)

    def resolve(
        self, ids: set[str], counts: dict[str, int], report: DurabilityReport, cycle: int
    ) -> None:
        """Decide the calls in flight at the kill from what the reopened gallery holds."""
        for rec in self.pending:
            op = rec["op"]
            if op in ("enroll", "enroll_many"):
                landed = [i for i in rec["ids"] if i in ids]
                if landed and len(landed) != len(rec["ids"]):
                    report.torn += 1
                    report.violate(
                        cycle,
                        "torn batch",
                        f"{op}: {len(landed)} of {len(rec['ids'])} identities stored",
                    )
                for i, ss in zip(rec["ids"], rec["serials"]):
                    if i in ids:
                        self.present[i] = list(ss)
            elif op == "append":
                i = rec["ids"][0]
                if i in self.present and counts.get(i, 0) > len(self.present[i]):
                    self.present[i].extend(rec["serials"][0])
            elif op == "remove":
                i = rec["ids"][0]
                if i not in ids and i not in self.removed:
                    self.present.pop(i, None)
                    self.removed_unacked[i] = list(self.serials.get(i, []))
                    self.removed_this_cycle.append(i)
        self.pending = []

    def templates(self, serials: list[int]) -> np.ndarray:
        """float32 (len(serials), dim) stored templates of ``serials`` (memoised)."""
        new = [s for s in serials if s not in self._cache]
        for s, row in zip(new, stored_templates(self.seed, new, self.dim)):
            self._cache[s] = row
        if not serials:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[s] for s in serials])

    def patterns(self, include_unacked: bool) -> dict[str, bytes]:
        src = dict(self.removed)
        if include_unacked:
            src.update(self.removed_unacked)
        out = {}
        for i, ss in src.items():
            t = self.templates(ss)
            for s, row in zip(ss, t):
                out[f"{i}#{s}"] = row.tobytes()
        return out


def scan_gallery(
    cfg: DurabilityConfig, model: AckModel, report: DurabilityReport, cycle: int, final: bool
) -> None:
    """Scan every file of the gallery's folder for removed templates; record leaks.

    ``final`` includes removals that were in flight at a kill (they committed,
    so their erasure must complete); otherwise only acknowledged removals count.
    """
    leaks, scanned = scan_files(cfg.gallery_dir, model.patterns(include_unacked=final))
    report.leak_scans += 1
    report.scanned_bytes += scanned
    if leaks:
        if cfg.evidence:
            import shutil

            dst = Path(cfg.evidence) / f"leak-cycle-{cycle}"
            shutil.copytree(cfg.gallery_dir, dst / "gallery", dirs_exist_ok=True)
            shutil.copy2(cfg.log_path, dst / "acks.log")
        report.leaks.extend(leaks)
        files = sorted({lk.file for lk in leaks})
        ids = sorted({lk.key.split("#")[0] for lk in leaks})
        report.violate(
            cycle,
            "leak",
            f"{len(leaks)} removed templates ({len(ids)} ids, e.g. "
            f"{ids[:3]}) in {files} ({'final scan' if final else 'after kill'}): "
            + ", ".join(
                f"{lk.key} {lk.matched_bytes} B{' whole' if lk.whole else ''} in {lk.file}"
                for lk in leaks[:3]
            ),
        )


def check_gallery(
    cfg: DurabilityConfig, model: AckModel, report: DurabilityReport, cycle: int
) -> None:
    """Open the gallery and check it against ``model``; record each broken promise.

    Resolves the calls in flight at the kill, then checks that every
    acknowledged enrollment is present with its exact template bytes, that no
    acknowledged removal is listed, identified or verified, and that no
    identity appeared that was never enrolled; finally closes the gallery.
    A failure to open counts as a failed open.
    """
    from pyfacematch import Gallery

    try:
        g = Gallery.open(cfg.gallery_path)
    except Exception as exc:
        report.failed_opens += 1
        report.violate(cycle, "failed open", f"{type(exc).__name__}: {exc}")
        return
    try:
        ids = set(g.identities())
        maybe = {i for r in model.pending for i in r.get("ids", [])}
        counts = {i: g.templates(i).shape[0] for i in maybe if i in ids}
        model.resolve(ids, counts, report, cycle)
        for i, ss in model.present.items():
            report.enrolled_checked += 1
            if i not in ids:
                report.lost += 1
                report.violate(cycle, "lost", f"acknowledged enrollment {i!r} missing")
                continue
            have = {row.tobytes() for row in g.templates(i)}
            want = model.templates(ss)
            missing = sum(row.tobytes() not in have for row in want)
            if missing:
                report.lost += 1
                report.violate(
                    cycle,
                    "lost",
                    f"{missing} of {len(ss)} acknowledged templates of {i!r} missing or altered",
                )
        phantoms = ids - set(model.serials)  # every id ever sent to enroll is in serials
        if phantoms:
            report.phantoms += len(phantoms)
            report.violate(cycle, "phantom", f"identities nobody enrolled: {sorted(phantoms)[:5]}")
        _check_removed(cfg, g, model, ids, report, cycle)
    finally:
        model.removed_this_cycle = []
        try:
            g.close()
        except Exception as exc:
            report.violate(cycle, "close error", f"{type(exc).__name__}: {exc}")


def initial_ids(cfg: DurabilityConfig) -> list[str]:
    """Ids of the identities the supervisor enrolls before the first cycle."""
    return [f"p{s}" for s in range(cfg.initial)]


def _check_removed(
    cfg: DurabilityConfig,
    g: Any,
    model: AckModel,
    ids: set[str],
    report: DurabilityReport,
    cycle: int,
) -> None:
    removed = {**model.removed_unacked, **model.removed}
    back = sorted(i for i in model.removed if i in ids)
    for i in back:
        report.resurrected += 1
        report.violate(cycle, "resurrected", f"acknowledged removal {i!r} listed again")
    if not removed:
        return
    names = [i for i in removed if model.serials.get(i)]
    probes = model.templates([model.serials[i][0] for i in names])
    report.removed_checked += len(names)
    if g.n_templates:
        res = g.identify_arrays(probes, k=min(3, max(1, len(ids))))
        for row in res.identities:
            hits = [x for x in row if x is not None and x in removed and x not in back]
            if hits:
                report.resurrected += 1
                report.violate(cycle, "resurrected", f"identify returned removed {hits[0]!r}")
    rng = random.Random(cycle)
    older = [i for i in names if i not in model.removed_this_cycle]
    sample = list(model.removed_this_cycle) + rng.sample(older, min(cfg.verify_sample, len(older)))
    for i in sample:
        if i in ids or not model.serials.get(i):
            continue
        try:
            g.verify(i, model.templates(model.serials[i][:1])[0])
        except UnknownIdentityError:
            continue
        report.resurrected += 1
        report.violate(cycle, "resurrected", f"verify accepted removed {i!r}")


def create_gallery(cfg: DurabilityConfig, model: AckModel) -> None:
    """Create the run's gallery with ``cfg.initial`` identities (serials 0 …) and record them."""
    from pyfacematch import Gallery

    cfg.gallery_dir.mkdir(parents=True, exist_ok=False)
    ids = initial_ids(cfg)
    x = np.stack([raw_template(cfg.seed, s, cfg.dim) for s in range(cfg.initial)])
    with Gallery.open(cfg.gallery_path, dim=cfg.dim, backend=cfg.backend) as g:
        if ids:
            g.enroll_many(ids, x)
    for s, i in enumerate(ids):
        model.present[i] = [s]
        model.serials[i] = [s]
    model.next_serial = cfg.initial


def _worker_spec(cfg: DurabilityConfig, model: AckModel, cycle: int) -> dict[str, Any]:
    return {
        "gallery": os.fspath(cfg.gallery_path),
        "log": os.fspath(cfg.log_path),
        "seed": cfg.seed,
        "serial": model.next_serial,
        "dim": cfg.dim,
        "lo": max(1, int(cfg.initial * 0.8)),
        "hi": max(2, int(cfg.initial * 1.5)),
        "max_ops": 0,
        "cycle": cycle,
    }


def _worker_entry(spec: dict[str, Any], nice: int) -> None:
    if nice:
        os.nice(nice)
    run_worker(spec)


class _Workers:
    """Starts worker processes: forked from a preloaded fork server (fast) or exec'd afresh.

    The fork server imports pyfacematch, the gallery and FAISS once and runs no
    computation, so each worker starts in milliseconds instead of re-importing
    (seconds on a loaded machine); ``exec`` starts a fresh interpreter each time.
    """

    def __init__(self, how: str, nice: int) -> None:
        import multiprocessing as mp

        if how not in ("forkserver", "exec"):
            raise ValueError(f"spawn must be 'forkserver' or 'exec', got {how!r}")
        self.how, self.nice = how, nice
        if how == "forkserver":
            self.ctx = mp.get_context("forkserver")
            self.ctx.set_forkserver_preload(["pyfacematch.bench.durability", "faiss"])

    def start(self, spec: dict[str, Any]) -> Any:
        if self.how == "forkserver":
            p = self.ctx.Process(target=_worker_entry, args=(spec, self.nice), daemon=True)
            p.start()
            return p
        cmd = [sys.executable, "-m", "pyfacematch.bench.durability", "--worker", json.dumps(spec)]
        return subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, preexec_fn=_lower_priority(self.nice)
        )

    @staticmethod
    def alive(p: Any) -> bool:
        return bool(p.is_alive()) if hasattr(p, "is_alive") else p.poll() is None

    @staticmethod
    def kill_and_wait(p: Any) -> int:
        """SIGKILL ``p`` if alive; return its exit status (negative signal number)."""
        if hasattr(p, "is_alive"):
            if p.is_alive():
                p.kill()
            p.join()
            code = int(p.exitcode)
            p.close()
            return code
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        return int(p.wait())


def _wait_ready(proc: Any, cfg: DurabilityConfig, offset: int, timeout: float = 120.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not _Workers.alive(proc):
            return False
        with open(cfg.log_path, "rb") as f:
            f.seek(offset)
            if b'"t":"ready"' in f.read():
                return True
        time.sleep(0.01)
    return False


def _lower_priority(nice: int) -> Any:
    """A ``preexec_fn`` that adds ``nice`` to the child's niceness (None when 0)."""
    if not nice:
        return None

    def pre() -> None:
        os.nice(nice)

    return pre


def run_durability(cfg: DurabilityConfig, progress: Any = None) -> DurabilityReport:
    """Run the kill cycles of :class:`DurabilityConfig`; see the module docstring.

    Parameters
    ----------
    cfg : DurabilityConfig
    progress : callable or None
        Called as ``progress(cycle, report)`` after each cycle.

    Returns
    -------
    DurabilityReport
    """
    t0 = time.perf_counter()
    report = DurabilityReport(backend=cfg.backend)
    model = AckModel(cfg.seed, cfg.dim)
    create_gallery(cfg, model)
    cfg.log_path.touch()
    offset = cfg.log_path.stat().st_size
    rng = random.Random(cfg.seed)
    workers = _Workers(cfg.spawn, cfg.nice)
    for cycle in range(1, cfg.cycles + 1):
        report.cycles = cycle
        proc = workers.start(_worker_spec(cfg, model, cycle))
        early = rng.random() < cfg.early_kill
        if early:
            time.sleep(rng.uniform(0.0, 0.8 if cfg.spawn == "exec" else 0.15))
        elif _wait_ready(proc, cfg, offset):
            time.sleep(rng.uniform(0.0, cfg.max_delay))
        if workers.alive(proc):
            report.kills += 1
            report.early_kills += early
        code = workers.kill_and_wait(proc)
        if code != -signal.SIGKILL:
            report.worker_exits += 1
            report.violate(cycle, "worker exit", f"worker ended with {code} before the kill")
        records, offset = read_records(cfg.log_path, offset)
        in_flight = model.apply(records, report, cycle)
        report.kills_in_flight[in_flight or ("open" if not records else "between calls")] += 1
        if cfg.scan_every and cycle % cfg.scan_every == 0:
            scan_gallery(cfg, model, report, cycle, final=False)
        check_gallery(cfg, model, report, cycle)
        if progress is not None:
            progress(cycle, report)
    scan_gallery(cfg, model, report, report.cycles, final=True)
    report.seconds = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- report
def format_report(report: DurabilityReport) -> str:
    """The summary table (markdown) and the violations, one per line."""
    acked = sum(report.ops_acknowledged.values())
    by_op = ", ".join(f"{k} {v}" for k, v in sorted(report.ops_acknowledged.items()))
    flight = ", ".join(f"{k} {v}" for k, v in report.kills_in_flight.most_common())
    rows = [
        ("backend", report.backend),
        ("cycles", report.cycles),
        ("kills (while opening)", f"{report.kills} ({report.early_kills})"),
        ("call in flight at kill", flight or "-"),
        ("ops acknowledged", f"{acked} ({by_op})" if by_op else acked),
        (
            "enrollments checked / removals checked",
            f"{report.enrolled_checked} / {report.removed_checked}",
        ),
        ("lost", report.lost),
        ("resurrected", report.resurrected),
        ("failed opens", report.failed_opens),
        ("torn batches", report.torn),
        ("phantom identities", report.phantoms),
        ("worker errors / early exits", f"{report.worker_errors} / {report.worker_exits}"),
        ("leak scans (MB read)", f"{report.leak_scans} ({report.scanned_bytes / 1e6:.1f})"),
        ("leaked files / bytes", f"{report.leaked_files} / {report.leaked_bytes}"),
    ]
    for sc in report.scenarios:
        rows.append((f"scenario: {sc['name']}", sc["summary"]))
    rows.append(("seconds", f"{report.seconds:.0f}"))
    rows.append(("violations", len(report.violations)))
    w = max(len(str(k)) for k, _ in rows)
    lines = [f"| {'measure'.ljust(w)} | value", f"|{'-' * (w + 2)}|------"]
    lines += [f"| {str(k).ljust(w)} | {v}" for k, v in rows]
    kinds = Counter(v.kind for v in report.violations)
    if kinds:
        lines.append("")
        lines.append("violations by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
        seen: Counter[str] = Counter()
        for v in report.violations:
            seen[v.kind] += 1
            if seen[v.kind] <= 5:
                lines.append(f"  cycle {v.cycle}: {v.kind}: {v.detail}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the harness (``python bench/durability.py --help``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--worker"]:
        run_worker(json.loads(args[1]))
        return 0
    from pyfacematch.bench.contention import (
        run_checkpoint_leftovers,
        run_reader_during_remove,
        run_two_writers,
    )

    ap = argparse.ArgumentParser(prog="durability", description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--backend", default="binary")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--initial", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-delay", type=float, default=1.0)
    ap.add_argument("--early-kill", type=float, default=0.1)
    ap.add_argument("--scan-every", type=int, default=10)
    ap.add_argument(
        "--evidence", default=None, help="keep a copy of the folder here whenever a leak is found"
    )
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--spawn", choices=["forkserver", "exec"], default="forkserver")
    ap.add_argument("--folder", default=None, help="working folder (default: a new temp folder)")
    ap.add_argument(
        "--no-scenarios",
        action="store_true",
        help="skip the two-writer, reader-during-remove and checkpoint-leftover scenarios",
    )
    ap.add_argument("--json", default=None, help="also write the report as JSON here")
    a = ap.parse_args(args)
    folder = a.folder or tempfile.mkdtemp(prefix="pfm-durability-")
    Path(folder).mkdir(parents=True, exist_ok=True)
    cfg = DurabilityConfig(
        folder=folder,
        cycles=a.cycles,
        backend=a.backend,
        dim=a.dim,
        initial=a.initial,
        seed=a.seed,
        max_delay=a.max_delay,
        early_kill=a.early_kill,
        scan_every=a.scan_every,
        evidence=a.evidence,
        nice=a.nice,
        spawn=a.spawn,
    )
    print(f"durability: {a.cycles} cycles on {a.backend} in {folder}", flush=True)
    step = max(1, a.cycles // 20)

    def progress(c: int, r: DurabilityReport) -> None:
        if c % step == 0:
            print(
                f"  cycle {c}: kills {r.kills}, acked {sum(r.ops_acknowledged.values())}, "
                f"violations {len(r.violations)}",
                flush=True,
            )

    report = run_durability(cfg, progress)
    if not a.no_scenarios:
        ckpt_backend = a.backend if a.backend not in ("binary", "exact") else "flat"
        runs = [
            (run_two_writers, a.backend),
            (run_reader_during_remove, a.backend),
            (run_checkpoint_leftovers, ckpt_backend),  # needs a backend that writes files
        ]
        for fn, be in runs:
            sc = fn(os.path.join(folder, fn.__name__), backend=be, dim=a.dim)
            report.scenarios.append(sc)
            for v in sc["violations"]:
                report.violate(0, f"{sc['name']}", v)
    print(format_report(report), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(_as_json(report), indent=1, default=str))
    return 1 if report.violations else 0


def _as_json(report: DurabilityReport) -> dict[str, Any]:
    d = {k: v for k, v in vars(report).items() if k not in ("leaks", "violations")}
    d["leaks"] = [vars(lk) for lk in report.leaks]
    d["violations"] = [vars(v) for v in report.violations]
    return d


if __name__ == "__main__":
    raise SystemExit(main())
