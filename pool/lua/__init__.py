"""Every multi-key atomic step of `pool`: the Lua scripts beside this file and typed wrappers.

Each wrapper builds the script's KEYS and ARGV from a :class:`~pool.keys.Keys` so that callers
never assemble keys by hand, and turns the scripts' negative return codes into exceptions
(one table, :data:`_FAILURES`). Scripts are loaded with ``register_script``, which falls back
to EVAL and reloads after NOSCRIPT (a restarted server), so no explicit SCRIPT LOAD is needed.

Blocks that several scripts share (finishing a job, burying it, promoting due jobs, the return
codes) live once in ``includes/``; a line ``--@include <name>`` in a script is replaced by
``includes/<name>.lua`` when the source is read (``codes`` is rendered from
:mod:`pool.lua.codes`). Each script is still one self-contained source sent with EVALSHA,
so this works the same on Redis 6.2, Valkey and Cluster. Rejected: ``FUNCTION LOAD`` libraries
(Redis 7+ only, and a second loading path to keep for 6.2).

Works with both the asyncio and the sync redis client: wrappers return what the client returns
(a coroutine for the asyncio client). Pass ``client=pipeline`` to batch calls in one round trip;
on the hot path use :meth:`Scripts.pipelined`, which skips the SCRIPT EXISTS round trip that
redis-py sends before every pipeline holding a script.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, NamedTuple

import redis.asyncio.cluster
from redis.exceptions import NoScriptError

from pool.errors import PoolError
from pool.keys import RECENT_JOBS, Keys
from pool.lua.codes import AckCode, CancelCode, RequeueCode, lua_tables

__all__ = [
    "PROMOTE_SLICE",
    "SOURCES",
    "Ack",
    "AckCode",
    "AlreadyReclaimed",
    "CancelCode",
    "JobNotActive",
    "RequeueCode",
    "Scripts",
    "WorkerAlive",
    "check",
    "solo_threshold",
]


class Ack(NamedTuple):
    """One attempt's outcome, as ack.lua takes it (see there for each value)."""

    job_id: str
    outcome: str
    now_ms: int
    ttl_ms: int  # the job's own result TTL if it has one (or the dead-letter TTL for 'dead')
    fields: Sequence[Any] = ()  # result, or error and traceback
    due_ms: int | None = None  # when a 'retrying' job is due
    clear: bool = False  # an earlier attempt left an error, traceback or result to delete
    history: bytes = b""
    event: bytes | None = None


class JobNotActive(PoolError):
    """ack: the job is no longer in this worker's running set (requeued or reclaimed meanwhile)."""


class WorkerAlive(PoolError):
    """requeue (reclaim): the worker's liveness key still exists; nothing was moved."""


class AlreadyReclaimed(PoolError):
    """requeue (reclaim): another caller reclaimed this worker first; nothing was moved."""


# Keyed by script as well: the codes of different scripts share values (IntEnums compare as ints).
_FAILURES: dict[tuple[str, int], type[PoolError]] = {
    ("ack", AckCode.NOT_ACTIVE): JobNotActive,
    ("requeue", RequeueCode.WORKER_ALIVE): WorkerAlive,
    ("requeue", RequeueCode.ALREADY_RECLAIMED): AlreadyReclaimed,
}


def check(script: str, code: int) -> int:
    """Raise the exception a script's negative return code stands for; return the code otherwise."""
    failure = _FAILURES.get((script, code))
    if failure is not None:
        raise failure(f"{script} returned {code}")
    return code


_INCLUDE = re.compile(r"^--@include (\w+)$", re.MULTILINE)


def _read(path: str) -> str:
    return resources.files(__package__).joinpath(path).read_text(encoding="utf-8")


def _include(match: re.Match[str]) -> str:
    # One level only: an include names no other include, so the order of the blocks is the
    # order of the lines in the script (finish.lua holds everything finishing needs).
    name = match.group(1)
    return lua_tables() if name == "codes" else _read(f"includes/{name}.lua")


def _source(name: str) -> str:
    """The script's source with its ``--@include`` lines replaced by the includes."""
    return _INCLUDE.sub(_include, _read(f"{name}.lua"))


# How many due jobs one promotion moves at most (promote.lua, and each claim): the Lua include holds
# the number, Python reads it from there (one copy).
def _lua_constant(include: str, name: str) -> int:
    """An integer ``local NAME = N`` from an include, so Lua and Python share one copy."""
    found = re.search(rf"^local {name} = (\d+)$", _read(f"includes/{include}.lua"), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"includes/{include}.lua no longer defines 'local {name} = <number>'")
    return int(found[1])


