"""Helpers we ship and use in our own tests: wait for a state, run a worker until queues empty.

Never synchronise a test on a fixed sleep: wait for the state you need, with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pool.config import Config
from pool.handlers import Registry, load_registry
from pool.keys import make_worker_id
from pool.worker import Worker

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> T:
    """Call ``predicate`` until it returns something truthy; return that.

    Raises:
        TimeoutError: naming ``message`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], Awaitable[T]], timeout: float = 10.0,
                           interval: float = 0.02, message: str = "condition") -> T:
    """The asyncio twin of :func:`wait_until` for async predicates."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {message}")
        await asyncio.sleep(interval)


def process_alive(pid: int) -> bool:
    """Whether the process runs, asked of the OS (its heartbeat key may lapse while it lives, e.g.
    while Redis refuses commands). A zombie not yet reaped counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def drain(config: Config, url: str, registry: Registry | None = None) -> Worker:
    """Run one in-process worker until every configured queue is empty and no job runs.

    Returns the worker, whose ``done_count`` and ``failed_count`` say what it did.
    """
    registry = registry or load_registry(config.handlers, config.base_dir, config.scripts, config.import_paths)
    worker = Worker(config, registry, make_worker_id(secrets.token_hex(3)), url=url, burst=True)
    await worker.run()
    return worker
