"""connection.subscription: the one way pool follows a pub/sub channel (events, wake-ups)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from pool.client import AsyncClient
from pool.connection import async_client, subscription
from pool.keys import Keys
from pool.testing import async_wait_until


async def test_a_subscription_resumes_after_client_kill_and_reads_state_again(make_config, url, r):
    """After CLIENT KILL TYPE pubsub: on_subscribed runs again, and later messages arrive."""
    channel = "t-" + uuid.uuid4().hex
    config = make_config()
    client = async_client(config, url)
    subscribed = 0

    async def on_subscribed() -> None:
        nonlocal subscribed
        subscribed += 1

    received: list[bytes] = []

    async def follow() -> None:
        async with contextlib.aclosing(subscription(client, [channel], on_subscribed=on_subscribed)) as messages:
            async for message in messages:
                received.append(message["data"])

    task = asyncio.create_task(follow())
    try:
        await async_wait_until(lambda: _ready(subscribed, 1), timeout=5, message="the first subscription")
        r.client_kill_filter(_type="pubsub")
        await async_wait_until(lambda: _ready(subscribed, 2), timeout=10, message="on_subscribed after the kill")

        async def delivered() -> bool:  # the subscription is back: a message published now arrives
            r.publish(channel, b"after")
            return b"after" in received
        await async_wait_until(delivered, timeout=10, message="a message after the kill")
        assert r.pubsub_numsub(channel)[0][1] == 1  # one subscription, not a new one beside the old
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()

    async def unsubscribed() -> bool:  # a stopped subscription closes its connection
        return r.pubsub_numsub(channel)[0][1] == 0
    await async_wait_until(unsubscribed, timeout=5, message="the subscription's connection to close")


async def _ready(count: int, at_least: int) -> bool:
    return count >= at_least


async def test_events_ends_promptly_when_its_task_is_cancelled_while_blocked(make_config, url, r):
    """A task blocked in client.events() ends with CancelledError and leaves no subscriber behind."""
    config = make_config()
    channel = Keys(config.key_prefix).events(config.queues[0])
    async with AsyncClient(config, url) as client:
        blocked = asyncio.Event()

        async def follow() -> None:
            blocked.set()
            async for _ in client.events([config.queues[0]]):
                pass

        async def subscribed() -> bool:
            return r.pubsub_numsub(channel)[0][1] == 1

        task = asyncio.create_task(follow())
        await blocked.wait()
        await async_wait_until(subscribed, timeout=5, message="events() to subscribe")
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=1.0)  # well within one get_message block (2 s)
        assert done and task.cancelled()

        async def unsubscribed() -> bool:
            return r.pubsub_numsub(channel)[0][1] == 0
        await async_wait_until(unsubscribed, timeout=5, message="the subscriber to leave")
