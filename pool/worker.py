"""One worker process: claim jobs, run them in job slots under their timeouts, acknowledge them.

Claiming (which queue fills which free slot, blocking when all are empty) is the Fetcher's
(fetcher.py). Each started job task hands the job to a :class:`~pool.execution.JobRunner` (execution.py), which runs
the handler under its timeout and records the outcome with one ack. A heartbeat
task keeps the worker's registry entry alive. On stop: no more claims, running jobs get
``shutdown_timeout`` to finish, the rest are cancelled and requeue.lua puts them back.

One process per supervisor also runs the Scheduler (scheduler.py): delayed jobs and schedules.

Redis errors are handled at the edge of each loop (connection.Outage: backoff, logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio

from pool import clock, heartbeat
from pool.acks import AckBatcher
from pool.config import Config
from pool.connection import (
    REDIS_ERRORS,
    Outage,
    async_client,
    blocking_client,
    is_refusal,
    is_transient,
    replication,
    resolve_url,
)
from pool.errors import CorruptJob, ExitCode, HandlerError
from pool.execution import JobRunner
from pool.fetcher import Fetcher, Slots
from pool.handlers import Registry, load_registry
from pool.hooks import Hooks
from pool.jobs import Job, Status
from pool.keys import Keys
from pool.metrics import NoMetrics
from pool.outcomes import Failure
from pool.scheduler import Scheduler
from pool.scripts import Scripts

logger = logging.getLogger(__name__)

BACKGROUND_STOP_S = 5.0  # how long a cancelled background task may take to end
KILL_GRACE_S = 5.0  # an orphan gets this long past shutdown_timeout + heartbeat_ttl before exiting


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
        # Set when the process went over max_memory_per_process: the jobs still running when the
        # drain cancels them fail with this (see _charge_for_stop).
        self._over_memory: str | None = None
        self.parent_pid = parent_pid
        self._orphaned_at: float | None = None
        self.alive_file = alive_file
        self._alive_fd: int | None = None  # the alive file, open for the busy mark
        self.done_count = 0
        self.failed_count = 0
        self.started_ms = clock.now_ms()
        self.slots = Slots(config.concurrency, config.max_jobs_per_process)
        self._runs_scheduler = scheduler
        self.scheduler: Scheduler | None = None
        self._cancel_requested: set[str] = set()  # running jobs cancelled by `pool cancel`
        self.metrics = metrics or NoMetrics()
        self._outage = Outage(f"worker {worker_id}", self.url, self.metrics.reconnected)
        self._redis: redis.asyncio.Redis
        self._blocking: redis.asyncio.Redis
        self._scripts: Scripts
        self.fetcher: Fetcher
        self.runner: JobRunner
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

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Graceful stop: no more claims; running jobs get ``shutdown_timeout`` to finish.

        A second call stops fast: running jobs are cancelled at once (and requeued).
        """
        if self.stopping.is_set():
            self.fast_stop = True
            self._fast.set()
        self.stopping.set()
        self.slots.freed.set()
        with contextlib.suppress(AttributeError):  # not running yet
            self.fetcher.wake()

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
        # Job acks, a claim or handback per watched queue, the scheduler's subscription, promotion
        # and one fire per schedule can all be in flight at once.
        connections = self.config.concurrency + 2 * len(self.config.queues) + len(self.config.schedules) + 8
        self._redis = async_client(self.config, self.url, max_connections=connections)
        self._blocking = blocking_client(self.config, self.url, max_connections=len(self.config.queues) + 1)
        self._scripts = Scripts(self._redis, self.keys)
        self.fetcher = Fetcher(self.config, self.worker_id, self._scripts, self._redis, self._blocking, self.slots,
                               self._start_all, self._outage, self.stopping, self.burst)
        self.scheduler = Scheduler(self.config, self.worker_id, self._redis, self._scripts, self._with_retry,
                                   self.stopping, backup=not self._runs_scheduler)
        background = [asyncio.create_task(self.scheduler.run(), name="scheduler")]
        self.acks = AckBatcher(self._redis, self._scripts, self.worker_id, self.config.dead_letter.max_jobs,
                               self._with_retry, replication(self.config))
        background.append(asyncio.create_task(self.acks.run(), name="acks"))
        self.runner = JobRunner(self.config, self.registry, self.worker_id, self._executor, self.acks,
                                self._note_due, self.recycle)
        if self.alive_file is not None:
            self._alive_fd = os.open(self.alive_file, os.O_WRONLY)
        logger.info("worker %s serving %s with %d job slots%s", self.worker_id, self._describe_queues(),
                    self.config.concurrency, " (runs the scheduler)" if self._runs_scheduler else "")
        try:
            background += [asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                           asyncio.create_task(self._local_liveness_loop(), name="liveness")]
            fetcher = asyncio.create_task(self.fetcher.run(), name="fetcher")
            for task in (*background, fetcher):
                task.add_done_callback(self._background_done)
            await self._wait_until_done(fetcher)
            try:
                await self._drain()
            finally:
                self.runner.completed_lines.flush()
                # Before the background tasks end: the liveness loop keeps the supervisor patient.
                await self.hooks.shutdown(self.worker_id)
            await self._cancel_background(background)
            await self._deregister()
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            if self._alive_fd is not None:
                fd, self._alive_fd = self._alive_fd, None  # a late job callback must not write to a reused fd
                os.close(fd)
            await self._redis.aclose()
            await self._blocking.aclose()
        logger.info("worker %s stopped: %d done, %d failed", self.worker_id, self.done_count, self.failed_count)

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
        self.stop()
        self.stop()

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

    async def _drain(self) -> None:
        """Let running jobs finish within shutdown_timeout (or until a second stop), cancel the
        rest, and requeue them. Jobs already writing their outcome are let finish."""
        running = list(self.slots.running.values())
        if running and not self.fast_stop:
            logger.info("waiting up to %gs for %d running job(s)", self.config.shutdown_timeout_s, len(running))
            fast = asyncio.create_task(self._fast.wait())
            waits: list[asyncio.Future[Any]] = [asyncio.gather(*running, return_exceptions=True), fast]
            await asyncio.wait(waits, timeout=self.config.shutdown_timeout_s, return_when=asyncio.FIRST_COMPLETED)
            fast.cancel()
        pending = [task for job_id, task in self.slots.running.items() if job_id not in self.slots.acking]
        for task in pending:
            task.cancel()
        await asyncio.gather(*self.slots.running.values(), return_exceptions=True)
        for queue in self.config.queues:
            moved, _ = await self._with_retry(
                "requeue", self._scripts.requeue, queue, self.worker_id, "stop",
                self.config.max_deliveries, clock.now_ms(), events=self.config.events,
            )
            if moved:
                logger.warning("requeued %d unfinished job(s) on %s", moved, queue)

    # -- claimed jobs ---------------------------------------------------------------------------

    def _note_due(self, queue: str, due_ms: int) -> None:
        """A retry falls due at ``due_ms``: this process's scheduler (if it runs one) re-arms."""
        if self.scheduler is not None:
            self.scheduler.learn(queue, due_ms)

    def _start_all(self, queue: str, reply: list[Any]) -> int:
        """Start a task per claimed record of a claim.lua reply; returns how many there were."""
        next_due, records = int(reply[0]), reply[1]
        if next_due >= 0:
            self._note_due(queue, next_due)
        for pairs in records:
            fields = dict(zip(pairs[::2], pairs[1::2], strict=True))
            if b"solo_wait" in fields:
                self.slots.idle_wanted = True
                continue
            job_id = fields.get(b"id", b"").decode()
            if b"missing" in fields:
                logger.error("job %s was claimed but its record is gone; dropped", job_id)
                continue
            if job_id in self.slots.running:
                continue
            try:
                job = Job.from_hash(fields)
            except CorruptJob as exc:
                # A record this version cannot read must fail, not crash the process: a crash would
                # requeue it and crash the next worker the same way.
                job = Job(id=job_id, handler=fields.get(b"handler", b"?").decode(errors="replace"), queue=queue)
                self._spawn(job, self._reject(job, f"CorruptJob: {exc}"))
                continue
            if b"solo" in fields:
                self.slots.solo = job_id
                logger.warning("job %s: workers died holding it %s times; running it alone", job_id,
                               fields.get(b"deliveries", b"?").decode())
            self._spawn(job, self._run_job(job))
        return len(records)

    def _spawn(self, job: Job, work: Any) -> None:
        if not self.slots.running:
            self._mark_busy(True)
        task = asyncio.create_task(work, name=f"job:{job.id}")
        self.slots.running[job.id] = task
        self.slots.starts_left -= 1
        self.metrics.started(job)
        task.add_done_callback(functools.partial(self._job_finished, job.id, job.queue))

    async def _reject(self, job: Job, error: str) -> None:
        status, decision = await self.runner.record_failure(
            job, Failure("CorruptJob", error.removeprefix("CorruptJob: ")), 0.0)
        if decision is not None:
            self.metrics.finished(job, status, 0.0)
        self.failed_count += 1
        logger.error("job %s failed: %s", job.id, error, extra={"job_id": job.id, "queue": job.queue})

    def _job_finished(self, job_id: str, queue: str, task: asyncio.Task[None]) -> None:
        self.slots.running.pop(job_id, None)
        self.slots.acking.discard(job_id)
        if not self.slots.running:
            self._mark_busy(False)
        self.metrics.ended(queue)
        if self.slots.solo == job_id:
            self.slots.solo = None
        self.slots.freed.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("job %s: internal error", job_id, exc_info=task.exception())
        # Judged here, where every started job ends (a rejected record, an internal error too):
        # a process that may start no more must not wait for claims forever.
        if self.slots.starts_left <= 0 and not self.slots.running and not self.stopping.is_set():
            self.recycle(f"ran {self.config.max_jobs_per_process} jobs (max_jobs_per_process)")

    # -- running --------------------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        started = clock.monotonic()
        try:
            if job.id in self._cancel_requested:
                raise asyncio.CancelledError  # cancelled before it started
            result, failure = await self.runner.execute(job)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if job.id in self._cancel_requested:
                result, failure = None, Failure("Cancelled", "cancelled while running")
            elif task is not None and task.cancelling() == 0:
                # The handler raised CancelledError itself (an inner task was cancelled): that is a
                # failure of the job, not a stop of the worker.
                result, failure = None, Failure("CancelledError", "the handler raised asyncio.CancelledError")
            elif (charge := self._charge_for_stop()) is not None:
                result, failure = None, charge
            else:
                raise  # shutting down: the job stays in the active list and is requeued
        run_ms = (clock.monotonic() - started) * 1000
        self.slots.finishing(job.id)  # its slot takes the next job while the outcome is written
        try:
            if failure is None:
                assert result is not None
                status, decision = Status.COMPLETED, None
                acked = await self.runner.record_success(job, result, run_ms)
            else:
                status, decision = await self.runner.record_failure(job, failure, run_ms)
                acked = decision is not None
        finally:
            self._cancel_requested.discard(job.id)
        if status is Status.COMPLETED:
            self.done_count += 1
        else:
            self.failed_count += 1
        self.runner.log(job, status, run_ms, failure, decision, acked)
        if acked:
            self.metrics.finished(job, status, run_ms)

    def _charge_for_stop(self) -> Failure | None:
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

    # -- heartbeat and registry -----------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            self._check_process()
            try:
                await self._heartbeat()
                self._outage.recovered("heartbeat")
                await asyncio.sleep(self.config.heartbeat_interval_s)
            except REDIS_ERRORS as exc:
                if not is_transient(exc):
                    raise
                if is_refusal(exc):
                    await self._renew()
                await self._outage.retry_after(exc, "heartbeat")

    async def _renew(self) -> None:
        """A refused heartbeat: keep the liveness keys alive with what Redis still takes, if anything."""
        with contextlib.suppress(*REDIS_ERRORS):
            await heartbeat.renew(self._redis, self.keys, self.worker_id, self.config.queues,
                                  int(self.config.heartbeat_ttl_s * 1000))

    def _check_process(self) -> None:
        """Stop when orphaned (the supervisor died); recycle when over max_memory_per_process.

        An orphan that cannot finish stopping (Redis unreachable, so acks and the requeue retry
        forever) exits after shutdown_timeout + heartbeat_ttl: nobody would ever stop it, and its
        unfinished jobs are safe in its active list, reclaimed once its heartbeat has expired.
        """
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            now = clock.monotonic()
            if self._orphaned_at is None:
                self._orphaned_at = now
                logger.error("worker %s: its supervisor (pid %d) is gone; stopping", self.worker_id, self.parent_pid)
                self.stop()
            elif now - self._orphaned_at > self.config.shutdown_timeout_s + self.config.heartbeat_ttl_s + KILL_GRACE_S:
                logger.error("worker %s: orphaned and still unable to stop (Redis unreachable?); exiting. Its "
                             "unfinished jobs are reclaimed from its active list once its heartbeat expires",
                             self.worker_id)
                logging.shutdown()
                os._exit(ExitCode.JOB_FAILED)
        limit = self.config.max_memory_per_process
        if limit and (rss := heartbeat.resident_memory_bytes()) > limit:
            usage = f"uses {rss / 2**20:.0f} MiB, over max_memory_per_process ({limit / 2**20:.0f} MiB)"
            if self._over_memory is None:
                self._over_memory = f"its worker process {usage}"
            self.recycle(usage)

    def _mark_busy(self, busy: bool) -> None:
        """Write whether jobs run into the alive file's first byte, for the supervisor to read if
        this process dies: a death while they run is their doing, not a crash loop. One pwrite
        when the process turns busy or idle, not per job, and no Redis (a crash leaves no time)."""
        if self._alive_fd is not None:
            os.pwrite(self._alive_fd, b"1" if busy else b"0", 0)

    async def _local_liveness_loop(self) -> None:
        """Touch the alive file from the event loop: a frozen loop stops touching it."""
        if self.alive_file is None:
            return
        while True:
            os.utime(self.alive_file)
            await asyncio.sleep(self.config.heartbeat_interval_s)

    def _state(self) -> str:
        if self.stopping.is_set():
            return "stopping"
        return "busy" if self.slots.running else "idle"

    async def _heartbeat(self) -> None:
        to_cancel = await heartbeat.beat(
            self._redis, self.keys, self.worker_id, self.config.queues, self._state(),
            int(self.config.heartbeat_ttl_s * 1000), {
                "started_ms": self.started_ms, "in_flight": len(self.slots.running), "done": self.done_count,
                "failed": self.failed_count, "concurrency": self.config.concurrency,
                "rss_bytes": heartbeat.resident_memory_bytes(),
            })
        self._cancel_running(to_cancel)

    def _cancel_running(self, job_ids: Iterable[str]) -> None:
        """Cancel the jobs that `pool cancel` asked this worker to stop; they finish as cancelled.

        A job claimed but not started yet is remembered and cancelled as it starts.
        """
        for job_id in job_ids:
            if job_id in self.slots.acking:
                continue  # finishing anyway
            self._cancel_requested.add(job_id)
            task = self.slots.running.get(job_id)
            if task is not None:
                logger.info("job %s: cancelling it as requested", job_id)
                task.cancel()

    async def _deregister(self) -> None:
        """Leave the registry, trying for one heartbeat TTL at most: the entry expires by itself
        then, and an orphan must never wait forever on a Redis that is gone."""
        deadline = clock.monotonic() + self.config.heartbeat_ttl_s
        while True:
            try:
                await heartbeat.deregister(self._redis, self.keys, self.worker_id)
                return
            except REDIS_ERRORS as exc:
                if not is_transient(exc):
                    raise
                if clock.monotonic() >= deadline:
                    logger.warning("worker %s: could not leave the registry (Redis unreachable or refusing "
                                   "writes); its entry expires by itself", self.worker_id)
                    return
                await self._outage.retry_after(exc, "deregister")

    async def _with_retry(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Retry an idempotent step through an outage or a refusal (OOM, MISCONF, BUSY, READONLY)
        until it succeeds (acks are never dropped). ``what`` names the path for the Outage."""
        while True:
            try:
                result = await func(*args, **kwargs)
                self._outage.recovered(what)
                return result
            except REDIS_ERRORS as exc:
                if not is_transient(exc):
                    raise
                await self._outage.retry_after(exc, what)


def main(config: Config, worker_id: str, url: str, alive_file: str | None = None, scheduler: bool = True) -> int:
    """Entry point of a forked worker process; returns its exit code.

    Imports the handlers and builds the event loop (uvloop) and every Redis client here, after the
    fork, so a rolling restart (SIGHUP) runs new code. SIGTERM stops gracefully, a second SIGTERM
    stops fast; SIGINT is ignored because the supervisor relays it.
    """
    import signal

    import uvloop

    try:
        registry = load_registry(config.handlers, config.base_dir, config.scripts, config.import_paths)
        hooks = Hooks.load(config)
    except HandlerError as exc:
        logger.error("cannot start: %s", exc)
        return ExitCode.BOOT
    from pool import metrics

    recorder = metrics.WorkerMetrics() if config.metrics.enabled and metrics.is_enabled() else None
    worker = Worker(config, registry, worker_id, url=url, parent_pid=os.getppid(), alive_file=alive_file,
                    scheduler=scheduler, metrics=recorder, hooks=hooks)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        loop = runner.get_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        runner.run(worker.run())
    return worker.exit_code
