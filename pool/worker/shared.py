"""What every part of one worker process shares: built once after the fork, in process.py.

The scheduler, the ack batcher, the presence loops, the job runner and the fetcher each take a
:class:`WorkerContext` and keep only their own state beside it, so a new part (a lease keeper,
a tracer) needs one argument, not six.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio

from pool.config import Config
from pool.connection import Outage
from pool.keys import Keys
from pool.lua import Scripts
from pool.worker.slots import JobSlots


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """Attributes:
        config: the pool's settings.
        worker_id: this process's id (``host:pid:nonce``): whose running sets its claims fill.
        client: the non-blocking Redis client (blocking waits have clients of their own).
        scripts: the Lua scripts registered on ``client``.
        outage: logs and paces this process's Redis outages; idempotent steps retry through it.
        slots: the process's job slots (their one owner: see slots.py).
        stopping: set when the worker stops.
    """

    config: Config
    worker_id: str
    client: redis.asyncio.Redis
    scripts: Scripts
    outage: Outage
    slots: JobSlots
    stopping: asyncio.Event

    @property
    def keys(self) -> Keys:
        return self.scripts.keys
