"""A worker's presence: in Redis (heartbeat, deregistration) and to its supervisor (alive file).

One pipelined round trip per beat writes, for each queue the worker serves, its liveness key
(with a TTL: gone = dead, judged by Redis) and its deadline in the queue's registry (server time +
TTL: what reclaim reads; both by heartbeat.lua), plus the host-wide registry hash that `pool status` shows; and it collects the
running jobs that `pool cancel` asked this worker to stop. :class:`Presence` runs the loops: the
beat (with the process checks: orphaned, over max_memory_per_process), the alive file touched
from the event loop, and leaving the registry at the end. What a stop or a recycle does is the
worker's (process.py); cancelling a job is the runner's (execution.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import redis.asyncio

from pool import clock
from pool.connection import REDIS_ERRORS, is_refusal, is_transient
from pool.errors import ExitCode
from pool.keys import Keys
from pool.lua import Scripts
from pool.worker.outcomes import Failure
from pool.worker.shared import WorkerContext

logger = logging.getLogger("pool.worker")  # (its lines have always come from the worker's logger)

KILL_GRACE_S = 5.0  # an orphan gets this long past shutdown_timeout + heartbeat_ttl before exiting


async def beat(
    client: redis.asyncio.Redis, scripts: Scripts, worker_id: str, queues: Iterable[str], state: str,
    ttl_ms: int, info: Mapping[str, Any],
) -> list[str]:
    """Renew the worker's heartbeat; returns the ids of running jobs to cancel.

    Args:
        state: busy, idle or stopping.
        ttl_ms: how long the liveness keys live without a next beat.
        info: numbers shown by `pool status` (in_flight, done, failed, started_ms, concurrency,
            rss_bytes, active: the jobs in its active lists by queue, as JSON).

    Raises:
        the first Redis error of the beat (the pipeline's replies hold them as values).
    """
    queues = list(queues)
    keys = scripts.keys
    host, pid, _ = worker_id.rsplit(":", 2)
    registry = keys.worker(worker_id)

    async def calls(pipe: Any) -> None:
        for queue in queues:
            await scripts.heartbeat(queue, worker_id, state, ttl_ms, client=pipe)
        await pipe.hset(registry, mapping={
            "id": worker_id, "host": host, "pid": pid, "queues": ",".join(queues),
            "heartbeat_ms": clock.now_ms(), "state": state, **info,
        })
        await pipe.pexpire(registry, ttl_ms)
        await pipe.sadd(keys.workers(), worker_id)

    replies = await scripts.pipelined(client, calls)  # a beat may be sent twice (NOSCRIPT)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return [job_id.decode() for cancelled in replies[:len(queues)] for job_id in cancelled or ()]


async def renew(client: redis.asyncio.Redis, keys: Keys, worker_id: str, queues: Iterable[str], ttl_ms: int) -> None:
    """Extend the liveness keys and the registry entry only: the heartbeat Redis still takes at
    maxmemory (noeviction), where SET, SADD and HSET are refused but PEXPIRE is not. Without it
    the keys of every worker expire during the outage and a supervisor reclaims jobs that run."""
    async with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.pexpire(keys.alive(queue, worker_id), ttl_ms)
        pipe.pexpire(keys.worker(worker_id), ttl_ms)
        await pipe.execute()


async def deregister(client: redis.asyncio.Redis, keys: Keys, worker_id: str) -> None:
    """Leave the host-wide registry (requeue.lua 'stop' already left each queue's)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker(worker_id))
        pipe.srem(keys.workers(), worker_id)
        await pipe.execute()


def resident_memory_bytes() -> int:
    """This process's resident set size (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class Process(Protocol):
    """What the presence needs of its worker process (worker.Worker)."""

    stopping: asyncio.Event

    @property
    def done_count(self) -> int: ...
    @property
    def failed_count(self) -> int: ...
    def stop(self) -> None: ...
    def recycle(self, reason: str) -> None: ...


class Presence:
    """The heartbeat, liveness and registry loops of one worker process.

    Args:
        context: the worker's config (heartbeat interval and TTL, queues, memory and shutdown
            limits), id (whose keys these are), client, outage (a failed beat is retried through
            it) and job slots (read: state and jobs in flight).
        process: the worker, told to stop or recycle.
        on_cancel: given the ids of running jobs that `pool cancel` asked this worker to stop.
        parent_pid: the supervisor's pid; the worker stops when its parent changes (orphaned).
        alive_file: touched every heartbeat from the event loop; its first byte says whether
            jobs run ('1') or not ('0') (see :meth:`mark_busy`).
    """

    def __init__(
        self, context: WorkerContext, process: Process, on_cancel: Callable[[list[str]], None], *,
        parent_pid: int | None = None, alive_file: str | None = None,
    ) -> None:
        config = self.config = context.config
        self.worker_id = context.worker_id
        self.redis = context.client
        self.keys = context.keys
        self.scripts = context.scripts
        self.outage = context.outage
        self.slots = context.slots
        self.process = process
        self.on_cancel = on_cancel
        self.parent_pid = parent_pid
        self.alive_file = alive_file
        self.started_ms = clock.now_ms()
        self._ttl_ms = int(config.heartbeat_ttl_s * 1000)
        self._orphaned_at: float | None = None
        # Set when the process went over max_memory_per_process: the jobs still running when the
        # drain cancels them fail with this (see charge_for_stop).
        self._over_memory: str | None = None
        self._alive_fd: int | None = None  # the alive file, open for the busy mark

    def open(self) -> None:
        """Open the alive file for the busy mark (in the worker process, before jobs start)."""
        if self.alive_file is not None:
            self._alive_fd = os.open(self.alive_file, os.O_WRONLY)

    def close(self) -> None:
        if self._alive_fd is not None:
            fd, self._alive_fd = self._alive_fd, None  # a late job callback must not write to a reused fd
            os.close(fd)

    # -- the heartbeat --------------------------------------------------------------------------

    async def heartbeat_loop(self, beat: Callable[[], Awaitable[None]] | None = None) -> None:
        """Beat every heartbeat_interval until cancelled, riding out outages and refusals.

        Args:
            beat: the beat itself (default :meth:`beat`; the worker passes its own seam).
        """
        beat = beat or self.beat
        while True:
            self.check_process()
            try:
                await beat()
                self.outage.recovered("heartbeat")
                await asyncio.sleep(self.config.heartbeat_interval_s)
            except REDIS_ERRORS as exc:
                if not is_transient(exc):
                    raise
                if is_refusal(exc):
                    await self._renew()
                await self.outage.retry_after(exc, "heartbeat")

    async def beat(self) -> None:
        """One heartbeat; the jobs it brings back to cancel go to ``on_cancel``."""
        to_cancel = await beat(self.redis, self.scripts, self.worker_id, self.config.queues, self._state(),
                               self._ttl_ms, {
                                   "started_ms": self.started_ms, "in_flight": len(self.slots.running),
                                   "done": self.process.done_count, "failed": self.process.failed_count,
                                   "concurrency": self.config.concurrency, "rss_bytes": resident_memory_bytes(),
                                   # what `pool status` counts as active, without an LLEN per worker and queue
                                   "active": json.dumps(self.slots.running_by_queue(), separators=(",", ":")),
                               })
        self.on_cancel(to_cancel)

    async def _renew(self) -> None:
        """A refused heartbeat: keep the liveness keys alive with what Redis still takes, if anything."""
        with contextlib.suppress(*REDIS_ERRORS):
            await renew(self.redis, self.keys, self.worker_id, self.config.queues, self._ttl_ms)

    def _state(self) -> str:
        if self.process.stopping.is_set():
            return "stopping"
        return "busy" if self.slots.running else "idle"

    # -- the process ----------------------------------------------------------------------------

    def check_process(self) -> None:
        """Stop when orphaned (the supervisor died); recycle when over max_memory_per_process."""
        self._check_parent()
        limit = self.config.max_memory_per_process
        if limit and (rss := resident_memory_bytes()) > limit:
            usage = f"uses {rss / 2**20:.0f} MiB, over max_memory_per_process ({limit / 2**20:.0f} MiB)"
            if self._over_memory is None:
                self._over_memory = f"its worker process {usage}"
            self.process.recycle(usage)

    def _check_parent(self) -> None:
        """An orphan that cannot finish stopping (Redis unreachable, so acks and the requeue retry
        forever) exits after shutdown_timeout + heartbeat_ttl: nobody would ever stop it, and its
        unfinished jobs are safe in its running sets, reclaimed once its heartbeat has expired."""
        if self.parent_pid is None or os.getppid() == self.parent_pid:
            return
        now = clock.monotonic()
        if self._orphaned_at is None:
            self._orphaned_at = now
            logger.error("worker %s: its supervisor (pid %d) is gone; stopping", self.worker_id, self.parent_pid)
            self.process.stop()
        elif now - self._orphaned_at > self.config.shutdown_timeout_s + self.config.heartbeat_ttl_s + KILL_GRACE_S:
            logger.error("worker %s: orphaned and still unable to stop (Redis unreachable?); exiting. Its "
                         "unfinished jobs are reclaimed from its running sets once its heartbeat expires",
                         self.worker_id)
            logging.shutdown()
            os._exit(ExitCode.JOB_FAILED)

    def charge_for_stop(self) -> Failure | None:
        """The failure of a job the drain cancels, when the stop is the running jobs' doing.

        Over max_memory_per_process the process recycles, and a job still running when the
        drain's shutdown_timeout is over is what holds the memory (or ran beside it): its attempt
        fails, so retries apply and then the dead set. Handed back uncounted at the head of the
        queue instead (a clean stop), it was taken again at once and recycled the next process, for
        ever. Any other stop (SIGTERM, a reload, max_jobs_per_process) charges nobody: None.
        """
        if self._over_memory is None:
            return None
        return Failure("MemoryLimitExceeded", (
            f"{self._over_memory} while this job ran, and the job did not finish within "
            f"shutdown_timeout ({self.config.shutdown_timeout_s:g}s) of the recycle"))

    # -- to the supervisor ----------------------------------------------------------------------

    def mark_busy(self, busy: bool) -> None:
        """Write whether jobs run into the alive file's first byte, for the supervisor to read if
        this process dies: a death while they run is their doing, not a crash loop. One pwrite
        when the process turns busy or idle, not per job, and no Redis (a crash leaves no time)."""
        if self._alive_fd is not None:
            os.pwrite(self._alive_fd, b"1" if busy else b"0", 0)

    async def liveness_loop(self) -> None:
        """Touch the alive file from the event loop: a frozen loop stops touching it."""
        if self.alive_file is None:
            return
        while True:
            os.utime(self.alive_file)
            await asyncio.sleep(self.config.heartbeat_interval_s)

    # -- leaving --------------------------------------------------------------------------------

    async def deregister(self) -> None:
        """Leave the registry, trying for one heartbeat TTL at most: the entry expires by itself
        then, and an orphan must never wait forever on a Redis that is gone."""
        deadline = clock.monotonic() + self.config.heartbeat_ttl_s
        while True:
            try:
                await deregister(self.redis, self.keys, self.worker_id)
                return
            except REDIS_ERRORS as exc:
                if not is_transient(exc):
                    raise
                if clock.monotonic() >= deadline:
                    logger.warning("worker %s: could not leave the registry (Redis unreachable or refusing "
                                   "writes); its entry expires by itself", self.worker_id)
                    return
                await self.outage.retry_after(exc, "deregister")
