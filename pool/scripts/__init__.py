"""Every multi-key atomic step of `pool`: the Lua scripts beside this file and typed wrappers.

Each wrapper builds the script's KEYS and ARGV from a :class:`~pool.keys.Keys` so that callers
never assemble keys by hand, and turns the scripts' negative return codes into exceptions
(one table, :data:`_FAILURES`). Scripts are loaded with ``register_script``, which falls back
to EVAL and reloads after NOSCRIPT (a restarted server), so no explicit SCRIPT LOAD is needed.

Works with both the asyncio and the sync redis client: wrappers return what the client returns
(a coroutine for the asyncio client). Pass ``client=pipeline`` to batch calls in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from pool.errors import PoolError
from pool.keys import Keys


class JobNotActive(PoolError):
    """ack: the job is no longer in this worker's active list (requeued or reclaimed meanwhile)."""


class WorkerAlive(PoolError):
    """requeue (reclaim): the worker's liveness key still exists; nothing was moved."""


class AlreadyReclaimed(PoolError):
    """requeue (reclaim): another caller reclaimed this worker first; nothing was moved."""


_FAILURES: dict[tuple[str, int], type[PoolError]] = {
    ("ack", -1): JobNotActive,
    ("requeue", -1): WorkerAlive,
    ("requeue", -2): AlreadyReclaimed,
}


def check(script: str, code: int) -> int:
    """Raise the exception a script's negative return code stands for; return the code otherwise."""
    failure = _FAILURES.get((script, code))
    if failure is not None:
        raise failure(f"{script} returned {code}")
    return code


def _source(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


SOURCES = {name: _source(name) for name in ("enqueue", "claim", "ack", "requeue")}


def solo_threshold(max_deliveries: int) -> int:
    """Deliveries from which a job runs alone: 2, or lower so that it stays below max_deliveries."""
    return max(1, min(2, max_deliveries - 1))


class Scripts:
    """The scripts registered on one client, with wrappers that build their keys."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.keys = keys
        self._enqueue = client.register_script(SOURCES["enqueue"])
        self._claim = client.register_script(SOURCES["claim"])
        self._ack = client.register_script(SOURCES["ack"])
        self._requeue = client.register_script(SOURCES["requeue"])

    def enqueue(
        self, queue: str, jobs: Sequence[tuple[str, Sequence[Any]]], now_ms: int, client: Any = None
    ) -> Any:
        """Create jobs of one queue. ``jobs`` is ``[(id, [field, value, ...]), ...]``.

        Returns (awaitable with the async client) one int per job: 1 created, 0 existed.
        """
        keys = [self.keys.queue(queue)] + [self.keys.job(queue, job_id) for job_id, _ in jobs]
        args: list[Any] = [now_ms]
        for job_id, fields in jobs:
            args += [job_id, len(fields) // 2, *fields]
        return self._enqueue(keys=keys, args=args, client=client)

    def claim(
        self, queue: str, worker_id: str, now_ms: int, count: int, running: int,
        moved_id: str | None = None, solo_at: int = 2, client: Any = None,
    ) -> Any:
        """Move up to ``count`` ids into the worker's active list (plus start ``moved_id``).

        Args:
            running: jobs the worker's process runs now (a suspect job needs 0: see claim.lua).
            solo_at: deliveries from which a job runs alone (:func:`solo_threshold`).

        Returns a list of raw HGETALL pair lists, one per claimed job (see claim.lua for the
        'missing' and 'solo_wait' entries).
        """
        keys = [self.keys.queue(queue), self.keys.active(queue, worker_id)]
        args: list[Any] = [self.keys.queue_prefix(queue), worker_id, now_ms, count, running, solo_at]
        if moved_id is not None:
            args.append(moved_id)
        return self._claim(keys=keys, args=args, client=client)

    def ack(
        self, queue: str, worker_id: str, job_id: str, status: str, now_ms: int,
        default_ttl_ms: int, fields: Sequence[Any], client: Any = None,
    ) -> Any:
        """Write a job's outcome and drop it from the active list. Returns 1, 0 (retried) or -1."""
        keys = [
            self.keys.active(queue, worker_id), self.keys.job(queue, job_id),
            self.keys.done(queue, job_id), self.keys.stats(queue),
        ]
        args = [job_id, status, now_ms, default_ttl_ms, worker_id, *fields]
        return self._ack(keys=keys, args=args, client=client)

    def requeue(
        self, queue: str, worker_id: str, mode: str, max_deliveries: int, now_ms: int, client: Any = None
    ) -> Any:
        """Give a worker's active list back to the queue (see requeue.lua for the modes).

        Args:
            mode: 'stop' (clean hand-back), 'died' (its supervisor saw it die) or 'reclaim'
                (its liveness key expired; exactly once among concurrent callers).

        Returns [requeued, buried], or -1 / -2 for 'reclaim' (see check).
        """
        keys = [
            self.keys.active(queue, worker_id), self.keys.queue(queue), self.keys.dead(queue),
            self.keys.stats(queue), self.keys.queue_workers(queue), self.keys.alive(queue, worker_id),
        ]
        args = [self.keys.queue_prefix(queue), mode, max_deliveries, now_ms, worker_id]
        return self._requeue(keys=keys, args=args, client=client)
