"""Running one job: its handler under its timeout, then recording the outcome (ack.lua).

The worker claims jobs and owns their tasks; a :class:`JobRunner` does what happens inside one
(:meth:`JobRunner.run`, the whole story of a job from start to ack): call the handler (a
coroutine, or a plain function in the thread pool), turn what happened into a result or a
:class:`~pool.worker.outcomes.Failure` (a cancellation too: requested, the handler's own, or a stop),
free the job's slot, ask :mod:`pool.outcomes` where the job goes next, write that with one ack,
log one line and count it. A plain function cannot be cancelled: if its thread outlives its
timeout by ``timeout_grace`` the runner reports it so the process recycles.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pool
from pool import clock, context
from pool.handlers import Registry
from pool.jobs import Job, Status, dumps
from pool.logs import Completed, CompletedLines
from pool.lua import Ack, AckCode
from pool.metrics import NoMetrics
from pool.worker import outcomes
from pool.worker.acks import AckBatcher
from pool.worker.outcomes import Decision, Failure
from pool.worker.shared import WorkerContext

logger = logging.getLogger("pool.worker")
job_logger = logging.getLogger("pool.jobs")  # one line per finished job: its level is set apart


# Frames of the machinery between the worker and a handler: the stored traceback starts below them.
_MACHINERY_DIRS = tuple(os.path.dirname(str(module.__file__)) + os.sep for module in (pool, concurrent.futures, asyncio))


def _handler_traceback(exc: BaseException) -> str:
    """The traceback of a handler's exception from the handler's own frame down: the frames of
    this module, the thread pool and asyncio above it are the same for every job, and noise.
    A failure inside pool's own code (no frame of the user's) keeps its whole traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_MACHINERY_DIRS):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb if tb is not None else exc.__traceback__))


