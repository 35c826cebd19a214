"""Group commit of acknowledgements: every ack that is waiting when the previous batch returns
goes to Redis in one pipelined round trip.

A busy worker finishes jobs faster than one round trip per ack allows; a lone job's ack leaves at
once (nothing waits for a timer). Each ack stays its own ack.lua call, so each job's outcome is
still written atomically, and the reply of each goes back to the job that sent it. A batch lost
to an outage is sent again whole: ack.lua recognises a retried ack (it returns 0, or 2), so no
outcome is written twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio

from pool.connection import OUTAGE_ERRORS
from pool.scripts import Scripts

MAX_BATCH = 256  # acks per round trip at most: a bounded pipeline, replies in bounded memory


class AckBatcher:
    """Collects acks and sends them in batches, one round trip each.

    Args:
        client: the worker's Redis client.
        scripts: the worker's scripts (ack.lua).
        with_retry: the worker's outage-aware retry of an idempotent step.
    """

    def __init__(self, client: redis.asyncio.Redis, scripts: Scripts,
                 with_retry: Callable[..., Awaitable[Any]]) -> None:
        self.client = client
        self.scripts = scripts
        self.with_retry = with_retry
        self._pending: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self.batches = 0  # round trips sent (what the tests and benchmarks compare with acks)
        self.acks = 0

    async def ack(self, *args: Any, **kwargs: Any) -> Any:
        """Queue one ack (the arguments of :meth:`Scripts.ack`); returns ack.lua's reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((args, kwargs, future))
        self._wake.set()
        return await asyncio.shield(future)  # a cancelled job task must not drop others' replies

    async def run(self) -> None:
        """Send batches until cancelled (after the worker's drain: nothing is pending then)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                replies = await self.with_retry("ack", self._send, batch)
                self.batches += 1
                self.acks += len(batch)
                for (_, _, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)

    async def _send(self, batch: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for args, kwargs, _ in batch:
                await self.scripts.ack(*args, client=pipe, **kwargs)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, OUTAGE_ERRORS):  # LOADING after a restart: the whole batch again
                raise reply
        return replies
