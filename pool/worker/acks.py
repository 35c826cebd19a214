"""Group commit of acknowledgements: every ack that is waiting when the previous batch returns
goes to Redis in one round trip, as one ack.lua call per queue.

A busy worker finishes jobs faster than one round trip per ack allows; a lone job's ack leaves at
once (nothing waits for a timer). ack.lua writes each job's outcome atomically and answers one
code per ack, which goes back to the job that sent it; the per-queue totals, tallies and recent
lists are written once per call. A batch lost to an outage is sent again whole: ack.lua
recognises a retried ack (it answers 0, or 2), so no outcome is written twice.

With ``durability: replicated`` each batch ends with a WAIT on the same connection, so a job's
outcome is on a replica before the job counts as finished; a failover then cannot lose a result
(if no replica confirms in time, the ack stands on the master and a warning says so).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio

from pool.connection import is_refusal, is_transient
from pool.lua import Ack, AckCode
from pool.worker.shared import WorkerContext

logger = logging.getLogger("pool.acks")  # the name JSON logs show, kept stable

MAX_BATCH = 256  # acks per round trip at most: a bounded call, replies in bounded memory

Pending = tuple[str, Ack, "asyncio.Future[AckCode]"]


class AckBatcher:
    """Collects acks and sends them in batches, one round trip each.

    Args:
        context: the worker's client and scripts (ack.lua), its id (whose running sets the acked
            ids leave), dead_letter.max, and its outage (a batch is sent again, whole, until Redis
            takes it).
        replicas: WAIT's (replicas, timeout ms) after each batch; None: no wait.
    """

    def __init__(self, context: WorkerContext, replicas: tuple[int, int] | None = None) -> None:
        self.client = context.client
        self.replicas = replicas
        self.scripts = context.scripts
        self.worker_id = context.worker_id
        self.dead_max = context.config.dead_letter.max_jobs
        self.outage = context.outage
        self._pending: list[Pending] = []
        self._wake = asyncio.Event()
        self.batches = 0  # round trips sent (what the tests and benchmarks compare with acks)
        self.acks = 0

    async def ack(self, queue: str, ack: Ack) -> AckCode:
        """Queue one ack; returns ack.lua's code for it."""
        future: asyncio.Future[AckCode] = asyncio.get_running_loop().create_future()
        self._pending.append((queue, ack, future))
        self._wake.set()
        # (a job task cancelled meanwhile cancels only its own future: its ack is still sent,
        # and run() skips replies to futures that are done)
        return await future

    async def run(self) -> None:
        """Send batches until cancelled (after the worker's drain: nothing is pending then)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                by_queue: dict[str, list[Pending]] = {}
                for pending in batch:
                    by_queue.setdefault(pending[0], []).append(pending)
                replies = await self.outage.retry("ack", self._send, by_queue)
                self.batches += 1
                self.acks += len(batch)
                for group, reply in zip(by_queue.values(), replies, strict=True):
                    for index, (_, _, future) in enumerate(group):
                        if future.done():
                            continue
                        if isinstance(reply, Exception):
                            future.set_exception(reply)
                        else:
                            future.set_result(AckCode(reply[index]))

    async def _send(self, by_queue: dict[str, list[Pending]]) -> list[Any]:
        if len(by_queue) == 1 and self.replicas is None:  # the common case: no pipeline needed
            [(queue, group)] = by_queue.items()
            try:
                return [await self._call(queue, group, self.client)]
            except redis.ResponseError as exc:
                if is_refusal(exc):  # MISCONF, BUSY, READONLY ...: the whole batch again, later
                    raise
                return [exc]  # a script error: the acks of this call fail
        async def add_calls(pipe: Any) -> None:
            for queue, group in by_queue.items():
                await self._call(queue, group, pipe)

        replies = await self.scripts.pipelined(self.client, add_calls, replicas=self.replicas)
        for reply in replies:
            if isinstance(reply, Exception) and is_transient(reply):  # LOADING, BUSY ...: the whole batch again
                raise reply
        if self.replicas is not None:
            confirmed = replies.pop()
            if isinstance(confirmed, Exception) or confirmed < self.replicas[0]:
                logger.warning("%d job outcome(s) written to the master, but no replica confirmed them within "
                               "%dms (durability: replicated): a failover now would run those jobs again",
                               sum(len(g) for g in by_queue.values()), self.replicas[1])
        return replies

    def _call(self, queue: str, group: list[Pending], client: Any) -> Any:
        return self.scripts.ack_many(queue, self.worker_id, [ack for _, ack, _ in group],
                                     dead_max=self.dead_max, client=client)
