"""Helpers we ship and use in our own tests: wait for a state, run a worker until queues empty,
fill a dead set without running anything.

Never synchronise a test on a fixed sleep: wait for the state you need, with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis

from pool.config import Config
from pool.handlers import Registry, load_registry
from pool.jobs import JobSpec, new_job
from pool.keys import Keys, make_worker_id
from pool.lua import Ack, Scripts
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


BURY_CHUNK = 1_000  # jobs per enqueue, claim and ack call of :func:`bury`: each call stays short


def bury(client: redis.Redis, key_prefix: str, queue: str, job_ids: Sequence[str], now_ms: int,
         handler: str = "pool.testing.dead", dead_max: int = 1_000_000) -> None:
    """Make dead jobs fast: enqueue, claim and ack each as dead through the same scripts as a
    worker does (a real record, history and dead-set entry), without running any handler.

    Args:
        client: a sync client of the pool's server.
        key_prefix: the config's ``key_prefix``.
        queue: a queue with no jobs waiting (the claim would take those first).
        job_ids: ids not in use on ``queue``.
        now_ms: their time of death (epoch ms): their score in the dead set.
        dead_max: as ``dead_letter.max``: the dead set is trimmed to it.

    Raises:
        ValueError: jobs wait in ``queue``.
    """
    keys = Keys(key_prefix)
    if client.llen(keys.queue(queue)):
        raise ValueError(f"bury: jobs wait in queue {queue!r}; bury into a queue with none waiting")
    scripts = Scripts(client, keys)
    worker_id = make_worker_id("bury")
    for first in range(0, len(job_ids), BURY_CHUNK):
        chunk = job_ids[first:first + BURY_CHUNK]
        jobs = [new_job(JobSpec(handler, queue=queue, job_id=job_id), now_ms, default_queue=queue,
                        max_payload_bytes=1024) for job_id in chunk]
        scripts.enqueue(queue, [(job.id, 0, fields) for job, fields in jobs], now_ms)
        scripts.claim(queue, worker_id, now_ms, len(chunk), 0)
        acks = [Ack(job_id, "dead", now_ms, 7 * 86_400_000, ["error", "RuntimeError: buried"]) for job_id in chunk]
        scripts.ack_many(queue, worker_id, acks, dead_max=dead_max)
