"""The dead set, as the client sees it: list dead jobs, send them back (retry_dead.lua), delete them
(purge.lua), and find which queue's dead set holds an id.

`AsyncClient.dead_jobs`, `retry_dead` and `purge_dead` are the public face and hold the
documentation; this module holds their Redis work. Every call goes through the client's
``_retrying`` (each step is idempotent by id, so a resend after an outage is safe); bulk actions
go a page of ids per round trip, so none holds Redis or the client's memory for long.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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


# Bulk actions walk the dead set in pages of DEAD_PAGE ids: one ZRANGEBYSCORE ... LIMIT 0 DEAD_PAGE,
# then one pipeline of that page's script calls, each round trip through ``_retrying``. One ZRANGE of
# the whole set and one pipeline of every call (as before) held 200 MiB in the client and stalled
# Redis for half a second at 100k dead jobs.
#
# Paging by rank would skip ids: retry_dead.lua and purge.lua ZREM every id they are given, even
# when they return 0, so the ranks shift under the walk. Instead the walk reads from the front of
# a window of scores (the score is the time of death): from the last page's score (inclusive: ids
# of that score not yet reached are still in the set) up to the newest score at the start. Every
# id read is removed by its script, so each page finds new ids and none is handled twice. Jobs
# that die during the run are buried with a later score and left for the next run (without that
# bound a retry of jobs that die again at once would never end); the window is fixed in time and
# only shrinks, so once every host's clock has passed its upper end nothing can join it and the
# loop ends. A cursor just past the last id read was rejected: jobs that die in the same
# millisecond tie on the score, and a score range cannot start after a given member.
DEAD_PAGE = 1_000

Progress = Callable[[int, int], None]  # (ids handled so far, dead ids counted at the start)


class _Tally:
    """What a bulk action has done so far, told to its ``on_progress`` after each page."""

    def __init__(self, total: int, on_progress: Progress | None) -> None:
        self.total, self.handled, self.changed = total, 0, 0
        self._on_progress = on_progress

    def page_done(self, handled: int, replies: list[Any]) -> None:
        self.handled += handled
        self.changed += sum(replies)
        if self._on_progress is not None:
            self._on_progress(self.handled, self.total)


async def retry_or_purge(client: AsyncClient, op: str, job_ids: Iterable[str], queue: str | None,
                         every: bool, on_progress: Progress | None = None) -> int:
    """Run retry_dead.lua (``op="retry"``) or purge.lua on each target, a page per round trip;
    how many it moved or deleted. With ``every``, jobs that die while it runs are left for the
    next run, as is one buried meanwhile with a time of death before the page the walk has
    reached (a host whose clock is behind); see the block comment above."""
    if every:
        return await _walk_every_dead(client, op, _queues(client, queue), on_progress)
    targets = [(await _dead_queue(client, job_id, queue), job_id) for job_id in job_ids]
    tally = _Tally(len(targets), on_progress)
    for first in range(0, len(targets), DEAD_PAGE):
        page = targets[first:first + DEAD_PAGE]
        tally.page_done(len(page), await client._retrying(functools.partial(_send_page, client, op, page)))
    return tally.changed


async def _walk_every_dead(client: AsyncClient, op: str, queues: list[str], on_progress: Progress | None) -> int:
    async def count() -> list[Any]:
        async with client.redis.pipeline(transaction=False) as pipe:
            for name in queues:
                pipe.zcard(client.keys.dead(name))
            return await pipe.execute()

    tally = _Tally(sum(await client._retrying(count)), on_progress)
    for name in queues:
        await _walk_dead_set(client, op, name, tally)
    return tally.changed


async def _walk_dead_set(client: AsyncClient, op: str, queue: str, tally: _Tally) -> None:
    dead = client.keys.dead(queue)
    newest = await client._retrying(functools.partial(client.redis.zrange, dead, -1, -1, withscores=True))
    if not newest:
        return
    low: float | str = "-inf"
    high = float(newest[0][1])
    while page := await client._retrying(functools.partial(_read_page, client, dead, low, high)):
        targets = [(queue, cast(bytes, raw).decode()) for raw, _ in page]
        tally.page_done(len(targets), await client._retrying(functools.partial(_send_page, client, op, targets)))
        low = page[-1][1]


async def _read_page(client: AsyncClient, dead: str, low: float | str, high: float) -> list[Any]:
    """The front of the window: the oldest DEAD_PAGE ids scored from ``low`` to ``high``, with scores."""
    return await client.redis.zrangebyscore(dead, low, high, start=0, num=DEAD_PAGE, withscores=True)


async def _send_page(client: AsyncClient, op: str, targets: list[tuple[str, str]]) -> list[Any]:
    """One pipeline of the page's script calls: a resend after an outage is safe (each call is
    idempotent by id), though an id done before the outage then counts as not done."""
    now_ms = clock.now_ms()
    async with client.redis.pipeline(transaction=False) as pipe:
        for name, job_id in targets:
            if op == "retry":
                await client.scripts.retry_dead(name, job_id, now_ms, client=pipe)
            else:
                await client.scripts.purge(name, job_id, client=pipe)
        return await pipe.execute()


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
