"""Outage pacing: a retry waits out its backoff, unless another path of the process reconnects."""

from __future__ import annotations

import asyncio

from pool.connection import Outage
from pool.testing import async_wait_until


async def waiting_retry(outage: Outage) -> asyncio.Task[None]:
    """A retry task, once it waits on the outage's wake-up."""
    task = asyncio.create_task(outage.retry_after(ConnectionError("gone")))

    async def waits() -> bool:
        return outage._ended is not None and not task.done()

    await async_wait_until(waits, timeout=5, message="the retry waiting")
    return task


async def test_a_retry_wakes_when_another_path_reconnects(monkeypatch):
    monkeypatch.setattr("pool.connection.backoff_s", lambda attempt: 30.0)
    outage = Outage("worker w", "redis://localhost")
    waiting = await waiting_retry(outage)
    assert outage.is_ongoing
    outage.recovered()  # say, the fetcher's claim went through
    await asyncio.wait_for(waiting, 5)  # not the 30 s backoff
    assert not outage.is_ongoing


async def test_a_retry_is_not_woken_while_redis_stays_down(monkeypatch):
    monkeypatch.setattr("pool.connection.backoff_s", lambda attempt: 30.0)
    outage = Outage("worker w", "redis://localhost")
    waiting = await waiting_retry(outage)
    wake_up = outage._ended
    for _ in range(20):  # other paths keep failing: nothing sets the wake-up
        outage.failed(ConnectionError("still gone"))
    assert wake_up is not None and not wake_up.is_set() and not waiting.done()
    outage.recovered()
    await asyncio.wait_for(waiting, 5)
    # a later outage waits on a fresh wake-up, not the one the last outage set
    second = await waiting_retry(outage)
    assert outage._ended is not wake_up and not outage._ended.is_set()
    outage.recovered()
    await asyncio.wait_for(second, 5)
