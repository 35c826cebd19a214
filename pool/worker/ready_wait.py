"""The shared wait of a worker process that serves many queues: one BLPOP, on one connection,
over the ready tokens of the queues its last claim pass found empty (lua/includes/signal.lua).

The Fetcher (fetcher.py) owns claiming; this owns only which empty queues are waited on, the
one blocking call, and the tokens popped and not yet honoured by a claim.

Discussion of the choice. A per-queue BLMOVE watcher (the fetcher's other mode) moves the job
itself in the same hop, but holds a connection per empty queue and re-issues every block
timeout: 1,000 idle queues cost two processes 2,009 connections and ~16k commands/s. Here a
process holds one blocking connection and sends one BLPOP per block timeout however many
queues it serves; a job costs one hop more (token, then claim.lua). Rejected: BLPOP on the
queue lists themselves (pops a job id into memory: a crash between pop and claim loses it);
the ``wake`` pub/sub channel (a message sent while nobody subscribes is lost; a token waits);
one connection per queue group (still grows with the queues). Tokens are not used on Cluster:
a BLPOP across hash slots is refused (CROSSSLOT).

Rules that keep a token from being lost or spun on:
- A token popped while no job slot is free (or while stopping) is given back at once
  (signal.lua), and the process stops waiting on that queue until a claim pass has tried it:
  blocking again on a key it just pushed would pop its own token in a loop.
- A token popped with a free slot is "owed": the next claim pass tries that queue; if the pass
  ends without asking it (higher queues took every slot) the token is given back.
- The BLPOP in flight is never cancelled (a token popped server side whose reply is dropped is a
  lost wake-up): to end it early (a queue newly found empty must join; a stop) the process
  pushes onto its own interrupt list, the BLPOP's last key.
- A connection error during the BLPOP may have lost a popped token: the fetcher is told
  (``on_lost``) and claims from every queue once before anything blocks again.
- A process that dies holding a token loses it; reclaim's requeue.lua leaves a new one on every
  queue that still holds jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio

from pool.config import Config
from pool.connection import BLOCK_TIMEOUT_S, REDIS_ERRORS, is_transient, wait_event
from pool.worker.shared import WorkerContext

logger = logging.getLogger("pool.fetcher")  # the fetcher's: one name for claiming in JSON logs


def uses_shared_wait(config: Config) -> bool:
    """Whether a worker process with this config waits on ready tokens (see ``shared_wait_from``)."""
    return 0 < config.shared_wait_from <= len(config.queues) and not config.redis.cluster


class SharedWait:
    """One blocking wait for the empty queues of a worker process.

    Args:
        context: the worker's config, keys, scripts and client (the interrupt and the tokens
            given back go on it), slots (is one free when a token arrives) and stopping.
        blocking: the client of the BLPOP (one connection is enough).
        wake: makes the dispatcher run a claim pass (a token arrived, or a wait failed).
        on_lost: told when a BLPOP failed: a popped token may be lost.
    """

    active = True

    def __init__(self, context: WorkerContext, blocking: redis.asyncio.Redis, wake: Callable[[], None],
                 on_lost: Callable[[], None]) -> None:
        self.config = context.config
        self.keys = context.keys
        self.scripts = context.scripts
        self.redis = context.client
        self.blocking = blocking
        self.outage = context.outage
        self.slots = context.slots
        self.stopping = context.stopping
        self.wake = wake
        self.on_lost = on_lost
        self.interrupt_key = self.keys.wait_interrupt(context.worker_id)
        self._queue_of = {self.keys.ready(q).encode(): q for q in self.config.queues}
        self._waiting: set[str] = set()
        self._owed: set[str] = set()  # tokens popped with a slot free, no claim pass has tried yet
        self._covered: frozenset[str] | None = None  # the queues of the BLPOP in flight
        self._interrupted = False  # an interrupt is in the list, not popped yet
        self._joined = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # close() was called (a stop, or the fetcher failed): block no more

    def is_waiting(self, queue: str) -> bool:
        """A queue waited on is known to be empty: a token would have ended the wait."""
        return queue in self._waiting

    def owed(self) -> set[str]:
        """The queues whose token this process popped and owes a claim."""
        return set(self._owed)

    async def join(self, queues: Iterable[str]) -> None:
        """Wait on these (empty) queues too; the BLPOP in flight is interrupted to include them."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            exc = self._task.exception()
            if exc is not None:
                raise exc  # not an outage (those are retried inside): the process fails
        new = set(queues) - self._waiting
        if not new:
            return
        self._waiting |= new
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="wait:ready")
        if self._covered is None:
            self._joined.set()
        elif new - self._covered:
            await self._interrupt()

    async def settle(self, owed: set[str], asked: set[str]) -> None:
        """After a claim pass: the tokens ``owed`` at its start are honoured if it asked their
        queue; the others are given back, for a process that has a slot for them."""
        self._owed -= owed
        await self.give_back(owed - asked)

    async def give_back(self, queues: Iterable[str]) -> None:
        """Leave a token again on each of these queues (signal.lua: never a second one)."""
        for queue in queues:
            self._owed.discard(queue)
            await self.outage.retry("signal", self.scripts.signal, queue)

    async def close(self) -> None:
        """End the wait (interrupting the BLPOP in flight, never cancelling it), give back the
        tokens owed, and delete the interrupt list."""
        if self._task is None:
            return
        self._closing = True
        self._joined.set()
        try:
            if self._covered is not None:
                await self.redis.rpush(self.interrupt_key, "1")
            await asyncio.gather(self._task, return_exceptions=True)
            for queue in list(self._owed):
                await self.scripts.signal(queue)
            await self.redis.delete(self.interrupt_key)
        except REDIS_ERRORS as exc:
            # Down while stopping: the BLPOP ends within its block timeout; requeue.lua at the
            # drain leaves a token on every queue that still holds jobs.
            logger.warning("shared wait: could not clean up on stop: %s", exc)
            await asyncio.gather(self._task, return_exceptions=True)

    # -- the blocking task ----------------------------------------------------------------------

    async def _run(self) -> None:
        while not (self.stopping.is_set() or self._closing):
            self._joined.clear()
            queues = [q for q in self.config.queues if q in self._waiting]  # in priority order
            if not queues:
                await wait_event(self._joined, BLOCK_TIMEOUT_S)
                continue
            try:
                popped = await self._blpop(queues)
            except REDIS_ERRORS as exc:
                if not is_transient(exc):
                    raise
                await self._failed(exc)
                continue
            if popped is not None:
                await self._popped(popped[0])

    async def _blpop(self, queues: list[str]) -> Any:
        keys = [*(self.keys.ready(q) for q in queues), self.interrupt_key]
        self._covered = frozenset(queues)  # no await between reading _waiting and this
        try:
            popped = await self.blocking.blpop(keys, timeout=BLOCK_TIMEOUT_S)  # fractional s: Redis 6+
        finally:
            self._covered = None
        self.outage.recovered("wait")
        return popped

    async def _popped(self, key: bytes) -> None:
        queue = self._queue_of.get(key)
        if queue is None:  # our interrupt: the next BLPOP waits on the queues as they are now
            self._interrupted = False
            return
        self._waiting.discard(queue)
        if self.stopping.is_set() or self._closing or not self.slots.may_claim():
            await self.give_back([queue])  # for a process with a free slot; we wait on it no more
        else:
            self._owed.add(queue)
        self.wake()

    async def _interrupt(self) -> None:
        if self._interrupted:
            return
        self._interrupted = True
        try:
            await self.redis.rpush(self.interrupt_key, "1")
        except REDIS_ERRORS as exc:
            if not is_transient(exc):
                raise
            self._interrupted = False  # the BLPOP ends within its block timeout anyway

    async def _failed(self, exc: BaseException) -> None:
        # The BLPOP may have popped a token whose reply is lost: claim from every queue once
        # before blocking again (the fetcher's claim pass), and back off meanwhile.
        self._waiting.clear()
        self._interrupted = False
        self.on_lost()
        await self.outage.retry_after(exc, "wait")


class NoSharedWait:
    """The fetcher's per-queue BLMOVE watchers are used instead (few queues, or Cluster)."""

    active = False

    def is_waiting(self, queue: str) -> bool:
        return False

    def owed(self) -> set[str]:
        return set()

    async def join(self, queues: Iterable[str]) -> None:
        return None

    async def settle(self, owed: set[str], asked: set[str]) -> None:
        return None

    async def close(self) -> None:
        return None
