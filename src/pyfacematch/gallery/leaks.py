"""The data-leak audit of a gallery: every file it and its jobs wrote, examined.

What is examined: the database and its ``-wal`` / ``-shm`` files, the index
folder (checkpoints, temporary files), the key files, the lock file, files
beside the gallery named ``<db>.*`` (rejects files, summaries …), and any job
output, rejects file or log the caller names. What is reported (see
:mod:`pyfacematch.security.leaks` for how templates are recognised):

- **leak**: plaintext templates (unit-norm float32 runs of the gallery's
  dimension) anywhere — in an unencrypted database or checkpoint, in a job
  output or log; templates of no enrolled identity (a removed identity's, e.g.
  in an old checkpoint file); files or folders readable by other users;
  numbers that spell a template in a text file; unit-norm float16 / bfloat16
  runs; exact float16, bfloat16, int8 (compact) or 1-bit-code copies of
  enrolled templates; face landmark sets of a known scheme (float32);
- **warning**: files writable by others or owned by someone else, stray files
  in the index folder, a broken audit chain, an unencrypted gallery;
- **info**: where the keys come from, notes of the audit check.

The audit is clean (``clean: true``, exit 0) when there is no leak and no warning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.core import scoring
from pyfacematch.core.compact import CompactMatrix
from pyfacematch.gallery.audit import audit_key_provider, verify_store
from pyfacematch.gallery.checkpoints import CHECKPOINT_NAME
from pyfacematch.gallery.encryption import checkpoint_context
from pyfacematch.gallery.filemodes import sqlite_files
from pyfacematch.gallery.secret import ENV_VAR, KeyProvider
from pyfacematch.gallery.store import Store
from pyfacematch.keys.schemes import get_scheme
from pyfacematch.security.envelope import KeyRing
from pyfacematch.security.leaks import (
    CopyFinder,
    Finding,
    find_text_landmarks,
    find_text_vectors,
    find_unit_vectors,
    iter_files,
    mode_findings,
    scan_file,
    unit_vectors_in,
)

__all__ = ["copy_forms", "landmark_shapes", "leak_audit"]

#: Landmark schemes whose sets are looked for (2-D, and 3-D where the scheme has depth).
LANDMARK_SCHEMES = ("ibug68", "mediapipe478", "dense200")


def landmark_shapes() -> dict[str, np.ndarray]:
    """Mean shapes of the schemes looked for: ``name`` (x, y) and ``name-3d`` (x, y, z)."""
    out: dict[str, np.ndarray] = {}
    for name in LANDMARK_SCHEMES:
        try:
            m = np.asarray(get_scheme(name).mean_shape, np.float64)
        except Exception:  # noqa: BLE001 - a scheme that is not installed is not looked for
            continue
        out[name] = m[:, :2]
        if m.shape[1] == 3:
            out[name + "-3d"] = m
    return out


def copy_forms(templates: np.ndarray, center: np.ndarray | None) -> dict[str, np.ndarray]:
    """Other encodings of the templates a file may hold: float16, bfloat16 and int8 (the
    compact store's), 1-bit sign codes (plain, and centred as the binary backend packs)."""
    x = np.ascontiguousarray(templates, np.float32)
    n, d = x.shape
    if n == 0:
        return {}
    w = CopyFinder.PREFIX  # only a prefix is compared: keep that much of each form
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, n, 65536):  # bounded memory at millions of templates
        c = x[i : i + 65536]
        got = {
            "float16": c[:, : w // 2 + 1].astype("<f2").view(np.uint8),
            "bfloat16": CompactMatrix.from_float32(c, kind="bf16").codes[:, :d].view(np.uint8),
            "int8": CompactMatrix.from_float32(c, kind="int8").codes[:, :d].view(np.uint8),
            "1-bit code": scoring.pack_signs(c),
        }
        if center is not None:
            got["1-bit code (centred)"] = scoring.pack_signs(c, center=center)
        for k, v in got.items():
            parts.setdefault(k, []).append(np.ascontiguousarray(v[:, :w]))
    return {k: np.concatenate(v) for k, v in parts.items()}


_TEXT_SUFFIXES = {".csv", ".jsonl", ".json", ".txt", ".log", ".tsv", ".md"}


def _targets(db: Path, extra: list[Path]) -> list[tuple[Path, str]]:
    """(file, role) pairs to examine."""
    out: list[tuple[Path, str]] = [(f, "database") for f in sqlite_files(db) if f.exists()]
    idx = db.with_name(db.name + ".index")
    if idx.is_dir():
        out += [(f, "index") for f in iter_files(idx)]
    for f in sorted(db.parent.glob(db.name + ".*")):
        if f.is_file() and not f.is_symlink() and all(f != g for g, _ in out):
            out.append((f, "beside"))
    for e in extra:
        out += [(f, "job") for f in iter_files(e)]
    return out


def leak_audit(
    store: Store,
    ring: KeyRing | None,
    keys: KeyProvider | None,
    live: set[int],
    *,
    cancelable: bool,
    extra: Sequence[str | os.PathLike[str]] = (),
    templates: np.ndarray | None = None,
    center: np.ndarray | None = None,
) -> dict[str, Any]:
    """Examine every file of the gallery (and ``extra`` paths); the report as a dict.

    Parameters
    ----------
    store : Store
    ring : KeyRing or None
        The key ring (encrypted galleries), to read old checkpoint files.
    keys : KeyProvider or None
        Where the master key comes from.
    live : set of int
        ``hash()`` of the float32 bytes of every live template as stored.
    cancelable : bool
    extra : paths
        Job outputs, rejects files, logs (files or folders).
    templates : float32 (n, dim) or None
        The live templates as stored: their float16, bfloat16, int8 and 1-bit forms are
        looked for too.
    center : float32 (dim,) or None
        The binary backend's centre (its codes are signs of ``templates - center``).
    """
    assert store.path is not None
    db = store.path
    dim = store.dim
    findings: list[Finding] = []
    scanned = nbytes = 0
    extra_paths = [Path(e) for e in extra]
    for p in extra_paths:
        if not p.exists():
            findings.append(Finding("warning", "missing", os.fspath(p), "named path not found"))
    folders = {db.parent}
    idx = db.with_name(db.name + ".index")
    if idx.exists():
        folders.add(idx)
    for d in sorted(folders):
        for f in mode_findings(d):
            if d == db.parent and f.kind == "permissions" and not (d.stat().st_mode & 0o022):
                # a readable parent folder only shows names; the files' own modes matter
                continue
            findings.append(f)
    recorded = set(store.checkpoint_files())
    copies = None if templates is None else CopyFinder(copy_forms(templates, center))
    shapes = landmark_shapes()
    for path, role in _targets(db, extra_paths):
        secret = path.name.endswith(".key")
        findings += mode_findings(path, secret=secret)
        if secret or path.name.endswith(".lock"):
            continue
        if role == "index" and not CHECKPOINT_NAME.fullmatch(path.name):
            findings.append(
                Finding("warning", "stray-file", os.fspath(path), "not a file the gallery writes")
            )
        elif role == "index" and path.name not in recorded:
            findings.append(
                Finding(
                    "warning",
                    "stale-checkpoint",
                    os.fspath(path),
                    "a checkpoint file the gallery no longer records (it may hold erased "
                    "templates); a writable open deletes it",
                )
            )
        plain = None
        if role == "index" and ring is not None and CHECKPOINT_NAME.fullmatch(path.name):
            plain = _open_checkpoint(ring, path)
        try:
            vecs, size = find_unit_vectors(path, dim)
        except OSError as exc:
            findings.append(Finding("warning", "unreadable", os.fspath(path), str(exc)))
            continue
        scanned += 1
        nbytes += size
        n_live = sum(1 for _, b in vecs if hash(b) in live)
        n_other = len(vecs) - n_live
        if plain is not None:  # encrypted on disk: only templates of no enrolled identity count
            n_other += sum(1 for _, b in unit_vectors_in(plain, dim) if hash(b) not in live)
        what = "cancelable (transformed) " if cancelable else ""
        if n_live:
            findings.append(
                Finding(
                    "leak",
                    "plaintext-template",
                    os.fspath(path),
                    f"{n_live} {what}templates of enrolled identities in clear",
                )
            )
        if n_other:
            findings.append(
                Finding(
                    "leak",
                    "orphan-template",
                    os.fspath(path),
                    f"{n_other} unit-vector runs of dimension {dim} that belong to no enrolled "
                    "identity (a removed identity's template, or a probe)"
                    + (" inside an encrypted checkpoint" if plain is not None else ""),
                )
            )
        # other dtypes, exact copies, landmarks (skipped where float32 templates already
        # condemn the file: an unencrypted database would take long and say nothing new)
        other = scan_file(path, dim, copies, None if vecs else shapes)
        for kind, n in other["units"].items():
            findings.append(
                Finding(
                    "leak",
                    "plaintext-template",
                    os.fspath(path),
                    f"{n} unit-norm runs of {dim} {kind} values (templates in {kind})",
                )
            )
        for form, rows in sorted(other["copies"].items()):
            findings.append(
                Finding(
                    "leak",
                    "template-copy",
                    os.fspath(path),
                    f"{form} copies of {len(rows)} enrolled {what}templates",
                )
            )
        for (scheme, kind), n in sorted(other["landmarks"].items()):
            findings.append(
                Finding(
                    "leak",
                    "landmarks",
                    os.fspath(path),
                    f"{n} face landmark sets fitting the {scheme} scheme ({kind} coordinates)",
                )
            )
        if role in ("job", "beside") and path.suffix.lower() in _TEXT_SUFFIXES:
            for scheme, n in sorted(find_text_landmarks(path, shapes).items()):
                findings.append(
                    Finding(
                        "leak",
                        "landmarks",
                        os.fspath(path),
                        f"{n} face landmark sets fitting the {scheme} scheme (as text)",
                    )
                )
            t = find_text_vectors(path, dim)
            if t:
                findings.append(
                    Finding(
                        "leak",
                        "template-as-text",
                        os.fspath(path),
                        f"{t} lines hold {dim} or more numbers of unit norm (a template as text)",
                    )
                )
    # keys and encryption
    keyinfo: dict[str, Any] = {
        "encrypted": ring is not None,
        "cancelable": cancelable,
        "master_key": None if keys is None else keys.description,
    }
    if ring is None:
        findings.append(
            Finding(
                "warning",
                "unencrypted",
                os.fspath(db),
                "templates are not encrypted at rest: create galleries with encrypt=True",
            )
        )
    if os.environ.get(ENV_VAR) is None and db.with_name(db.name + ".key").exists():
        findings.append(
            Finding(
                "info",
                "key-beside-gallery",
                os.fspath(db.with_name(db.name + ".key")),
                "the master key file sits beside the database: a copy of the whole folder "
                "holds both; keep it on another volume or use PYFACEMATCH_GALLERY_KEY",
            )
        )
    akeys = audit_key_provider(db)
    keyinfo["audit_key"] = akeys.description
    audit = verify_store(store, akeys)
    if not audit["ok"]:
        bad = audit["first_bad"]
        findings.append(
            Finding(
                "warning",
                "audit-chain",
                os.fspath(db),
                f"audit record {bad['seq']}: {bad['reason']}",
            )
        )
    clean = not any(f.severity in ("leak", "warning") for f in findings)
    return {
        "gallery": os.fspath(db),
        "clean": clean,
        "dim": dim,
        "files_scanned": scanned,
        "bytes_scanned": nbytes,
        "keys": keyinfo,
        "audit": audit,
        "findings": [f.as_json() for f in findings],
    }


def _open_checkpoint(ring: KeyRing, path: Path) -> bytes | None:
    """The plaintext of an encrypted checkpoint file (named ``<backend>-g<gen>-<hex>.faiss``)."""
    try:
        backend, rest = path.name.split("-g", 1)
        gen = int(rest.split("-", 1)[0])
        data = path.read_bytes()
    except (ValueError, OSError):
        return None
    return ring.open_blob(data, checkpoint_context(backend, gen))
