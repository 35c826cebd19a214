"""The dead set, as the client sees it: list dead jobs, send them back (retry_dead.lua), delete them
(purge.lua), and find which queue's dead set holds an id.

`AsyncClient.dead_jobs`, `retry_dead` and `purge_dead` are the public face and hold the
documentation; this module holds their Redis work. Every call goes through the client's
``_retrying`` (each step is idempotent by id, so a resend after an outage is safe).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, cast

from pool import clock
from pool.errors import JobNotFound
from pool.jobs import Job, Status

if TYPE_CHECKING:  # the client imports this module: a runtime import would be a cycle
    from collections.abc import Iterable

    from pool.async_client import AsyncClient


async def dead_jobs(client: AsyncClient, queue: str | None, limit: int) -> list[Job]:
    """The most recent dead jobs, newest first, across the config's queues (or one)."""
    queues = _queues(client, queue)

    async def send() -> list[Any]:
        async with client.redis.pipeline(transaction=False) as pipe:
            for name in queues:
                pipe.zrevrange(client.keys.dead(name), 0, limit - 1)
            return await pipe.execute()

    ids = [(name, raw.decode()) for name, found in zip(queues, await client._retrying(send), strict=True)
           for raw in found]
    jobs = [await client.get_job(job_id, queue=name) for name, job_id in ids]
    # an id can outlive its record (dead-letter TTL) and be reused: only jobs still dead count
    alive = [job for job in jobs if job is not None and job.status is Status.DEAD]
    alive.sort(key=lambda job: job.finished_ms or 0, reverse=True)
    return alive[:limit]


async def retry_or_purge(client: AsyncClient, op: str, job_ids: Iterable[str], queue: str | None,
                          every: bool) -> int:
    """Run retry_dead.lua (``op="retry"``) or purge.lua on each target; how many it moved or deleted."""
    targets = await _every_dead(client, queue) if every else [
        (await _dead_queue(client, job_id, queue), job_id) for job_id in job_ids]
    now_ms = clock.now_ms()

    async def send() -> list[Any]:
        async with client.redis.pipeline(transaction=False) as pipe:
            for name, job_id in targets:
                if op == "retry":
                    await client.scripts.retry_dead(name, job_id, now_ms, client=pipe)
                else:
                    await client.scripts.purge(name, job_id, client=pipe)
            return await pipe.execute()

    return sum(await client._retrying(send)) if targets else 0


async def _every_dead(client: AsyncClient, queue: str | None) -> list[tuple[str, str]]:
    targets: list[tuple[str, str]] = []
    for name in _queues(client, queue):
        members = await client._retrying(functools.partial(client.redis.zrange, client.keys.dead(name), 0, -1))
        targets += [(name, cast(bytes, raw).decode()) for raw in members]
    return targets


async def _dead_queue(client: AsyncClient, job_id: str, queue: str | None) -> str:
    """The queue whose dead set holds ``job_id`` (the same id may live on in another queue).

    Raises:
        JobNotFound: no dead set holds it (never enqueued, not dead, or purged).
    """
    for name in _queues(client, queue):
        if await client._retrying(functools.partial(client.redis.zscore, client.keys.dead(name), job_id)) is not None:
            return name
    where = f"queue {queue!r}" if queue else "queues " + ", ".join(client.config.queues)
    raise JobNotFound(f"no dead job {job_id} in {where} (not dead, never enqueued, or purged)")


def _queues(client: AsyncClient, queue: str | None) -> list[str]:
    return [queue] if queue else list(client.config.queues)
