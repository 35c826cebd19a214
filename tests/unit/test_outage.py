"""Outage pacing: a retry waits out its backoff, unless another path of the process reconnects."""

from __future__ import annotations

import asyncio

from pool.connection import Outage


async def test_a_retry_wakes_when_another_path_reconnects(monkeypatch):
    monkeypatch.setattr("pool.connection.backoff_s", lambda attempt: 30.0)
    outage = Outage("worker w", "redis://localhost")
    waiting = asyncio.create_task(outage.retry_after(ConnectionError("gone")))
    await asyncio.sleep(0)  # let the retry start waiting
    assert outage.is_ongoing and not waiting.done()
    outage.recovered()  # say, the fetcher's claim went through
    await asyncio.wait_for(waiting, 5)  # not the 30 s backoff
    assert not outage.is_ongoing


async def test_a_retry_waits_its_backoff_while_redis_stays_down(monkeypatch):
    monkeypatch.setattr("pool.connection.backoff_s", lambda attempt: 30.0)
    outage = Outage("worker w", "redis://localhost")
    waiting = asyncio.create_task(outage.retry_after(ConnectionError("gone")))
    for _ in range(20):  # other paths keep failing: nothing wakes the retry
        await asyncio.sleep(0)
        outage.failed(ConnectionError("still gone"))
    assert not waiting.done()
    waiting.cancel()
    # a later outage waits on its own wake-up, not the one the last outage used
    outage.recovered()
    second = asyncio.create_task(outage.retry_after(ConnectionError("gone again")))
    await asyncio.sleep(0)
    assert not second.done()
    outage.recovered()
    await asyncio.wait_for(second, 5)