PROMOTE_SLICE = _lua_constant("promote", "PROMOTE_SLICE")

SOURCES = {
    name: _source(name)
    for name in ("enqueue", "claim", "promote", "ack", "requeue", "retry_dead", "purge", "cancel", "handback",
                 "fire", "heartbeat", "expired", "signal", "queue_figures", "read_fields")
}


def solo_threshold(max_deliveries: int) -> int:
    """Deliveries from which a job runs alone: 2, or lower so that it stays below max_deliveries."""
    return max(1, min(2, max_deliveries - 1))


class _Recorder:
    """Stands in for a pipeline on a Cluster client, where redis-py refuses scripts in pipelines:
    records each command for :func:`_concurrently`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., Awaitable[None]]:
        async def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return record


async def _concurrently(client: Any, build: Callable[[Any], Awaitable[None]]) -> list[Any]:
    """The calls ``build`` makes, sent at once, each to its slot's node (replies in order, errors
    as exception objects). Only for calls independent of each other's order."""
    recorder = _Recorder()
    await build(recorder)
    return list(await asyncio.gather(*(getattr(client, name)(*args, **kwargs)
                                       for name, args, kwargs in recorder.calls), return_exceptions=True))


class Scripts:
    """The scripts registered on one client, with wrappers that build their keys."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.keys = keys
        self._registered = {name: client.register_script(source) for name, source in SOURCES.items()}

    async def load(self, client: Any) -> None:
        """SCRIPT LOAD every script (after a NOSCRIPT reply: a restarted or flushed server)."""
        for script in self._registered.values():
            await client.script_load(script.script)

    async def pipelined(self, client: Any, build: Callable[[Any], Awaitable[None]], resend: bool = True,
                        replicas: tuple[int, int] | None = None) -> list[Any]:
        """Run the calls that ``build`` adds to a pipeline in one round trip; replies in order,
        errors as exception objects.

        redis-py checks with SCRIPT EXISTS before every pipeline holding a script (a second
        round trip each time); here the EVALSHAs go as they are, and if the server has lost a
        script (NOSCRIPT) the scripts are loaded and, with ``resend``, the whole pipeline is sent
        again: only for calls that may run twice (enqueue and ack are idempotent). Without it the
        NoScriptError comes back among the replies for the caller to handle.

        With ``replicas`` (count, timeout ms) a WAIT ends the pipeline: it waits, on the same
        connection, until that many replicas have every write before it, and its reply (how many
        did) comes last.

        On a Cluster the calls go concurrently instead (:func:`_concurrently`), so only calls
        whose order does not matter may be sent this way there; no WAIT (refused by the config).
        """
        for attempt in range(2):
            if isinstance(client, redis.asyncio.cluster.RedisCluster):
                replies = await _concurrently(client, build)
            else:
                async with client.pipeline(transaction=False) as pipe:
                    await build(pipe)
                    pipe.scripts.clear()
                    if replicas is not None:
                        pipe.execute_command("WAIT", *replicas)
                    replies = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(reply, NoScriptError) for reply in replies):
                await self.load(client)
                if resend:
                    continue
            return list(replies)
        raise AssertionError("unreachable")  # pragma: no cover

    def enqueue(
        self, queue: str, jobs: Sequence[tuple[str, int, Sequence[Any]]], now_ms: int, client: Any = None
    ) -> Any:
        """Create jobs of one queue. ``jobs`` is ``[(id, due_ms, [field, value, ...]), ...]``;
        a due_ms after now_ms puts the job in the delayed set (0: ready now).

        Returns (awaitable with the async client) one reply per job: 1 created, or the
        existing record's field/value list (a list: untouched) for an id that exists.
        """
        keys = [self.keys.queue(queue), self.keys.delayed(queue), self.keys.stale(queue), self.keys.ready(queue)]
        keys += [self.keys.job(queue, job_id) for job_id, _, _ in jobs]
        args: list[Any] = [now_ms, self.keys.wake(queue)]
        for job_id, due_ms, fields in jobs:
            args += [job_id, due_ms, len(fields) // 2, *fields]
        return self._registered["enqueue"](keys=keys, args=args, client=client)

    def fire(
        self, queue: str, schedule: str, tick_ms: int, now_ms: int, job_id: str, fields: Sequence[Any],
        client: Any = None,
    ) -> Any:
        """Enqueue one schedule tick's job unless that tick was fired already. Returns 1 or 0."""
        keys = [self.keys.schedule(queue, schedule), self.keys.queue(queue), self.keys.job(queue, job_id),
                self.keys.stale(queue), self.keys.ready(queue)]
        return self._registered["fire"](keys=keys, args=[tick_ms, now_ms, job_id, *fields], client=client)

    def handback(self, queue: str, worker_id: str, job_id: str, started_ms: int | None = None,
                 client: Any = None) -> Any:
        """Give a claimed, not started id back to the head of its queue; with ``started_ms``, one
        that claim.lua started at that time for this worker and that never ran. Returns 1, or 0
        (not in the landing list or running set, or started otherwise)."""
        keys = [self.keys.active(queue, worker_id), self.keys.queue(queue), self.keys.job(queue, job_id),
                self.keys.stale(queue), self.keys.running(queue, worker_id), self.keys.ready(queue)]
        args: list[Any] = [job_id] if started_ms is None else [job_id, started_ms, worker_id]
        return self._registered["handback"](keys=keys, args=args, client=client)

    def signal(self, queue: str, client: Any = None) -> Any:
        """Leave a ready token for ``queue`` unless one is there (signal.lua): a process that
        popped one and cannot claim gives it back. Returns 1."""
        return self._registered["signal"](keys=[self.keys.ready(queue)], args=[], client=client)

    def claim(
        self, queue: str, worker_id: str, now_ms: int, count: int, running: int,
        moved_id: str | None = None, solo_at: int = 2, result_ttl_ms: int = 3_600_000,
        rate: tuple[int, int] = (0, 0), head: bool = False, client: Any = None,
    ) -> Any:
        """Promote due jobs, then move up to ``count`` ids into the worker's running set.

        Args:
            running: jobs the worker's process runs now (a suspect job needs 0: see claim.lua).
            moved_id: an id in the landing list to start first (BLMOVE, reconcile), or in the
                running set (reconcile: its record is sent again).
            head: start the id the BLMOVE just before this call pushed onto the landing list
                (see claim.lua); now_ms is then the server's.
            solo_at: deliveries from which a job runs alone (:func:`solo_threshold`).
            result_ttl_ms: how long a job whose cancellation was requested is kept when claim.lua
                finishes it as cancelled instead of starting it.
            rate: the queue's rate limit as (jobs, window in ms); (0, 0) for none.

        Returns ``[next_due_ms, claimed, wait_ms]``: claimed holds one raw HGETALL pair list per
        job (see claim.lua for the 'missing' and 'solo_wait' entries); wait_ms > 0 when the rate
        limit held jobs back.
        """
        keys = [self.keys.queue(queue), self.keys.active(queue, worker_id), self.keys.delayed(queue),
                self.keys.rate(queue), self.keys.running(queue, worker_id)]
        args: list[Any] = [self.keys.queue_prefix(queue), worker_id, now_ms, count, running, solo_at,
                           result_ttl_ms, rate[0], rate[1], RECENT_JOBS]
        if moved_id is not None or head:
            args += [moved_id or "", "head" if head else ""]
        return self._registered["claim"](keys=keys, args=args, client=client)

    def promote(self, queue: str, now_ms: int, client: Any = None) -> Any:
        """Move the queue's due delayed jobs into it (see promote.lua).

        Returns (awaitable with the async client) when the earliest job still delayed falls due
        (bytes, or -1: none).
        """
        keys = [self.keys.queue(queue), self.keys.delayed(queue)]
        return self._registered["promote"](keys=keys, args=[self.keys.queue_prefix(queue), now_ms], client=client)

    def ack_many(
        self, queue: str, worker_id: str, acks: Sequence[Ack], *, dead_max: int = 10_000, client: Any = None,
    ) -> Any:
        """Write the outcomes of a worker's attempts on one queue and drop their ids from its
        running set, in one call (see ack.lua).

        Returns one :class:`AckCode` value per ack, as ints (decode with ``AckCode(code)``).
        """
        keys = [self.keys.running(queue, worker_id), self.keys.stats(queue), self.keys.delayed(queue),
                self.keys.dead(queue)]
        channel = self.keys.events(queue) if any(a.event is not None for a in acks) else ""
        args: list[Any] = [self.keys.queue_prefix(queue), worker_id, RECENT_JOBS, dead_max, channel]
        for a in acks:
            args += [a.job_id, a.outcome, a.now_ms, a.ttl_ms, "" if a.due_ms is None else a.due_ms,
                     "1" if a.clear else "", a.history, a.event or b"", len(a.fields), *a.fields]
        return self._registered["ack"](keys=keys, args=args, client=client)

    def ack(
        self, queue: str, worker_id: str, job_id: str, outcome: str, now_ms: int, ttl_ms: int,
        fields: Sequence[Any], *, due_ms: int | None = None, dead_max: int = 10_000, history: bytes = b"",
        event: bytes | None = None, clear: bool = False,
    ) -> AckCode:
        """One ack with the sync client (tests and tools): :meth:`ack_many`'s code for it."""
        ack = Ack(job_id, outcome, now_ms, ttl_ms, fields, due_ms, clear, history, event)
        return AckCode(self.ack_many(queue, worker_id, [ack], dead_max=dead_max)[0])

    def requeue(
        self, queue: str, worker_id: str, mode: str, max_deliveries: int, now_ms: int, *,
        dead_ttl_ms: int = 7 * 86_400_000, dead_max: int = 10_000, events: bool = True, cause: str = "",
        client: Any = None,
    ) -> Any:
        """Give a worker's claimed jobs (landing list and running set) back to the queue (see
        requeue.lua for the modes).

        Args:
            mode: 'stop' (clean hand-back), 'died' (its supervisor saw it die) or 'reclaim'
                (its liveness key expired; exactly once among concurrent callers).
            cause: how the worker died ('killed by SIGSEGV'): kept on each job it had started,
                and named in the error of a job buried as poison.
            dead_ttl_ms, dead_max: how long and how many dead jobs the queue keeps (as for ack).

        Returns [requeued, buried], or for 'reclaim' a :class:`RequeueCode` value (see check).
        """
        keys = [
            self.keys.active(queue, worker_id), self.keys.queue(queue), self.keys.dead(queue),
            self.keys.stats(queue), self.keys.queue_workers(queue), self.keys.alive(queue, worker_id),
            self.keys.queue_registry(queue), self.keys.running(queue, worker_id),
        ]
        args = [self.keys.queue_prefix(queue), mode, max_deliveries, now_ms, worker_id, dead_ttl_ms,
                self.keys.events(queue) if events else "", cause, dead_max]
        return self._registered["requeue"](keys=keys, args=args, client=client)

    def heartbeat(self, queue: str, worker_id: str, state: str, ttl_ms: int, client: Any = None) -> Any:
        """Renew a worker's liveness on one queue: its key for ttl_ms and its registry deadline
        (server time + ttl_ms). Returns the ids of its running jobs to cancel (bytes)."""
        keys = [self.keys.alive(queue, worker_id), self.keys.queue_registry(queue), self.keys.cancel(queue, worker_id)]
        return self._registered["heartbeat"](keys=keys, args=[worker_id, state, ttl_ms], client=client)

    def expired(self, queue: str, limit: int, client: Any = None) -> Any:
        """Up to ``limit`` workers of the queue whose liveness key expired (bytes), found in
        O(expired) by their registry deadline (see expired.lua)."""
        keys = [self.keys.queue_registry(queue), self.keys.queue_workers(queue)]
        return self._registered["expired"](keys=keys, args=[self.keys.queue_prefix(queue), limit], client=client)

    def retry_dead(self, queue: str, job_id: str, now_ms: int, client: Any = None) -> Any:
        """Send a dead job back to its queue with its attempts reset. Returns 1, or 0 if not dead."""
        keys = [self.keys.dead(queue), self.keys.queue(queue), self.keys.job(queue, job_id),
                self.keys.done(queue, job_id), self.keys.stale(queue), self.keys.ready(queue)]
        return self._registered["retry_dead"](keys=keys, args=[job_id, now_ms], client=client)

    def purge(self, queue: str, job_id: str, client: Any = None) -> Any:
        """Delete a dead job. Returns 1, or 0 if it is not in the dead set."""
        keys = [self.keys.dead(queue), self.keys.job(queue, job_id), self.keys.done(queue, job_id)]
        return self._registered["purge"](keys=keys, args=[job_id], client=client)

    def cancel(
        self, queue: str, job_id: str, now_ms: int, ttl_ms: int, event: bytes | None, client: Any = None
    ) -> Any:
        """Cancel a job. Returns a :class:`CancelCode` value (decode with ``CancelCode(code)``).

        Its cost does not grow with the queue: a queued job's id may stay in the queue list, marked
        stale, until a claim meets it and drops it (see includes/stale.lua).
        """
        keys = [self.keys.queue(queue), self.keys.delayed(queue), self.keys.job(queue, job_id),
                self.keys.done(queue, job_id), self.keys.stats(queue)]
        args = [job_id, now_ms, ttl_ms, self.keys.queue_prefix(queue),
                self.keys.events(queue) if event is not None else "", event or b"", RECENT_JOBS]
        return self._registered["cancel"](keys=keys, args=args, client=client)
