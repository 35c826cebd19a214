"""Time-driven work of a pool: move delayed jobs into their queues when they fall due, and fire
the cron and interval schedules of pool.yaml. The first worker process of each supervisor runs
it on time; the others run it as backups, a second late (see BACKUP_LAG_S).

Delayed jobs: the scheduler keeps, per queue, the earliest due time it knows of and sleeps until
then; promote.lua promotes the due jobs, exactly once however many schedulers race, a slice
(PROMOTE_SLICE) per call, and its reply names the next due time. A time already past means the
slice was full: the loop calls again at once, not after a sleep, so 100,000 jobs due at one
instant drain in back-to-back calls of ~1.4 ms that let other clients in between (1,000 a call,
~11 ms each, kept PINGs above 20 ms for a second); with nothing due, it sleeps until the next
due time. A producer that enqueues a new earliest job (or a
worker scheduling a retry) publishes its due time on the queue's wake channel, so the timer is
re-armed at once: a due job starts within milliseconds, not at the next poll. The earliest
times are read again after every (re)subscription and every REFRESH_S, so a lost message only
makes a job late, never lost; every claim promotes due jobs as well.

Schedules: each tick is enqueued by fire.lua, which moves the schedule's last fired tick
forward in the same step that creates the tick's job. Every supervisor fires every tick, and
all but the first find it done. The last fired tick lives in Redis, so a restart resumes after
it: missed ticks are caught up (``catch_up: true``) or skipped beyond ``grace``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from pool import clock
from pool.connection import subscription, wait_event
from pool.jobs import JobSpec, new_job
from pool.schedules import Schedule
from pool.worker.shared import WorkerContext

logger = logging.getLogger("pool.scheduler")  # the name JSON logs show, kept stable


REFRESH_S = 5.0  # re-read the earliest due times this often, whatever the wake channel said
# Every worker process runs a scheduler; all but the first of each supervisor are backups that act
# this long after a due time, and at most once per this long, so that one process promotes and
# fires on time while the others only step in when it is down (crash loop, recycle, freeze).
BACKUP_LAG_S = 1.0
LONGEST_SLEEP_S = 5.0  # schedules re-check the wall clock at least this often (clock steps)


class Scheduler:
    """Promotes delayed jobs and fires schedules until ``stopping`` is set.

    Args:
        context: the worker's config (queues to promote, schedules to fire), client (its pool
            also serves the wake subscription), scripts (promote, fire), outage (each step is
            retried through it until Redis answers; the worker stopping cancels this task).
        backup: act BACKUP_LAG_S late, and at most that often (see BACKUP_LAG_S).
    """

    def __init__(self, context: WorkerContext, backup: bool = False) -> None:
        config = self.config = context.config
        self.context = context  # its client, keys, outage and stop event
        self.scripts = context.scripts  # promote and fire
        self.next_due: dict[str, int] = dict.fromkeys(config.queues, -1)  # -1: nothing delayed
        self.lag_ms = int(BACKUP_LAG_S * 1000) if backup else 0
        self._learned: dict[str, int] = {}  # due times learned while a read was in flight
        self._changed = asyncio.Event()

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._listen(), name="scheduler:wake"),
                 asyncio.create_task(self._promote_loop(), name="scheduler:promote")]
        tasks += [asyncio.create_task(self._run_schedule(s), name=f"schedule:{s.name}") for s in self.config.schedules]
        if self.config.schedules:
            logger.info("scheduler: %s",
                        "; ".join(f"{s.name} {s.describe()} -> {s.handler}" for s in self.config.schedules))
        try:
            await self.context.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def learn(self, queue: str, due_ms: int) -> None:
        """A delayed job of ``queue`` falls due at ``due_ms``: wake the timer if that is sooner."""
        if queue not in self.next_due:
            return
        self._learned[queue] = _earliest(self._learned.get(queue, -1), due_ms)
        if _earliest(self.next_due[queue], due_ms) != self.next_due[queue]:
            self.next_due[queue] = due_ms
            self._changed.set()

    def _settle(self, queue: str, read_ms: int) -> None:
        """Store what a read found, keeping any earlier time learned while it was in flight."""
        self.next_due[queue] = _earliest(read_ms, self._learned.pop(queue, -1))

    # -- delayed jobs ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Follow the wake channels; after each (re)subscription, read the earliest times again."""
        channels = {self.context.keys.wake(q): q for q in self.config.queues}
        async for message in subscription(self.context.client, list(channels), on_subscribed=self._refresh):
            self.learn(channels[message["channel"].decode()], int(message["data"]))

    async def _refresh(self) -> None:
        self._learned.clear()
        async with self.context.client.pipeline(transaction=False) as pipe:
            for queue in self.config.queues:
                pipe.zrange(self.context.keys.delayed(queue), 0, 0, withscores=True)
            replies = await pipe.execute()
        for queue, first in zip(self.config.queues, replies, strict=True):
            self._settle(queue, int(first[0][1]) if first else -1)
        self._changed.set()

    async def _promote_loop(self) -> None:
        refresh_at = clock.monotonic() + REFRESH_S
        while True:
            self._changed.clear()
            now = clock.now_ms()
            promoted = False
            for queue, due in list(self.next_due.items()):
                if 0 <= due <= now - self.lag_ms:
                    self._learned.pop(queue, None)
                    reply = await self.context.outage.retry("promote", self._promote, queue)
                    self._settle(queue, int(reply))
                    promoted = True
            if clock.monotonic() >= refresh_at:
                refresh_at = clock.monotonic() + REFRESH_S
                await self.context.outage.retry("refresh", self._refresh)
                continue
            if promoted and self.lag_ms:
                await asyncio.sleep(self.lag_ms / 1000)  # a backup steps in at most this often
                continue
            pending = [due + self.lag_ms for due in self.next_due.values() if due >= 0]
            wait_s = min([REFRESH_S, refresh_at - clock.monotonic(), *((d - clock.now_ms()) / 1000 for d in pending)])
            if wait_s > 0:
                await wait_event(self._changed, wait_s)

    def _promote(self, queue: str) -> Awaitable[Any]:
        """Move the queue's due jobs into it; returns the next due time."""
        return self.scripts.promote(queue, clock.now_ms())

    # -- schedules ------------------------------------------------------------------------------

    async def _run_schedule(self, schedule: Schedule) -> None:
        assert schedule.queue is not None
        state = self.context.keys.schedule(schedule.queue, schedule.name)
        last = await self.context.outage.retry("read schedule", self.context.client.hget, state, "last_ms")
        tick = schedule.first_due_ms(int(last) if last else None, clock.now_ms())
        while True:
            while (delay_s := (tick + self.lag_ms - clock.now_ms()) / 1000) > 0:
                await asyncio.sleep(min(delay_s, LONGEST_SLEEP_S))
            fired = await self.context.outage.retry("fire", self._fire, schedule, tick)
            if fired:
                late = " by a backup scheduler" if self.lag_ms else ""
                logger.info("schedule %s: enqueued %s (tick %s)%s", schedule.name, schedule.job_id(tick),
                            clock.format_ms(tick), late)
            tick = schedule.first_due_ms(tick, clock.now_ms())

    def _fire(self, schedule: Schedule, tick_ms: int) -> Awaitable[Any]:
        assert schedule.queue is not None
        now_ms = clock.now_ms()
        job, fields = new_job(schedule_spec(schedule, tick_ms), now_ms, default_queue=schedule.queue,
                              max_payload_bytes=self.config.max_payload_bytes)
        return self.scripts.fire(schedule.queue, schedule.name, tick_ms, now_ms, job.id, fields)


def schedule_spec(schedule: Schedule, tick_ms: int) -> JobSpec:
    """The job one tick of ``schedule`` enqueues (its id names the tick, so it is made once)."""
    return JobSpec(schedule.handler, schedule.args, dict(schedule.kwargs), queue=schedule.queue,
                   timeout=schedule.timeout_s, job_id=schedule.job_id(tick_ms))


def _earliest(a: int, b: int) -> int:
    """The earlier of two due times, where -1 means none."""
    if a < 0:
        return b
    return a if b < 0 else min(a, b)
