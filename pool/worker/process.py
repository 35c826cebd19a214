"""One worker process: its lifecycle, and the tasks it owns (job slots, fetcher, background loops).

Claiming (which queue fills which free slot, blocking when all are empty) is the Fetcher's
(fetcher.py); the admission rule is the job slots' (slots.py). Each started job task is
:meth:`JobRunner.run <pool.worker.execution.JobRunner.run>` (execution.py): the handler under its
timeout, then the outcome with one ack. The heartbeat, the alive file and the registry are the
:class:`~pool.worker.heartbeat.Presence`'s. On stop: no more claims, running jobs get
``shutdown_timeout`` to finish, the rest are cancelled and requeue.lua puts them back.

One process per supervisor also runs the Scheduler (scheduler.py): delayed jobs and schedules.

Redis errors are handled at the edge of each loop (connection.Outage: backoff, logged once).
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import os
import signal
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from pool import clock, metrics
from pool.config import Config
from pool.connection import Outage, async_client, blocking_client, replication, resolve_url
from pool.errors import ExitCode, HandlerError
from pool.handlers import Registry, load_registry
from pool.hooks import Hooks
from pool.keys import Keys
from pool.lua import Scripts
from pool.metrics import NoMetrics
from pool.worker.acks import AckBatcher
from pool.worker.claim_reply import Claimed
from pool.worker.execution import JobRunner
from pool.worker.fetcher import Fetcher
from pool.worker.heartbeat import Presence
from pool.worker.ready_wait import uses_shared_wait
from pool.worker.scheduler import Scheduler
from pool.worker.shared import WorkerContext
from pool.worker.slots import JobSlots

logger = logging.getLogger("pool.worker")  # the name JSON logs show, kept stable

BACKGROUND_STOP_S = 5.0  # how long a cancelled background task may take to end


@dataclass(frozen=True, slots=True)
class _Parts:
    """What a running worker builds after the fork, inside its event loop (see Worker.run)."""

    client: redis.asyncio.Redis
    blocking: redis.asyncio.Redis
    scripts: Scripts
    scheduler: Scheduler
    acks: AckBatcher
    presence: Presence
    runner: JobRunner
    fetcher: Fetcher


class Worker:
    """Runs jobs from the configured queues until stopped.

    Args:
        config: the pool's settings.
        registry: the handlers this worker may run; anything else is refused.
        worker_id: from :func:`make_worker_id`.
        url: Redis URL (default: from the config).
        burst: stop by itself once every queue is empty and no job is running (tests, `drain`).
        parent_pid: the supervisor's pid; the worker stops when its parent changes (orphaned).
        alive_file: a file touched from the event loop every heartbeat; its supervisor kills the
            process when it goes stale (a frozen loop), without asking Redis. Its first byte
            says whether jobs run ('1') or not ('0'): a death while they run is theirs.
        scheduler: promote delayed jobs and fire schedules on time (one process per supervisor);
            the other processes do it as backups, a second late.
        metrics: what to record for Prometheus (metrics.py; nothing by default).
        hooks: the on_startup / on_shutdown functions (default: imported from the config).
    """

    def __init__(
        self, config: Config, registry: Registry, worker_id: str, *, url: str | None = None,
        burst: bool = False, parent_pid: int | None = None, alive_file: str | None = None,
        scheduler: bool = True, metrics: NoMetrics | None = None, hooks: Hooks | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.worker_id = worker_id
        self.url = url or resolve_url(config)
        self.burst = burst
        self.keys = Keys(config.key_prefix)
        self.stopping = asyncio.Event()
        self._fast = asyncio.Event()
        self.fast_stop = False
        self.crashed = False
        self.boot_failed = False  # an on_startup hook raised
        self.hooks = hooks if hooks is not None else Hooks.load(config)
        self.recycle_reason: str | None = None
        self.parent_pid = parent_pid
        self.alive_file = alive_file
        self.slots = JobSlots(config.concurrency, config.max_jobs_per_process)
        self._runs_scheduler = scheduler
        self.metrics = metrics or NoMetrics()
        self._outage = Outage(f"worker {worker_id}", self.url, self.metrics.reconnected)
        self._parts: _Parts | None = None  # built by run(), inside the event loop
        # Twice the job slots: a thread stuck past its timeout keeps its thread until the process
        # is recycled (timeout_grace), and new jobs must not wait for a thread meanwhile.
        self._executor = ThreadPoolExecutor(2 * config.concurrency, thread_name_prefix="pool-job")

    @property
    def exit_code(self) -> int:
        if self.boot_failed:
            return ExitCode.BOOT
        if self.crashed:
            return ExitCode.JOB_FAILED
        return ExitCode.RECYCLE if self.recycle_reason else ExitCode.OK

    @property
    def done_count(self) -> int:
        """Jobs this process completed."""
        return self._parts.runner.done_count if self._parts is not None else 0

    @property
    def failed_count(self) -> int:
        """Attempts this process ended otherwise (failed, retrying, dead, cancelled, rejected)."""
        return self._parts.runner.failed_count if self._parts is not None else 0

    @property
    def fetcher(self) -> Fetcher:
        return self._running().fetcher

    @property
    def acks(self) -> AckBatcher:
        return self._running().acks

    @property
    def scheduler(self) -> Scheduler | None:
        return self._parts.scheduler if self._parts is not None else None

    def _running(self) -> _Parts:
        assert self._parts is not None, "the worker is not running"
        return self._parts

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self, fast: bool = False) -> None:
        """Graceful stop: no more claims; running jobs get ``shutdown_timeout`` to finish.

        A second call, or ``fast``, stops fast: running jobs are cancelled at once (and requeued).
        """
        if fast or self.stopping.is_set():
            self.fast_stop = True
            self._fast.set()
        self.stopping.set()
        self.slots.wake()
        if self._parts is not None:
            self._parts.fetcher.wake()

    def recycle(self, reason: str) -> None:
        """Stop gracefully and exit with ExitCode.RECYCLE so the supervisor starts a fresh process."""
        if self.recycle_reason is None:
            logger.warning("worker %s recycling: %s", self.worker_id, reason)
            self.recycle_reason = reason
        self.stop()

    async def run(self) -> None:
        """Work until :meth:`stop` (or, in burst mode, until the queues are empty).

        The on_startup hooks run first (a failure ends the process with ExitCode.BOOT before it
        touched Redis); the on_shutdown hooks once the last job ended (see hooks.py).
        """
        if not await self.hooks.startup(self.worker_id):
            self.boot_failed = True
            self._executor.shutdown(wait=False)
            return
        parts = self._parts = self._build()
        logger.info("worker %s serving %s with %d job slots%s", self.worker_id, self._describe_queues(),
                    self.config.concurrency, " (runs the scheduler)" if self._runs_scheduler else "")
        try:
            parts.presence.open()
            await self._serve(parts)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            parts.presence.close()
            await parts.client.aclose()
            await parts.blocking.aclose()
        logger.info("worker %s stopped: %d done, %d failed", self.worker_id, self.done_count, self.failed_count)

    def _build(self) -> _Parts:
        """The clients and components, built inside the event loop that uses them."""
        # Job acks, a claim or handback per watched queue, the scheduler's subscription, promotion
        # and one fire per schedule can all be in flight at once.
        connections = self.config.concurrency + 2 * len(self.config.queues) + len(self.config.schedules) + 8
        client = async_client(self.config, self.url, max_connections=connections)
        # One BLMOVE per watched queue; in shared-wait mode one BLPOP for them all (+1 spare).
        waits = 1 if uses_shared_wait(self.config) else len(self.config.queues)
        blocking = blocking_client(self.config, self.url, max_connections=waits + 1)
        scripts = Scripts(client, self.keys)
        context = WorkerContext(self.config, self.worker_id, client, scripts, self._outage, self.slots, self.stopping)
        scheduler = Scheduler(context, backup=not self._runs_scheduler)
        acks = AckBatcher(context, replication(self.config))
        presence = Presence(context, self, self.slots.cancel, parent_pid=self.parent_pid, alive_file=self.alive_file)
        runner = JobRunner(context, self.registry, self._executor, acks, scheduler.learn, self.recycle,
                           presence.charge_for_stop, self.metrics)
        fetcher = Fetcher(context, blocking, self._start, scheduler.learn, self.burst)
        return _Parts(client, blocking, scripts, scheduler, acks, presence, runner, fetcher)

    async def _serve(self, parts: _Parts) -> None:
        """Run the background loops and the fetcher until stopped, drain, and leave."""
        background = [asyncio.create_task(parts.scheduler.run(), name="scheduler"),
                      asyncio.create_task(parts.acks.run(), name="acks"),
                      asyncio.create_task(parts.presence.heartbeat_loop(self._heartbeat), name="heartbeat"),
                      asyncio.create_task(parts.presence.liveness_loop(), name="liveness")]
        fetcher = asyncio.create_task(parts.fetcher.run(), name="fetcher")
        for task in (*background, fetcher):
            task.add_done_callback(self._background_done)
        await self._wait_until_done(fetcher)
        try:
            await self._drain(parts)
        finally:
            parts.runner.completed_lines.flush()
            # Before the background tasks end: the liveness loop keeps the supervisor patient.
            await self.hooks.shutdown(self.worker_id)
        await self._cancel_background(background)
        await parts.presence.deregister()

    async def _cancel_background(self, tasks: list[asyncio.Task[None]]) -> None:
        """Cancel the heartbeat, scheduler and ack tasks; one that ignores its cancellation (a
        library swallowing it) is reported with its stack instead of holding the stop forever."""
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=BACKGROUND_STOP_S)
        for task in stuck:
            frames = io.StringIO()
            task.print_stack(file=frames)
            logger.error("worker %s: %s did not stop within %gs of its cancellation; left behind. It was at:\n%s",
                         self.worker_id, task.get_name(), BACKGROUND_STOP_S, frames.getvalue())

    def _background_done(self, task: asyncio.Task[None]) -> None:
        """A heartbeat or fetcher died of something other than an outage: stop and exit non-zero.

        Its supervisor requeues whatever is left and starts a fresh process.
        """
        if task.cancelled() or task.exception() is None:
            return
        logger.error("worker %s: %s failed; stopping this process", self.worker_id, task.get_name(),
                     exc_info=task.exception())
        self.crashed = True
        self.stop(fast=True)

    def _describe_queues(self) -> str:
        weights = self.config.queue_weights
        if weights:
            return "queues " + ", ".join(f"{q} (weight {weights[q]})" for q in self.config.queues)
        return "queues " + " > ".join(self.config.queues) if len(self.config.queues) > 1 else f"queue {self.config.queues[0]}"

    async def _wait_until_done(self, fetcher: asyncio.Task[None]) -> None:
        if not self.burst:
            await self.stopping.wait()
        # Never cancel a BLMOVE in flight (the server may already have moved the id): the fetcher
        # sees the stop flag within one block timeout. Its failure is reported by _background_done.
        await asyncio.gather(fetcher, return_exceptions=True)

    async def _drain(self, parts: _Parts) -> None:
        """Let running jobs finish within shutdown_timeout (or until a second stop), cancel the
        rest, and requeue them. Jobs already writing their outcome are let finish."""
        running = list(self.slots.running.values())
        if running and not self.fast_stop:
            logger.info("waiting up to %gs for %d running job(s)", self.config.shutdown_timeout_s, len(running))
            fast = asyncio.create_task(self._fast.wait())
            waits: list[asyncio.Future[Any]] = [asyncio.gather(*running, return_exceptions=True), fast]
            await asyncio.wait(waits, timeout=self.config.shutdown_timeout_s, return_when=asyncio.FIRST_COMPLETED)
            fast.cancel()
        for task in self.slots.handlers_running():
            task.cancel()
        await asyncio.gather(*self.slots.running.values(), return_exceptions=True)
        for queue in self.config.queues:
            moved, _ = await self._outage.retry(
                "requeue", parts.scripts.requeue, queue, self.worker_id, "stop",
                self.config.max_deliveries, clock.now_ms(), events=self.config.events,
            )
            if moved:
                logger.warning("requeued %d unfinished job(s) on %s", moved, queue)

    # -- claimed jobs ---------------------------------------------------------------------------

    def _start(self, claimed: Claimed) -> None:
        """Start the task of a claimed job (the fetcher's callback): run it, or fail its corrupt record."""
        job = claimed.job
        assert job is not None  # the fetcher drops missing records
        runner = self._running().runner
        work = runner.run(job) if claimed.corrupt is None else runner.reject(job, claimed.corrupt)
        if not self.slots.running:
            self._running().presence.mark_busy(True)
        task = asyncio.create_task(work, name=f"job:{job.id}")
        self.slots.started(job.id, task, solo=claimed.solo and claimed.corrupt is None, queue=job.queue)
        self.metrics.started(job)
        task.add_done_callback(functools.partial(self._job_ended, job.id, job.queue))

    def _job_ended(self, job_id: str, queue: str, task: asyncio.Task[None]) -> None:
        self.slots.ended(job_id)
        if not self.slots.running and self._parts is not None:
            self._parts.presence.mark_busy(False)
        self.metrics.ended(queue)
        if not task.cancelled() and task.exception() is not None:
            logger.error("job %s: internal error", job_id, exc_info=task.exception())
        # Judged here, where every started job ends (a rejected record, an internal error too):
        # a process that may start no more must not wait for claims forever.
        if self.slots.is_spent() and not self.stopping.is_set():
            self.recycle(f"ran {self.config.max_jobs_per_process} jobs (max_jobs_per_process)")

    # -- seams the tests use --------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """One heartbeat (tests replace it with a failing one)."""
        await self._running().presence.beat()

    def _cancel_running(self, job_ids: Iterable[str]) -> None:
        """Cancel running jobs as `pool cancel` asked (see JobSlots.cancel)."""
        self.slots.cancel(job_ids)


def main(config: Config, worker_id: str, url: str, alive_file: str | None = None, scheduler: bool = True) -> int:
    """Entry point of a forked worker process; returns its exit code.

    Imports the handlers and builds the event loop (uvloop) and every Redis client here, after the
    fork, so a rolling restart (SIGHUP) runs new code. SIGTERM stops gracefully, a second SIGTERM
    stops fast; SIGINT is ignored because the supervisor relays it.
    """
    import uvloop  # here, not at the top: only a worker process needs it, `import pool` stays light

    try:
        registry = load_registry(config.handlers, config.base_dir, config.scripts, config.import_paths)
        hooks = Hooks.load(config)
    except HandlerError as exc:
        logger.error("cannot start: %s", exc)
        return ExitCode.BOOT
    recorder = metrics.WorkerMetrics() if config.metrics.enabled and metrics.is_enabled() else None
    worker = Worker(config, registry, worker_id, url=url, parent_pid=os.getppid(), alive_file=alive_file,
                    scheduler=scheduler, metrics=recorder, hooks=hooks)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        loop = runner.get_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        runner.run(worker.run())
    return worker.exit_code
