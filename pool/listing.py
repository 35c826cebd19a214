"""`pool jobs`: one page of a queue's jobs in one state, read from the list or set that holds them.

Where each state lives (keys.py): ``queued`` in the queue list (listed next-to-run first),
``active`` in the workers' running sets (and landing lists), ``delayed`` (with the jobs waiting to retry: both wait
in the delayed set) and ``retrying`` (only those) by earliest due first, ``dead`` in the dead set
(newest first), and ``completed``, ``failed`` and ``cancelled`` in the queue's
``recent:<status>`` lists, which keep the newest 1,000 ids each (older finished jobs are still
found by id with `pool job`, until their result TTL ends).

Retrying jobs are read from their own index, ``<p>:{q}:retrying`` (same scores as the delayed
set), which ack.lua writes when it schedules a retry and promotion and cancel empty with the
delayed set: a page costs O(log n + page) however many jobs are delayed. Picking them out of
the delayed set by their records' status (the earlier way) read every delayed record before a
page. A retry scheduled by a pool version before the index is in the delayed set only: it runs
on time as before and ``delayed`` lists it (as retrying), but ``retrying`` does not, until it
has fallen due (at the latest the longest retry delay after the upgrade). Rejected: a backfill
of the index, a walk of the whole delayed set for a window that closes by itself.

Records read for a page are checked against the state asked for: an id whose record expired or
moved on since it was listed is left out, so a page can hold fewer jobs than ``limit``. So is the
entry of a job cancelled while it waited, which stays in the queue list until a claim drops it
(lua/includes/stale.lua); ``total`` for ``queued`` leaves those entries out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio

from pool.errors import CorruptJob, UsageError
from pool.jobs import Job, Status
from pool.keys import Keys
from pool.status_queues import waiting

STATUSES = ("queued", "active", "delayed", "retrying", "dead", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class JobPage:
    queue: str
    status: str
    offset: int
    limit: int
    total: int | None  # None when counting would mean reading every record
    jobs: list[Job]
    more: bool  # whether a next page exists

    def to_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "status": self.status, "offset": self.offset, "limit": self.limit,
                "total": self.total, "next_offset": self.offset + self.limit if self.more else None,
                "jobs": [job.to_dict() for job in self.jobs]}


async def list_jobs(
    client: redis.asyncio.Redis, keys: Keys, queue: str, status: str, offset: int, limit: int,
    read: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]],
) -> JobPage:
    """One page of ``queue``'s jobs in ``status``.

    Args:
        read: runs a Redis read through an outage (the client's retry).
    """
    if status not in STATUSES:
        raise UsageError(f"unknown status {status!r}: choose one of {', '.join(STATUSES)}")
    if offset < 0 or limit < 1:
        raise UsageError("--offset must be >= 0 and --limit >= 1")
    if status == "queued":
        ids, total, more = await read(lambda: _queued(client, keys, queue, offset, limit))
    else:
        ids, total = await read(lambda: _ids(client, keys, queue, status, offset, limit))
        more = offset + limit < total
    jobs = await _records(client, keys, queue, ids, read)
    # The delayed set holds both delayed jobs and jobs waiting to retry: `delayed` lists the set.
    wanted = {Status.DELAYED, Status.RETRYING} if status == "delayed" else {Status(status)}
    return JobPage(queue, status, offset, limit, total, [job for job in jobs if job.status in wanted], more)


async def _ids(client: redis.asyncio.Redis, keys: Keys, queue: str, status: str, offset: int,
               limit: int) -> tuple[list[bytes], int]:
    last = offset + limit - 1
    if status == "active":
        async with client.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.queue_registry(queue), 0, -1)
            pipe.smembers(keys.queue_workers(queue))  # workers of an earlier pool version
            registered, earlier = await pipe.execute()
        workers = sorted({*registered, *earlier})
        async with client.pipeline(transaction=False) as pipe:
            for worker in workers:
                worker_id = cast(bytes, worker).decode()
                pipe.zrange(keys.running(queue, worker_id), 0, -1)  # started, oldest first
                pipe.lrange(keys.active(queue, worker_id), 0, -1)  # moved, not started yet
            replies = await pipe.execute()
        every = [job_id for running, landed in zip(replies[::2], replies[1::2], strict=True)
                 for job_id in [*running, *reversed(landed)]]
        return every[offset:last + 1], len(every)
    async with client.pipeline(transaction=False) as pipe:
        if status in ("delayed", "retrying"):
            # Retrying jobs wait in the delayed set with the delayed ones; ack.lua indexes them
            # apart as well (same scores), so their page is one ZRANGE whatever the delayed count.
            key = keys.delayed(queue) if status == "delayed" else keys.retrying(queue)
            pipe.zcard(key)
            pipe.zrange(key, offset, last)
        elif status == "dead":
            pipe.zcard(keys.dead(queue))
            pipe.zrevrange(keys.dead(queue), offset, last)
        else:
            pipe.llen(keys.recent(queue, status))
            pipe.lrange(keys.recent(queue, status), offset, last)
        total, ids = await pipe.execute()
    return ids, total


async def _queued(client: redis.asyncio.Redis, keys: Keys, queue: str, offset: int,
                  limit: int) -> tuple[list[bytes], int, bool]:
    """Offsets count entries of the queue list, stale ones included (they are dropped from the
    page by their record's status), so whether a next page exists is judged on the list's length,
    and the total leaves them out."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.llen(keys.queue(queue))
        pipe.scard(keys.stale(queue))
        pipe.lrange(keys.queue(queue), -(offset + limit), -(offset + 1))  # the far end starts first
        listed, stale, ids = await pipe.execute()
    return list(reversed(ids)), waiting(listed, stale), offset + limit < listed


async def _records(client: redis.asyncio.Redis, keys: Keys, queue: str, ids: list[bytes],
                   read: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]) -> list[Job]:
    async def send() -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(keys.job(queue, job_id.decode()))
            return await pipe.execute()

    jobs = []
    for fields in await read(send) if ids else []:
        if fields:
            with contextlib.suppress(CorruptJob):  # `pool job ID` shows what is wrong with it
                jobs.append(Job.from_hash(fields))
    return jobs