class JobRunner:
    """Runs handlers and records outcomes for one worker.

    Args:
        context: the worker's config, id (written into acks and history) and job slots (a job
            frees its slot as its outcome is being written).
        registry: the handlers this worker may run.
        executor: the thread pool for plain-function handlers.
        acks: the worker's ack batcher (ack.lua, retried through outages).
        on_due: called with (queue, due_ms) when a retry is scheduled.
        on_stuck: called with a reason when a handler thread outlives its timeout and grace.
        charge_for_stop: the failure of a job a stop cancels, or None when the stop charges
            nobody (heartbeat.Presence.charge_for_stop).
        metrics: what to record for Prometheus.
    """

    def __init__(
        self, context: WorkerContext, registry: Registry, executor: ThreadPoolExecutor, acks: AckBatcher,
        on_due: Callable[[str, int], None], on_stuck: Callable[[str], None],
        charge_for_stop: Callable[[], Failure | None], metrics: NoMetrics,
    ) -> None:
        self.config = context.config
        self.registry = registry
        self.worker_id = context.worker_id
        self.executor = executor
        self.acks = acks
        self.slots = context.slots
        self.on_due = on_due
        self.on_stuck = on_stuck
        self.charge_for_stop = charge_for_stop
        self.metrics = metrics
        self._watchers: set[asyncio.Task[None]] = set()
        self.completed_lines = CompletedLines(job_logger)
        self.done_count = 0
        self.failed_count = 0

    # -- one job, start to ack ------------------------------------------------------------------

    async def run(self, job: Job) -> None:
        """Run the job's handler, free its slot, record its outcome with one ack, log and count it.

        Raises:
            asyncio.CancelledError: the worker stops and charges nobody: the job stays in the
                running set and is requeued.
        """
        started = clock.monotonic()
        try:
            if job.id in self.slots.cancel_requested:
                raise asyncio.CancelledError  # cancelled before it started
            result, failure = await self.execute(job)
        except asyncio.CancelledError:
            result, failure = None, self._cancellation(job)
        run_ms = (clock.monotonic() - started) * 1000
        self.slots.returned(job.id)  # its slot takes the next job while the outcome is written
        if failure is None:
            assert result is not None
            status, decision = Status.COMPLETED, None
            acked = await self.record_success(job, result, run_ms)
        else:
            status, decision = await self.record_failure(job, failure, run_ms)
            acked = decision is not None
        self._count(status)
        self.log(job, status, run_ms, failure, decision, acked)
        if acked:
            self.metrics.acked(job, status, run_ms)

    def _cancellation(self, job: Job) -> Failure:
        """What a cancellation of the job's task means; re-raises it when it is the worker's stop."""
        task = asyncio.current_task()
        if job.id in self.slots.cancel_requested:
            return Failure("Cancelled", "cancelled while running")
        if task is not None and task.cancelling() == 0:
            # The handler raised CancelledError itself (an inner task was cancelled): that is a
            # failure of the job, not a stop of the worker.
            return Failure("CancelledError", "the handler raised asyncio.CancelledError")
        charge = self.charge_for_stop()
        if charge is None:
            raise asyncio.CancelledError  # shutting down: the job stays in the running set and is requeued
        return charge

    async def reject(self, job: Job, error: str) -> None:
        """Fail a job whose record this version cannot read (``CorruptJob: ...``) without running it.

        A record that cannot be read must fail, not crash the process: a crash would requeue it
        and crash the next worker the same way.
        """
        status, decision = await self.record_failure(job, Failure("CorruptJob", error.removeprefix("CorruptJob: ")),
                                                     0.0)
        if decision is not None:
            self.metrics.acked(job, status, 0.0)
        self.failed_count += 1
        logger.error("job %s failed: %s", job.id, error, extra={"job_id": job.id, "queue": job.queue})

    def _count(self, status: Status) -> None:
        if status is Status.COMPLETED:
            self.done_count += 1
        else:
            self.failed_count += 1

    # -- the handler ----------------------------------------------------------------------------

    async def execute(self, job: Job) -> tuple[bytes | None, Failure | None]:
        """Run the handler: (result JSON, None) or (None, failure). Raises only CancelledError.

        Any other exception the handler raises, BaseException subclasses included, is its
        attempt's failure (see the comment at the last ``except``)."""
        handler = self.registry.get(job.handler)
        if handler is None:
            return None, Failure("UnknownHandler", (
                f"handler '{job.handler}' is not registered in this pool (registered: "
                f"{', '.join(self.registry.names()) or 'none'}); add it to `handlers:` in pool.yaml"))
        timeout_s = job.timeout_ms / 1000 if job.timeout_ms else self.config.timeout_s
        thread: Future[Any] | None = None
        token = context.enter(job, clock.now_ms() + int(timeout_s * 1000))  # for pool.current_job()
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                if handler.is_async:
                    result = await handler.func(*job.args, **(job.kwargs or {}))
                else:
                    # run in a copy of this context, so that current_job() works in the thread too
                    thread = self.executor.submit(contextvars.copy_context().run, handler.func, *job.args,
                                                  **(job.kwargs or {}))
                    # shield: on timeout stop waiting, but keep the future to see whether it ends
                    result = await asyncio.shield(asyncio.wrap_future(thread))
        except TimeoutError as exc:
            if not deadline.expired():
                return None, Failure.of(exc, traceback.format_exc())
            if thread is not None and thread.cancel():
                return None, Failure("JobTimeout", f"job waited {timeout_s:g}s for a free thread and never "
                                     "started (threads are stuck in earlier jobs)")
            if thread is not None and not thread.done():
                self._watch_stuck_thread(thread, job, timeout_s)
            return None, Failure("JobTimeout", f"job exceeded its timeout of {timeout_s:g}s")
        except asyncio.CancelledError:
            if thread is not None and not thread.done():
                self._watch_stuck_thread(thread, job, timeout_s)  # a thread can only be abandoned
            raise
        except BaseException as exc:  # whatever a handler raises fails its attempt, never the worker
            # CancelledError (the job's own cancellation, or the worker's stop) is handled above and
            # keeps its meaning. Everything else is the handler's: an Exception, SystemExit, a
            # KeyboardInterrupt raised in its thread (workers ignore SIGINT, so none comes from a
            # signal), GeneratorExit, or a library's BaseException such as gevent's Timeout or
            # trio's Cancelled. Letting one escape would end the job's task without an ack, and
            # reconcile would restart the same attempt for ever, uncounted.
            details = getattr(exc, "details", None)  # a handler's own account ("" for none), e.g. a script's
            return None, Failure.of(exc, details if details is not None else _handler_traceback(exc))
        finally:
            context.leave(token)
        return self._encode_result(job, result)

    def _encode_result(self, job: Job, result: Any) -> tuple[bytes | None, Failure | None]:
        try:
            encoded = dumps(result)
        except TypeError as exc:
            return None, Failure("SerializationError", (
                f"the result of {job.handler} is not JSON-serialisable ({type(result).__name__}: {exc})"))
        if len(encoded) > self.config.max_result_bytes:
            return None, Failure("ResultTooLarge", (
                f"the result of {job.handler} is {len(encoded)} bytes, over max_result_size "
                f"({self.config.max_result_bytes} bytes); store it elsewhere and return a reference"))
        return encoded, None

    async def record_success(self, job: Job, result: bytes, run_ms: float) -> bool:
        now_ms = clock.now_ms()
        event = outcomes.event(job, Status.COMPLETED, run_ms, now_ms, result=result) if self.config.events else None
        code = await self.acks.ack(job.queue, Ack(
            job.id, Status.COMPLETED.value, now_ms, self._result_ttl_ms(job), ("result", result),
            clear=job.error is not None or job.traceback is not None, event=event))
        return code is not AckCode.NOT_ACTIVE

    async def record_failure(self, job: Job, failure: Failure, run_ms: float) -> tuple[Status, Decision | None]:
        """Record a failed attempt: retry later, or finish as dead, failed or cancelled."""
        now_ms = clock.now_ms()
        if failure.kind == "Cancelled":
            decision = Decision(Status.CANCELLED)
        else:
            settings = outcomes.retry_settings(self.config, self.registry.get(job.handler), job)
            decision = outcomes.decide(failure, settings, job, now_ms)
        fields: tuple[Any, ...] = ("error", failure.error)
        if failure.traceback:
            fields += ("traceback", failure.traceback)
        dead = decision.status is Status.DEAD
        ttl_ms = int(self.config.dead_letter.ttl_s * 1000) if dead else self._result_ttl_ms(job)
        event = outcomes.event(job, decision.status, run_ms, now_ms, error=failure.error,
                               due_ms=decision.due_ms) if self.config.events else None
        code = await self.acks.ack(job.queue, Ack(
            job.id, decision.status.value, now_ms, ttl_ms, fields, due_ms=decision.due_ms,
            history=outcomes.history_entry(job, failure, decision, now_ms, self.worker_id), event=event))
        if code is AckCode.CANCELLED:  # cancelled while it ran: ack.lua finished it instead of retrying
            decision = Decision(Status.CANCELLED)
        elif decision.due_ms is not None:
            self.on_due(job.queue, decision.due_ms)
        return decision.status, decision if code is not AckCode.NOT_ACTIVE else None

    def _result_ttl_ms(self, job: Job) -> int:
        """How long the finished job's record and result stay: its own result_ttl, or the pool's."""
        return job.result_ttl_ms or int(self.config.result_ttl_s * 1000)

    def _watch_stuck_thread(self, thread: Future[Any], job: Job, timeout_s: float) -> None:
        """A thread cannot be cancelled: if it still runs `timeout_grace` later, recycle the process."""
        grace = self.config.timeout_grace_s

        async def watch() -> None:
            try:
                async with asyncio.timeout(grace):  # (not wait_for: see connection.wait_event)
                    await asyncio.shield(asyncio.wrap_future(thread))
            except TimeoutError:
                self.on_stuck(f"the thread of job {job.id} ({job.handler}) is still running "
                             f"{timeout_s + grace:g}s after it started (timeout {timeout_s:g}s + "
                             f"timeout_grace {grace:g}s) and cannot be cancelled")
            except Exception:  # the job already failed: only whether the thread ends matters
                pass

        task = asyncio.create_task(watch(), name=f"stuck:{job.id}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def log(self, job: Job, status: Status, run_ms: float, failure: Failure | None,
                 decision: Decision | None, acked: bool) -> None:
        if acked and failure is None:
            if job_logger.isEnabledFor(logging.INFO):  # (`pool.jobs: warning`: no cost at all)
                self.completed_lines.add(Completed(job.id, job.handler, job.queue, job.wait_ms, run_ms))
            return
        wait_ms = job.wait_ms
        extra = {"job_id": job.id, "queue": job.queue, "handler": job.handler, "attempt": job.attempts,
                 "outcome": status.value, "wait_ms": wait_ms, "run_ms": round(run_ms, 1)}
        head = f"job {job.id} {job.handler} queue={job.queue} wait={wait_ms}ms run={run_ms:.1f}ms"
        if not acked:
            job_logger.warning("%s finished but was requeued meanwhile; outcome dropped", head, extra=extra)
        elif decision is not None and decision.status is Status.RETRYING:
            assert failure is not None  # a decision comes only from record_failure
            job_logger.warning("%s failed (attempt %d), retrying in %.1fs: %s", head, job.attempts,
                           decision.delay_s or 0, failure.error, extra=extra)
        elif status in (Status.FAILED, Status.DEAD):
            # ERROR with the exception: what Sentry's and OpenTelemetry's logging integrations report
            job_logger.error("%s %s: %s", head, status.value, failure and failure.error, extra=extra,
                             exc_info=failure.exc if failure else None)
        else:
            job_logger.warning("%s %s: %s", head, status.value, failure and failure.error, extra=extra)
