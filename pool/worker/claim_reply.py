"""claim.lua's reply as typed values, decoded in one place.

claim.lua answers ``{next_due_ms, claimed, wait_ms}``, where each entry of ``claimed`` is a job
hash as HGETALL pairs (plus ``solo``), ``{id, <id>, missing, 1}`` for an id whose record is gone,
or the ``{solo_wait, 1}`` marker (see the script's header). The fetcher, which alone reads
claims, reads a :class:`ClaimReply`; nothing else knows the pairs (promotion has promote.lua).
The script and its wrapper live in pool/lua/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pool.errors import CorruptJob
from pool.jobs import Job


@dataclass(frozen=True, slots=True)
class Claimed:
    """One job a claim moved into the worker's running set.

    Attributes:
        job_id: its id.
        job: the decoded record; for a record this version cannot read, a stand-in with the id,
            handler and queue (``corrupt`` says why), so that it can fail instead of crashing
            the process; None when the record is gone (``missing``).
        solo: a suspect job (workers died holding it): it runs alone.
        missing: its record is gone; claim.lua dropped the id.
        corrupt: why the record cannot be decoded (``CorruptJob: ...``), or None.
        started_ms: when claim.lua started it (None if it did not).
        deliveries: how many times it was delivered, as stored ("?" when unknown; for logs).
    """

    job_id: str
    job: Job | None
    solo: bool = False
    missing: bool = False
    corrupt: str | None = None
    started_ms: int | None = None
    deliveries: str = "?"


@dataclass(frozen=True, slots=True)
class ClaimReply:
    """What one claim.lua call did.

    Attributes:
        next_due_ms: when the queue's earliest delayed job falls due (-1: none).
        jobs: the jobs claimed (see :class:`Claimed`).
        records: how many entries the reply held, markers included: what a claim pass compares
            with what it asked for (fewer: the queue is empty for now).
        solo_wait: the next job is a suspect one and this process is busy: it must turn idle first.
        wait_ms: > 0 when the rate limit held jobs back (try again after that long).
    """

    next_due_ms: int
    jobs: tuple[Claimed, ...] = ()
    records: int = 0
    solo_wait: bool = False
    wait_ms: int = 0


def decode_claim(raw: list[Any], queue: str) -> ClaimReply:
    """claim.lua's raw reply (for ``queue``) as a :class:`ClaimReply`."""
    jobs: list[Claimed] = []
    solo_wait = False
    for pairs in raw[1]:
        fields = dict(zip(pairs[::2], pairs[1::2], strict=True))
        if b"solo_wait" in fields:
            solo_wait = True
        else:
            jobs.append(_claimed(fields, queue))
    wait_ms = int(raw[2]) if len(raw) > 2 else 0
    return ClaimReply(int(raw[0]), tuple(jobs), len(raw[1]), solo_wait, wait_ms)


def _claimed(fields: dict[bytes, bytes], queue: str) -> Claimed:
    job_id = fields.get(b"id", b"").decode()
    if b"missing" in fields:
        return Claimed(job_id, None, missing=True)
    started = fields.get(b"started_ms", b"")
    started_ms = int(started) if started.isdigit() else None  # (a corrupt record fails below)
    solo, deliveries = b"solo" in fields, fields.get(b"deliveries", b"?").decode(errors="replace")
    try:
        job = Job.from_hash(fields)
    except CorruptJob as exc:
        stand_in = Job(id=job_id, handler=fields.get(b"handler", b"?").decode(errors="replace"), queue=queue)
        return Claimed(job_id, stand_in, solo, corrupt=f"CorruptJob: {exc}", started_ms=started_ms,
                       deliveries=deliveries)
    return Claimed(job_id, job, solo, started_ms=started_ms, deliveries=deliveries)
