"""Tamper-evident audit trail: hash-chained records and HMAC-signed checkpoints.

Each record ``i`` carries ``hash_i = SHA-256(hash_{i-1} ‖ canonical JSON of the
record)``, the first one chained to a genesis value derived from the gallery's
uuid (or, after pruning, to the signed anchor that stands for the pruned
records). Every :data:`CHECKPOINT_EVERY` records, and when a gallery closes, a
checkpoint ``(seq, head hash, HMAC-SHA256(audit key, seq ‖ head))`` is stored.
The audit key is *not* the data key nor the gallery's master key: it comes
from its own key file (``<db>.audit.key``) or ``PYFACEMATCH_AUDIT_KEY``, so it
can be held by whoever audits the gallery.

What :func:`verify_chain` detects: an edited, inserted, deleted or reordered
record anywhere before the newest checkpoint, and an edited record after it
unless the whole tail is recomputed. What it cannot detect: whoever can write
the database and delete records *after* the newest checkpoint (or rewrite the
tail consistently) leaves a valid, shorter chain. Anchor the head elsewhere
(``pyfacematch audit verify`` prints it; keep it in a write-once log, a ticket,
or send it to the auditor) and pass it back with ``--expect-head SEQ:HASH``.

Records never hold biometric data: an actor string, an action, an identity
id, counts, purposes and the ids returned above threshold.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHECKPOINT_EVERY",
    "AuditRecord",
    "checkpoint_mac",
    "genesis",
    "record_hash",
    "verify_chain",
]

#: A signed checkpoint is written after this many records (and at close).
CHECKPOINT_EVERY = 256


@dataclass(frozen=True)
class AuditRecord:
    """One record of the trail as stored."""

    seq: int
    ts: float
    actor: str | None
    action: str
    identity: str | None
    detail: str | None
    prev: str | None
    hash: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "identity": self.identity,
            "detail": self.detail,
            "prev": self.prev,
            "hash": self.hash,
        }


def genesis(gallery_id: str) -> str:
    """The value the first record of a gallery's trail is chained to."""
    return hashlib.sha256(b"pyfacematch-audit-v1\0" + gallery_id.encode()).hexdigest()


def record_hash(
    prev: str,
    seq: int,
    ts: float,
    actor: str | None,
    action: str,
    identity: str | None,
    detail: str | None,
) -> str:
    """SHA-256 over the previous hash and the record's canonical JSON."""
    body = _CANONICAL.encode([int(seq), repr(float(ts)), actor, action, identity, detail])
    return hashlib.sha256(prev.encode("ascii") + b"\n" + body.encode("ascii")).hexdigest()


# The canonical JSON of a record: ``json.dumps(..., ensure_ascii=True, separators=(",", ":"))``,
# the same bytes, with one encoder for every record instead of a new one per call (bulk enroll
# hashes one record per identity).
_CANONICAL = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def checkpoint_mac(key: bytes, gallery_id: str, seq: int, head: str) -> str:
    """HMAC-SHA256 of a checkpoint (gallery uuid, seq, head hash) under the audit key."""
    msg = f"pyfacematch-audit-checkpoint-v1\0{gallery_id}\0{int(seq)}\0{head}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def verify_chain(
    records: Iterable[AuditRecord],
    checkpoints: Sequence[tuple[int, str, str]],
    *,
    key: bytes | None,
    gallery_id: str,
    start: tuple[int, str] | None = None,
    expect_head: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """Recompute the chain; report the first bad record.

    Parameters
    ----------
    records : AuditRecord, in ``seq`` order
    checkpoints : (seq, head, mac) tuples
    key : bytes or None
        The audit key (None: checkpoint MACs are not checked, and the report says so).
    gallery_id : str
    start : (seq, hash) or None
        Anchor of a pruned trail (records up to ``seq`` were pruned), else the genesis.
    expect_head : (seq, hash) or None
        A head anchored elsewhere: the trail must contain it.

    Returns
    -------
    dict
        ``ok``, ``records``, ``head`` (``{"seq", "hash"}``), ``checkpoints``
        (how many verified), ``first_bad`` (``{"seq", "reason"}`` or None) and
        ``warnings``.
    """
    prev_seq, prev = start if start is not None else (0, genesis(gallery_id))
    by_seq = {int(s): (h, m) for s, h, m in checkpoints}
    seen: dict[int, str] = {}
    n = 0
    bad: dict[str, Any] | None = None
    warnings: list[str] = []
    for r in records:
        n += 1
        if r.seq != prev_seq + 1:
            what = "missing" if r.seq > prev_seq + 1 else "out of order or duplicated"
            bad = {
                "seq": r.seq,
                "reason": f"records {prev_seq + 1}…{r.seq - 1} are {what}"
                if r.seq > prev_seq + 1
                else f"record {r.seq} follows {prev_seq}: {what}",
            }
            break
        if r.prev != prev:
            bad = {
                "seq": r.seq,
                "reason": "its link to the previous record is wrong (a record before it was "
                "deleted, inserted or reordered)",
            }
            break
        want = record_hash(prev, r.seq, r.ts, r.actor, r.action, r.identity, r.detail)
        if r.hash != want:
            bad = {"seq": r.seq, "reason": "its content does not match its hash (edited)"}
            break
        prev, prev_seq = want, r.seq
        seen[r.seq] = want
    n_ck = 0
    if bad is None:
        for s, (h, m) in sorted(by_seq.items()):
            if s > prev_seq:
                bad = {
                    "seq": prev_seq + 1,
                    "reason": f"a signed checkpoint covers records up to {s} but the trail "
                    f"ends at {prev_seq}: newer records were deleted",
                }
                break
            if s in seen and seen[s] != h:
                bad = {"seq": s, "reason": "the signed checkpoint at this record disagrees"}
                break
            if key is not None and not hmac.compare_digest(
                checkpoint_mac(key, gallery_id, s, h), str(m)
            ):
                bad = {
                    "seq": s,
                    "reason": "the checkpoint's HMAC is wrong (forged, or another audit key)",
                }
                break
            n_ck += 1
    if key is None:
        warnings.append("no audit key: checkpoint signatures were not checked")
    if bad is None and expect_head is not None:
        s, h = expect_head
        if seen.get(int(s)) != h:
            bad = {
                "seq": int(s),
                "reason": "the anchored head is not in the trail (records were rewritten or "
                "deleted up to it)",
            }
    if bad is None and by_seq and max(by_seq) < prev_seq:
        warnings.append(
            f"records {max(by_seq) + 1}…{prev_seq} are after the newest signed checkpoint: "
            "their deletion would not be detected unless the head is anchored elsewhere"
        )
    return {
        "ok": bad is None,
        "records": n,
        "head": {"seq": prev_seq, "hash": prev},
        "checkpoints": n_ck,
        "first_bad": bad,
        "warnings": warnings,
    }
