"""Resumable streaming jobs: bulk identify (1:N) and verify (1:1) over files of probes.

A job reads probes in chunks of a fixed number of records (bounded memory),
searches each chunk with the gallery's vectorised search on a thread of its
own (the core's threads do the work, the GIL is released) while a reader
thread reads the next chunks and the calling thread commits the previous
chunk, and writes each chunk's results to a **part file** in a work folder next to the output
(``<output>.job/``). Commit protocol, per chunk ``i``:

1. write ``part-<i>`` (and ``rejects-<i>`` if any) to a temporary name,
   ``fsync``, rename, ``fsync`` the folder;
2. write ``manifest.json`` the same way with ``chunks_done = i + 1`` and the
   running counters.

At the end the parts are concatenated into the output (temporary file,
``fsync``, rename), the rejects file likewise, then the JSON summary, and the
work folder is deleted. A job killed at *any* moment and started again with
``--resume`` reads the manifest, skips the ``chunks_done`` committed chunks
(chunk boundaries depend only on the input and the chunk size), redoes the
rest and the concatenation: its output is byte for byte the output of an
uninterrupted run, with no duplicate and no missing probe. The manifest
holds a fingerprint of the job (input file size and modification time,
gallery state, k, threshold, chunk size, formats): resuming a different job
is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from pyfacematch.errors import InputError, PyFaceMatchError
from pyfacematch.gallery import atomic as _fileio
from pyfacematch.io import (
    Chunk,
    ImageFolderReader,
    RecordReader,
    Reject,
    ResultColumns,
    concat_parts,
    rejects_bytes,
    rejects_format,
    result_part_suffix,
    write_rejects,
    write_results_part,
)

__all__ = ["JobSpec", "Progress", "run_job", "prefetch", "result_columns"]

log = logging.getLogger("pyfacematch.jobs")

MANIFEST_VERSION = 1

#: ``process(chunk) -> (result rows, extra rejects, counters)`` of one chunk.
Processor = Callable[[Chunk], "tuple[ResultColumns, list[Reject], dict[str, int]]"]

#: ``results(skip_chunks) -> iterator of (chunk, process(chunk))`` in chunk order: a job whose
#: chunks are read and processed elsewhere (on a Dask cluster, :mod:`pyfacematch.distributed`).
ChunkResults = Callable[
    [int], "Iterator[tuple[Chunk, tuple[ResultColumns, list[Reject], dict[str, int]]]]"
]


# --------------------------------------------------------------------------- progress
def _fmt_secs(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}"


class Progress:
    """Progress of a job: a tqdm bar on a terminal, plain log lines otherwise.

    Parameters
    ----------
    total : int or None
        Records expected (None: unknown, no ETA).
    desc : str
        Label (``"identify"``).
    quiet : bool
        Print nothing.
    interval : float
        Seconds between plain log lines when the stream is not a terminal.
    stream : text file
        Where to print (standard error).
    initial : int
        Records already done (resumed job).
    note : callable or None
        Text appended to each plain line (e.g. a cluster's tasks done).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        quiet: bool = False,
        interval: float = 10.0,
        stream: TextIO | None = None,
        initial: int = 0,
        unit: str = "probe",
        note: Callable[[], str] | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.quiet = quiet
        self.interval = float(interval)
        self.stream = stream or sys.stderr
        self.done = int(initial)
        self.initial = int(initial)
        self.unit = unit
        self.note = note
        self.t0 = time.monotonic()
        self.last = self.t0
        self.printed = self.done  # count shown by the last plain line
        self.bar: Any = None
        if not quiet and _isatty(self.stream):
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total,
                    initial=initial,
                    desc=desc,
                    unit=f" {unit}s",
                    unit_scale=True,
                    file=self.stream,
                    dynamic_ncols=True,
                    smoothing=0.1,
                )
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self.bar = None

    def update(self, n: int) -> None:
        self.done += int(n)
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(int(n))
            if self.note is not None:
                self.bar.set_postfix_str(self.note(), refresh=False)
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)
            self.printed = self.done

    def _line(self, now: float) -> None:
        el = max(now - self.t0, 1e-9)
        rate = (self.done - self.initial) / el
        msg = f"{self.desc}: {self.done:,}"
        if self.total:
            msg += f"/{self.total:,} {self.unit}s ({100.0 * self.done / self.total:.1f}%)"
        else:
            msg += f" {self.unit}s"
        msg += f", {rate:,.0f} {self.unit}s/s, elapsed {_fmt_secs(el)}"
        if self.total and rate > 0:
            msg += f", ETA {_fmt_secs(max(0, self.total - self.done) / rate)}"
        if self.note is not None:
            msg += f", {self.note()}"
        print(msg, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif not self.quiet and self.done > self.printed:
            self._line(time.monotonic())
            self.printed = self.done


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- pipeline
def prefetch(it: Iterator[Chunk], depth: int = 2) -> Iterator[Chunk]:
    """Read ahead up to ``depth`` chunks on a thread (errors are re-raised in order)."""
    return _ahead(lambda: iter(it), depth, "pyfacematch-reader", join_timeout=5.0)


def map_ahead(
    fn: Callable[[Chunk], Any],
    it: Iterator[Chunk],
    *,
    proceed: Callable[[], bool] = lambda: True,
) -> Iterator[tuple[Chunk, Any, float]]:
    """Apply ``fn`` to each chunk of ``it`` on a thread, one chunk ahead of the consumer.

    Yields ``(chunk, fn(chunk), start time)`` in input order. The thread starts ``fn`` on the
    next chunk as soon as the consumer has *taken* the previous result, so the consumer's work
    on it (the job's commit: part file, manifest) overlaps with ``fn`` (the search, which
    releases the GIL) of the next one, and at most one result waits. Before each ``fn`` the
    thread asks ``proceed()``; when it says no (Ctrl-C was asked for) the thread stops and the
    consumer gets ``KeyboardInterrupt`` in place of the next result -- never a short, seemingly
    complete stream. An exception of ``fn`` or of ``it`` is re-raised to the consumer in its
    place, after the results before it. When the consumer stops early (Ctrl-C, an error in the
    commit) the thread finishes the call in progress and is joined, so nothing (the gallery) is
    used after the job returns.
    """

    def gen(taken: threading.Event, stop: threading.Event) -> Iterator[tuple[Chunk, Any, float]]:
        try:
            for c in it:
                while not taken.wait(0.1):  # the previous result is taken (or none yet)
                    if stop.is_set():
                        return
                taken.clear()
                if not proceed():
                    raise KeyboardInterrupt
                t = time.monotonic()
                yield c, fn(c), t
        finally:  # stop the reader thread here, before the job closes the reader
            close = getattr(it, "close", None)
            if close is not None:
                close()

    return _ahead(gen, 1, "pyfacematch-search", join_timeout=None, handshake=True)


def _ahead(
    make: Callable[..., Iterator[Any]],
    depth: int,
    name: str,
    *,
    join_timeout: float | None,
    handshake: bool = False,
) -> Iterator[Any]:
    """Run the iterator ``make()`` on a thread, ``depth`` items ahead (errors re-raised in order).

    ``join_timeout=None`` waits for the thread to end on close (in short steps, so a second
    Ctrl-C still interrupts the wait). ``handshake``: ``make(taken, stop)`` gets an event set
    each time the consumer has taken an item (set at the start) and the stop event.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()
    taken = threading.Event()
    taken.set()
    done = object()

    def run() -> None:
        try:
            src = make(taken, stop) if handshake else make()
            for c in src:
                while not stop.is_set():
                    try:
                        q.put(("ok", c), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", done))
        except BaseException as exc:  # delivered to the consumer
            q.put(("err", exc))

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    try:
        while True:
            kind, val = q.get()
            taken.set()
            if kind == "ok":
                yield val
            elif kind == "err":
                raise val
            else:
                return
    finally:
        stop.set()
        deadline = None if join_timeout is None else time.monotonic() + join_timeout
        while t.is_alive() and (deadline is None or time.monotonic() < deadline):
            with contextlib.suppress(queue.Empty):
                while True:
                    q.get_nowait()
            t.join(timeout=0.1)


def result_columns(
    probe_ids: list[str],
    identities: np.ndarray,
    scores: np.ndarray,
    threshold: float | None,
) -> ResultColumns:
    """Result rows of a batch: one per probe and ranked candidate.

    Parameters
    ----------
    probe_ids : list of str, length M
    identities : object (M, k)
        Candidate ids, None for padding.
    scores : float32 (M, k)
    threshold : float or None
        ``decision`` is ``"match"`` when score ≥ threshold, else
        ``"no-match"``; None when no threshold.

    A probe with no candidate at all gets one row with rank 0, no identity,
    no score and decision ``"no-match"`` (None without threshold).
    """
    m = len(probe_ids)
    k = identities.shape[1] if identities.ndim == 2 else 0
    # vectorised (no per-row Python): the rows of probe i are its valid candidates in rank
    # order, or one placeholder row (rank 0) when it has none -- a (m, k + 1) "emit" mask whose
    # last column is the placeholder, taken in row-major order.
    ident = np.empty((m, k + 1), object)
    sc = np.full((m, k + 1), np.nan, np.float32)
    valid = np.zeros((m, k + 1), bool)
    if k:
        # reshape: an empty batch (every record of a chunk rejected) gives (0, k), not (0,)
        ident[:, :k] = np.asarray(identities, object).reshape(m, k)
        sc[:, :k] = np.asarray(scores, np.float32).reshape(m, k)
        present = np.asarray(ident[:, :k] != None, bool)  # noqa: E711 (element-wise)
        valid[:, :k] = present & ~np.isnan(sc[:, :k])
    valid[:, k] = ~valid[:, :k].any(axis=1)
    rows, cols = np.nonzero(valid)
    rank = np.cumsum(valid[:, :k], axis=1, dtype=np.int32)
    ranks = np.zeros(len(rows), np.int32)
    real = cols < k
    ranks[real] = rank[rows[real], cols[real]]
    pid = np.empty(m, object)
    pid[:] = probe_ids
    s = sc[rows, cols]
    if threshold is None:
        dec: list[str | None] = [None] * len(rows)
    else:
        acc = np.nan_to_num(s, nan=-np.inf) >= np.float32(threshold)
        dec = np.where(acc, "match", "no-match").astype(object).tolist()
    return ResultColumns(pid[rows].tolist(), ranks, ident[rows, cols].tolist(), s, dec)


# --------------------------------------------------------------------------- job
@dataclass
class JobSpec:
    """What a streaming job reads and writes.

    Attributes
    ----------
    command : str
        ``"identify"`` or ``"verify"`` (recorded in the summary).
    output : str
        Result file.
    output_format : str
        ``"csv"``, ``"jsonl"`` or ``"parquet"``.
    rejects : str
        Rejects file (written when there are rejects).
    summary : str
        JSON summary file.
    fingerprint : dict
        Everything that determines the output (checked on resume).
    info : dict
        Extra summary fields (backend, threshold …).
    """

    command: str
    output: str
    output_format: str
    rejects: str
    summary: str
    fingerprint: dict[str, Any]
    info: dict[str, Any]


def _atomic_json(path: Path, obj: Any) -> None:
    _fileio.atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def file_fingerprint(path: str) -> dict[str, Any]:
    """Path, size and modification time of an input (``"-"`` for standard input)."""
    if path == "-":
        return {"path": "-"}
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _new_counters() -> dict[str, Any]:
    return {
        "records": 0,
        "processed": 0,
        "rows_written": 0,
        "rejected": 0,
        "reject_reasons": {},
        "chunks_done": 0,
        "seconds": 0.0,
    }


def run_job(
    spec: JobSpec,
    reader: RecordReader | ImageFolderReader,
    process: Processor,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    log_interval: float = 10.0,
    stream: TextIO | None = None,
    results: ChunkResults | None = None,
    progress_note: Callable[[], str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a streaming job; return its summary.

    Parameters
    ----------
    spec : JobSpec
    reader : RecordReader
        The probes (its chunk size fixes the chunk boundaries).
    process : callable
        ``process(chunk) -> (ResultColumns, extra rejects, counters)``.
    resume : bool
        Continue after the last committed chunk of an unfinished job with
        the same fingerprint.
    overwrite : bool
        Start again even if the output or an unfinished job exists.
    quiet : bool
        No progress output.
    log_interval : float
        Seconds between plain progress lines (not on a terminal).
    results : callable or None
        ``results(skip_chunks)`` yields ``(chunk, process(chunk))`` in chunk order, computed
        elsewhere (a cluster); None: chunks are read from ``reader`` and ``process``-ed here.
        Everything else (part files, manifest, resume, the output) is the same.
    progress_note : callable or None
        Text appended to each progress line (a cluster's tasks done).

    Returns
    -------
    dict
        The summary (also written to ``spec.summary``).

    Raises
    ------
    InputError
        Bad record with ``on_error="stop"`` (names the file and row); an
        existing output without ``overwrite``/``resume``; resuming a job whose
        fingerprint differs.
    """
    out = Path(spec.output)
    work = out.with_name(out.name + ".job")
    manifest_path = work / "manifest.json"
    summary_path = Path(spec.summary)
    fp = dict(spec.fingerprint)
    fp["command"] = spec.command
    fp["output_format"] = spec.output_format
    fp["chunk_size"] = reader.chunk_size
    fp["on_error"] = reader.on_error
    fp = json.loads(json.dumps(fp, sort_keys=True))  # normalise for comparisons

    man: dict[str, Any] | None = None
    work_existed = work.exists()
    if work_existed:
        if resume:
            man = _read_json(manifest_path)
            if man is None:
                log.info("work folder %s has no manifest yet: starting from the first chunk", work)
            elif man.get("version") != MANIFEST_VERSION or man.get("fingerprint") != fp:
                diff = _diff_keys(man.get("fingerprint") or {}, fp)
                raise InputError(
                    f"cannot resume: the unfinished job in {work} was started with other "
                    f"inputs or options ({', '.join(diff) or 'format version'} differ); "
                    "run it with the same input and options, or pass --overwrite to start again"
                )
        elif overwrite:
            shutil.rmtree(work)
        else:
            raise InputError(
                f"an unfinished job writes to {out} (work folder {work}): pass --resume to "
                "continue it or --overwrite to start again"
            )
    elif resume:
        prev = _read_json(summary_path)
        if (
            prev is not None
            and prev.get("status") == "complete"
            and prev.get("fingerprint") == fp
            and out.exists()
        ):
            if not quiet:
                print(
                    f"{spec.command}: job already complete; {out} is up to date",
                    file=stream or sys.stderr,
                )
            prev["resumed"] = True
            return prev
    if not work_existed and not overwrite and out.exists():
        raise InputError(f"output {out} exists: pass --overwrite to replace it")
    if man is None:
        work.mkdir(parents=True, exist_ok=True)
        man = {"version": MANIFEST_VERSION, "fingerprint": fp, **_new_counters(), "runs": 0}
        _atomic_json(manifest_path, man)
    man["runs"] = int(man.get("runs", 0)) + 1
    _atomic_json(manifest_path, man)  # a resumed run is known as such even if killed at once
    done = int(man["chunks_done"])
    resumed = done > 0 or int(man["runs"]) > 1
    suffix = result_part_suffix(spec.output_format)
    rej_fmt = rejects_format(spec.rejects)

    # stray parts of an uncommitted chunk are simply overwritten; drop later ones
    for f in work.iterdir():
        if f.name.startswith(("part-", "rejects-")):
            with contextlib.suppress(ValueError):
                if int(f.name.split("-")[1].split(".")[0]) >= done:
                    f.unlink()

    for f in out.parent.glob(f"{out.name}.tmp-*"):  # left by a kill during concatenation
        with contextlib.suppress(OSError):
            f.unlink()
    total = reader.count_records()
    prog = Progress(
        total,
        spec.command,
        quiet=quiet,
        interval=log_interval,
        stream=stream,
        initial=min(done * reader.chunk_size, total or done * reader.chunk_size),
        note=progress_note,
    )
    t_start = time.monotonic()
    processed_now = 0
    interrupt = _ChunkInterrupt(quiet=quiet, stream=stream)
    chunk_stream: Iterator[tuple[Chunk, Any, float]] | None = None
    try:
        interrupt.install()
        if results is None:
            # three stages overlap: the reader thread reads ahead, the search thread processes
            # the next chunk while this thread commits (part file, manifest) the previous one
            chunk_stream = map_ahead(
                process,
                prefetch(reader.chunks(skip_chunks=done)),
                proceed=lambda: not interrupt.asked,
            )
        else:
            chunk_stream = ((c, r, time.monotonic()) for c, r in results(done))
        for chunk, (cols, extra, counts), t_chunk in chunk_stream:
            rejects = sorted(chunk.rejects + extra, key=lambda r: r.row)
            i = chunk.index
            _killpoint("before-part", i)
            write_results_part(work / f"part-{i:06d}{suffix}", spec.output_format, cols)
            _killpoint("after-part", i)
            if rejects:
                _fileio.atomic_write(
                    work / f"rejects-{i:06d}.{rej_fmt}", rejects_bytes(rej_fmt, rejects)
                )
            man["chunks_done"] = i + 1
            man["records"] += chunk.count
            man["processed"] += chunk.count - len(rejects)
            man["rows_written"] += len(cols)
            man["rejected"] += len(rejects)
            reasons = man["reject_reasons"]
            for r in rejects:
                reasons[r.kind] = reasons.get(r.kind, 0) + 1
            for key, v in counts.items():
                man[key] = int(man.get(key, 0)) + int(v)
            man["seconds"] = float(man["seconds"]) + (time.monotonic() - t_chunk)
            _atomic_json(manifest_path, man)
            _killpoint("after-manifest", i)
            processed_now += chunk.count - len(rejects)
            prog.update(chunk.count)
            if interrupt.asked and results is not None:  # Ctrl-C: stop, this chunk committed
                raise KeyboardInterrupt
            # (local: the chunk being searched is committed next, then the search thread
            # raises KeyboardInterrupt instead of starting another one)
        if interrupt.asked:  # never finalise a job that was asked to stop
            raise KeyboardInterrupt
    finally:
        if chunk_stream is not None:  # joins the search and reader threads
            close = getattr(chunk_stream, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # never mask the job's own error
                    close()
        interrupt.restore()
        prog.close()
        reader.close()
    elapsed = time.monotonic() - t_start

    # finalise: concatenate, rejects, summary, remove the work folder
    n = int(man["chunks_done"])
    parts = [work / f"part-{i:06d}{suffix}" for i in range(n)]
    concat_parts(parts, out, spec.output_format)
    _killpoint("after-concat", n)
    rej_parts = [p for p in (work / f"rejects-{i:06d}.{rej_fmt}" for i in range(n)) if p.exists()]
    rej_path = Path(spec.rejects)
    if int(man["rejected"]):
        write_rejects(rej_path, parts=rej_parts)
    elif rej_path.exists() and overwrite:
        rej_path.unlink()
    summary: dict[str, Any] = {
        "command": spec.command,
        "status": "complete",
        "exit_code": 1 if int(man["rejected"]) else 0,
        "output": str(out),
        "output_format": spec.output_format,
        "rejects_file": str(rej_path) if int(man["rejected"]) else None,
        "records": int(man["records"]),
        "processed": int(man["processed"]),
        "rows_written": int(man["rows_written"]),
        "rejected": int(man["rejected"]),
        "reject_reasons": dict(sorted(man["reject_reasons"].items())),
        "chunks": n,
        "chunk_size": reader.chunk_size,
        "resumed": resumed,
        "runs": int(man["runs"]),
        "seconds_this_run": round(elapsed, 3),
        "processing_seconds_total": round(float(man["seconds"]), 3),
        "probes_per_second_this_run": round(processed_now / elapsed, 1) if elapsed > 0 else None,
        "fingerprint": fp,
    }
    for key in man:
        if (
            key not in summary
            and key not in _new_counters()
            and key
            not in (
                "version",
                "fingerprint",
                "runs",
            )
        ):
            summary[key] = man[key]
    summary.update(spec.info)
    _atomic_json(summary_path, summary)
    _killpoint("after-summary", n)
    shutil.rmtree(work, ignore_errors=True)
    _fileio.fsync_dir(out.parent)
    return summary


class _ChunkInterrupt:
    """Ctrl-C during a job stops it at the end of the chunk being processed.

    A ``KeyboardInterrupt`` raised at an arbitrary point can land inside a lock's ``with``
    block of the reader thread's queue or the gallery and leave it held, and the process then
    hangs in its clean-up; so the first SIGINT only asks the job to stop, and :func:`run_job`
    raises ``KeyboardInterrupt`` itself once the chunk is committed. A second SIGINT interrupts at
    once. Only in the main thread (where Python delivers signals), and only when SIGINT has
    Python's default handler (an application's own handler is left alone).
    """

    def __init__(self, *, quiet: bool, stream: TextIO | None) -> None:
        self.asked = False
        self.quiet = quiet
        self.stream = stream
        self.previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return
        self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        if not self.quiet:
            print(
                "interrupt: stopping after the current chunk (Ctrl-C again to stop now)",
                file=self.stream or sys.stderr,
                flush=True,
            )

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


def _killpoint(stage: str, i: int) -> None:
    """Test hook: ``PYFACEMATCH_TEST_KILL=<stage>:<chunk>`` SIGKILLs the process there.

    Used by the kill-and-resume tests to die at each step of the commit
    protocol; unset in normal use (one environment lookup per chunk).
    """
    want = os.environ.get("PYFACEMATCH_TEST_KILL")
    if want and want == f"{stage}:{i}":
        os.kill(os.getpid(), 9)


def _diff_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def describe_error(exc: BaseException) -> str:
    """One line for an error at the command line."""
    if isinstance(exc, PyFaceMatchError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        return f"cannot access{where}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
