"""The job slots of one worker process: its admission rule, and the only writer of its state.

The rule: at most ``concurrency`` handlers run, at most 2 x concurrency jobs are held (handlers
running plus outcomes being written), at most ``max_jobs_per_process`` start in the process's
life, and a suspect (redelivered) job runs alone. The fetcher asks it whether, and how much, to
claim; the worker tells it which job started and ended. Everyone else only reads it. It also keeps the
cancellations `pool cancel` asked for, which may arrive before the job they name has started.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

logger = logging.getLogger("pool.worker")


class JobSlots:
    """Running jobs, slots reserved for claims in flight, and the suspect job running alone.

    A job whose handler has returned gives its slot to the next job at once, while its outcome
    is written (``acking``): the next claim overlaps the ack instead of waiting behind it. Its
    task stays in ``running`` until the ack is written (a stop waits for it, reconcile leaves it).
    When acks stall (an outage, a replica slow to confirm), claiming stops at 2 x concurrency
    instead of piling up finished jobs that a kill would all run again.

    Args:
        concurrency: handlers that may run at once.
        max_starts: jobs the process may start before it recycles (0: no limit).
    """

    def __init__(self, concurrency: int, max_starts: int = 0) -> None:
        self.concurrency = concurrency
        self.starts_left: float = max_starts or math.inf
        self.running: dict[str, asyncio.Task[None]] = {}
        self._queue_of: dict[str, str] = {}  # the queue of each running job, for the heartbeat
        self.acking: set[str] = set()  # in running, handler done, outcome being written
        self.reserved = 0
        self.solo: str | None = None  # a suspect job running alone: nothing else is claimed
        self.idle_wanted = False  # a suspect job waits until this process is idle
        self.cancel_requested: set[str] = set()  # jobs `pool cancel` asked this process to stop
        self._freed = asyncio.Event()

    # -- reading --------------------------------------------------------------------------------

    def busy(self) -> int:
        """Jobs whose handlers run now."""
        return len(self.running) - len(self.acking)

    def free(self) -> int:
        """Slots a claim may fill now (reserved ones excluded)."""
        room = min(self.concurrency - self.busy(), 2 * self.concurrency - len(self.running), self.starts_left)
        return int(room) - self.reserved

    def may_claim(self) -> bool:
        if self.solo is not None or (self.idle_wanted and (self.busy() or self.reserved)):
            return False
        return self.free() > 0

    def is_spent(self) -> bool:
        """The process may start no more jobs (max_jobs_per_process) and none is left running."""
        return self.starts_left <= 0 and not self.running

    def running_by_queue(self) -> dict[str, int]:
        """Running jobs (also those writing their outcome: still in the active list) by queue."""
        return dict(Counter(self._queue_of.values()))

    def handlers_running(self) -> list[asyncio.Task[None]]:
        """The tasks of jobs whose handlers run (not those writing their outcome)."""
        return [task for job_id, task in self.running.items() if job_id not in self.acking]

    # -- transitions ----------------------------------------------------------------------------

    def started(self, job_id: str, task: asyncio.Task[None], solo: bool = False, queue: str = "") -> None:
        """A claimed job's task started, from ``queue``; a ``solo`` (suspect) one runs alone."""
        self.running[job_id] = task
        self._queue_of[job_id] = queue
        self.starts_left -= 1
        if solo:
            self.solo = job_id

    def returned(self, job_id: str) -> None:
        """The job's handler returned: its slot is free (and a suspect job no longer runs alone)."""
        self.acking.add(job_id)
        if self.solo == job_id:
            self.solo = None
        self._freed.set()

    def ended(self, job_id: str) -> None:
        """The job's task ended (its outcome written, or it was cancelled): it holds nothing now."""
        self.running.pop(job_id, None)
        self._queue_of.pop(job_id, None)
        self.acking.discard(job_id)
        self.cancel_requested.discard(job_id)
        if self.solo == job_id:
            self.solo = None
        self._freed.set()

    def cancel(self, job_ids: Iterable[str]) -> None:
        """Cancel the jobs that `pool cancel` asked this process to stop; they finish as cancelled.

        A job claimed but not started yet is remembered and cancelled as it starts (JobRunner.run);
        one writing its outcome is finishing anyway.
        """
        for job_id in job_ids:
            if job_id in self.acking:
                continue
            self.cancel_requested.add(job_id)
            task = self.running.get(job_id)
            if task is not None:
                logger.info("job %s: cancelling it as requested", job_id)
                task.cancel()

    def want_idle(self) -> None:
        """The next job is a suspect one: claim nothing more until this process is idle."""
        self.idle_wanted = True

    @contextmanager
    def reserving(self, count: int) -> Iterator[None]:
        """Hold ``count`` slots for a claim in flight, so that no other claim counts them free."""
        self.reserved += count
        try:
            yield
        finally:
            self.reserved -= count
            self._freed.set()

    # -- waiting --------------------------------------------------------------------------------

    async def wait_for_room(self, stopping: asyncio.Event) -> bool:
        """Wait until a claim may start; False when stopping instead.

        The room answers a suspect job's wish for an idle process (or there was none): the claim
        that follows may take it, and claim.lua asks again if it is still next and jobs run.
        """
        while not self.may_claim() and not stopping.is_set():
            await self.wait_freed()
        if stopping.is_set():
            return False
        self.idle_wanted = False
        return True

    async def wait_freed(self) -> None:
        """Until a slot is freed (a job finished or ended, a reservation returned) or :meth:`wake`."""
        self._freed.clear()
        await self._freed.wait()

    def wake(self) -> None:
        """Wake whoever waits for a slot (a stop)."""
        self._freed.set()
