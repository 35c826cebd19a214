"""A worker's presence in Redis: the heartbeat write, deregistration, and its memory reading.

One pipelined round trip per beat writes, for each queue the worker serves, its liveness key
(with a TTL: gone = dead, judged by Redis) and its registry entry in the queue's hash tag (what
reclaim reads), plus the host-wide registry hash that `pool status` shows; and it collects the
running jobs that `pool cancel` asked this worker to stop. The worker decides when to beat.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import redis.asyncio

from pool import clock
from pool.keys import Keys


async def beat(
    client: redis.asyncio.Redis, keys: Keys, worker_id: str, queues: Iterable[str], state: str,
    ttl_ms: int, info: Mapping[str, Any],
) -> list[str]:
    """Renew the worker's heartbeat; returns the ids of running jobs to cancel.

    Args:
        state: busy, idle or stopping.
        ttl_ms: how long the liveness keys live without a next beat.
        info: numbers shown by `pool status` (in_flight, done, failed, started_ms, concurrency,
            rss_bytes).
    """
    queues = list(queues)
    host, pid, _ = worker_id.rsplit(":", 2)
    registry = keys.worker(worker_id)
    async with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.set(keys.alive(queue, worker_id), state, px=ttl_ms)
            pipe.sadd(keys.queue_workers(queue), worker_id)
            pipe.spop(keys.cancel(queue, worker_id), 1000)
        # redis-py's mapping= key type is invariant (Mapping[FieldT, ...]): it refuses Mapping[str, Any]
        pipe.hset(registry, mapping={
            "id": worker_id, "host": host, "pid": pid, "queues": ",".join(queues),
            "heartbeat_ms": clock.now_ms(), "state": state, **info,  # type: ignore[dict-item]
        })
        pipe.pexpire(registry, ttl_ms)
        pipe.sadd(keys.workers(), worker_id)
        replies = await pipe.execute()
    return [job_id.decode() for cancelled in replies[2:3 * len(queues):3] for job_id in cancelled or ()]


async def renew(client: redis.asyncio.Redis, keys: Keys, worker_id: str, queues: Iterable[str], ttl_ms: int) -> None:
    """Extend the liveness keys and the registry entry only: the heartbeat Redis still takes at
    maxmemory (noeviction), where SET, SADD and HSET are refused but PEXPIRE is not. Without it
    the keys of every worker expire during the outage and a supervisor reclaims jobs that run."""
    async with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.pexpire(keys.alive(queue, worker_id), ttl_ms)
        pipe.pexpire(keys.worker(worker_id), ttl_ms)
        await pipe.execute()


async def deregister(client: redis.asyncio.Redis, keys: Keys, worker_id: str) -> None:
    """Leave the host-wide registry (requeue.lua 'stop' already left each queue's)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker(worker_id))
        pipe.srem(keys.workers(), worker_id)
        await pipe.execute()


def resident_memory_bytes() -> int:
    """This process's resident set size (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
