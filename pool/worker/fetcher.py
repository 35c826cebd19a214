"""Claiming for one worker process: which queue the next free job slot takes a job from.

Shape (one dispatcher, plus one watcher per empty queue):

    wait for a free slot → claim pass: claim.lua on each queue in priority order (or split by
    weight), as many as there are free slots → each queue found empty gets a watcher blocked in
    BLMOVE; the first job pushed onto any of them wakes the process within milliseconds

A queue whose watcher is blocked is known to be empty (a push would have ended the BLMOVE), so
a claim pass skips it: serving several queues costs no round trip per empty queue. A watcher
that receives a job when every slot is busy hands it back to the head of its queue
(handback.lua) and ends, so the next claim pass takes it before lower queues, or a worker with
a free slot does: no job waits behind a busy process.

A queue over its rate limit is skipped until claim.lua says the window has room again.

Shared wait (a process serving at least ``shared_wait_from`` queues, never on Cluster): instead
of the watchers, the empty queues are waited on in one BLPOP over their ready tokens
(ready_wait.py); a token popped makes its queue claimable again and wakes the dispatcher, whose
claim pass claims it in priority order (or by weight) as any other.

Reconcile (lost claim replies) asks only the queues a claim was sent to since the last one;
every queue after an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis.asyncio
import redis.asyncio.cluster

from pool import clock
from pool.connection import BLOCK_TIMEOUT_S, REDIS_ERRORS, is_refusal, is_transient, wait_event
from pool.keys import Keys
from pool.lua import solo_threshold
from pool.worker.claim_reply import Claimed, ClaimReply, decode_claim
from pool.worker.ready_wait import NoSharedWait, SharedWait, uses_shared_wait
from pool.worker.shared import WorkerContext

logger = logging.getLogger("pool.fetcher")  # the name JSON logs show, kept stable

RECONCILE_INTERVAL_S = 5.0
# After an error around a claim, this many reconciles (the one at once, then the periodic ones)
# ask every queue: a claim sent before a partition can land after its client gave up on it.
RECONCILE_ALL_ROUNDS = 2


class WeightedShares:
    """Splits free slots between queues by weight: smooth weighted round-robin (nginx's), so a
    3:1 weighting hands out slots as a a b a a a b ... even one slot at a time."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights = dict(weights)
        self.current = dict.fromkeys(weights, 0)

    def split(self, queues: Sequence[str], slots: int) -> list[tuple[str, int]]:
        """How many of ``slots`` each queue gets, largest share first."""
        total = sum(self.weights[q] for q in queues)
        # A whole cycle of `total` picks gives each queue exactly its weight and leaves the
        # round-robin state as it was: only the remainder needs picking one by one.
        counts = {q: slots // total * self.weights[q] for q in queues}
        for _ in range(slots % total):
            for q in queues:
                self.current[q] += self.weights[q]
            best = max(queues, key=self.current.__getitem__)
            self.current[best] -= total
            counts[best] += 1
        return sorted(((q, n) for q, n in counts.items() if n), key=lambda item: -item[1])


# Starts the task of one claimed job (the worker's; a corrupt record's task fails it).
StartJob = Callable[[Claimed], None]
# Told when a queue's earliest delayed job falls due (queue, due_ms): the scheduler's timer.
OnDue = Callable[[str, int], None]


class Fetcher:
    """Fills a worker's free job slots from its queues until ``stopping`` is set.

    Args:
        context: the worker's config (queues, their weights, empty: strict order, and rate
            limits), id (whose landing lists and running sets the claimed ids move into), scripts (claim,
            handback) on the client for everything that does not block, outage, job slots, and
            stopping (no claim starts after it).
        blocking: the client for BLMOVE (its own pool: one connection per watched queue), or in
            shared-wait mode (:func:`~pool.worker.ready_wait.uses_shared_wait`) for the one BLPOP.
        start: starts the task of one claimed job.
        on_due: told each queue's next due time that a claim reply names.
        burst: return once nothing is claimable and nothing runs (no blocking).
    """

    def __init__(self, context: WorkerContext, blocking: redis.asyncio.Redis, start: StartJob, on_due: OnDue,
                 burst: bool = False) -> None:
        config = self.config = context.config
        self.worker_id = context.worker_id
        self.keys: Keys = context.keys
        self.scripts = context.scripts
        self.redis = context.client
        self.blocking = blocking
        # BLMOVE and the claim in one pipeline; redis-py allows no scripts in Cluster pipelines
        self._pipelined_claim = not isinstance(blocking, redis.asyncio.cluster.RedisCluster)
        self.slots = context.slots
        self.start = start
        self.on_due = on_due
        self.outage = context.outage
        self.stopping = context.stopping
        self.burst = burst
        self._shares = WeightedShares(config.queue_weights) if config.queue_weights else None
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._shared: SharedWait | NoSharedWait = (
            SharedWait(context, blocking, self.wake, self._lost) if uses_shared_wait(config) else NoSharedWait())
        self._sent: set[str] = set()  # queues a claim went to since the last reconcile
        self._reconcile_all = 0  # reconciles left that ask every queue (after an error)
        self._throttled_until: dict[str, float] = {}  # queue → monotonic time its window has room
        self._wake = asyncio.Event()
        self._reconcile_at = clock.monotonic() + RECONCILE_INTERVAL_S
        self._must_reconcile = False
        self._claim_options: dict[str, Any] = {
            "solo_at": solo_threshold(config.max_deliveries), "result_ttl_ms": int(config.result_ttl_s * 1000),
        }

    def wake(self) -> None:
        """Make the dispatcher look again now (a stop, a job pushed, a throttle expired)."""
        self._wake.set()

    async def run(self) -> None:
        """Claim until stopping (or, in burst mode, until nothing is left to do)."""
        try:
            while not self.stopping.is_set():
                if self._must_reconcile or clock.monotonic() >= self._reconcile_at:
                    await self._reconcile()
                self._wake.clear()
                try:
                    found, exhausted = await self._claim_pass()
                    if found or exhausted:  # Redis answered (a pass may ask nothing: slots busy, queues watched)
                        self.outage.recovered("claim")
                except REDIS_ERRORS as exc:
                    if not is_transient(exc):
                        raise
                    self._lost()
                    await self.outage.retry_after(exc, "claim")
                    continue
                if self.burst:
                    if not found and not self.slots.running:
                        return
                    if not found:
                        await self.slots.wait_freed()
                    continue
                await self._watch(exhausted)
                if not found:
                    await self._wait()
        finally:
            # Never cancel a BLMOVE in flight (the server may already have moved an id): the
            # watchers see the stop flag within one block timeout. The shared BLPOP is ended by
            # its interrupt list, never cancelled either.
            await asyncio.gather(*self._watchers.values(), return_exceptions=True)
            await self._shared.close()

    def _lost(self) -> None:
        """A claim reply may be lost (an error around a claim, a BLMOVE or the shared BLPOP):
        reconcile every queue, and let the dispatcher claim from every queue once."""
        self._must_reconcile = True
        self._reconcile_all = RECONCILE_ALL_ROUNDS
        self.wake()

    # -- claim pass -----------------------------------------------------------------------------

    def _claimable(self) -> list[str]:
        now = clock.monotonic()
        return [q for q in self.config.queues
                if q not in self._watchers and not self._shared.is_waiting(q) and self._throttled_until.get(q, 0.0) <= now]

    async def _claim_pass(self) -> tuple[int, set[str]]:
        """Claim up to the free slots from the queues in order (or by weight).

        Returns how many jobs started, and the queues found empty (they get watchers).

        Strict: the first queue gets every free slot; what it cannot fill goes to the next.
        Weighted: the free slots are split by weight; what an emptied queue could not use is
        split again between the others.
        """
        exhausted: set[str] = set()
        if not await self.slots.wait_for_room(self.stopping):
            return 0, exhausted
        queues = self._claimable()  # after the wait: a watcher may have ended meanwhile
        owed, asked = self._shared.owed(), set[str]()
        found = await self._fill(queues, exhausted, asked)
        await self._shared.settle(owed, asked)  # tokens of queues not asked go to other processes
        return found, exhausted

    async def _fill(self, queues: list[str], exhausted: set[str], asked: set[str]) -> int:
        """The claims of one pass; adds the queues found empty to ``exhausted``, those asked to ``asked``."""
        found = 0
        while queues and self.slots.may_claim():
            free = self.slots.free()
            plan = self._shares.split(queues, free) if self._shares else [(queues[0], free)]
            for queue, share in plan:
                ask = min(share, self.slots.free())
                if ask <= 0 or not self.slots.may_claim():
                    break
                asked.add(queue)
                count = await self._claim(queue, ask)
                found += count
                if count < ask:
                    exhausted.add(queue)
            if not exhausted.intersection(queues):
                break  # every share was filled: no slot is left for this pass
            queues = [q for q in queues if q not in exhausted]
        return found

    async def _claim(self, queue: str, count: int) -> int:
        with self.slots.reserving(count):
            reply = await self._claim_script(queue, count)
        return self._started(queue, reply)

    async def _claim_script(self, queue: str, count: int, moved_id: str | None = None) -> ClaimReply:
        """claim.lua for this worker: up to ``count`` ids, or start ``moved_id``, within the rate limit."""
        self._sent.add(queue)
        return decode_claim(await self.scripts.claim(
            queue, self.worker_id, clock.now_ms(), count, self.slots.busy(), moved_id=moved_id,
            rate=self.config.rate_limits.get(queue, (0, 0)), **self._claim_options), queue)

    def _started(self, queue: str, reply: ClaimReply) -> int:
        """Start the jobs of a claim reply; returns how many records it held."""
        if reply.wait_ms > 0:
            self._throttled_until[queue] = clock.monotonic() + reply.wait_ms / 1000
        if reply.next_due_ms >= 0:
            self.on_due(queue, reply.next_due_ms)
        if reply.solo_wait:
            self.slots.want_idle()
        for claimed in reply.jobs:
            if claimed.missing:
                logger.error("job %s was claimed but its record is gone; dropped", claimed.job_id)
            elif claimed.job_id not in self.slots.running:
                if claimed.solo and claimed.corrupt is None:
                    logger.warning("job %s: workers died holding it %s times; running it alone", claimed.job_id,
                                   claimed.deliveries)
                self.start(claimed)
        return reply.records

    # -- blocking -------------------------------------------------------------------------------

    async def _watch(self, queues: set[str]) -> None:
        """Block on each of these (empty) queues, unless watched already or over their rate limit."""
        if self._shared.active:
            await self._shared.join(q for q in self._claimable() if q in queues)
            return
        for queue in self._claimable():
            if queue in queues:
                self._watchers[queue] = asyncio.create_task(self._watch_queue(queue), name=f"watch:{queue}")

    async def _wait(self) -> None:
        """Until a watcher ends, a throttle expires, a stop, or the next reconcile."""
        now = clock.monotonic()
        until = [t for t in self._throttled_until.values() if t > now] + [self._reconcile_at]
        await wait_event(self._wake, max(0.0, min(until) - now))

    async def _watch_queue(self, queue: str) -> None:
        """Block on an empty queue; start what arrives, or hand it back if no slot is free.

        With a free slot (and no rate limit) the claim goes in the same pipeline as the BLMOVE,
        so an arriving job starts after one hop from Redis instead of two.

        Watching goes on while every slot is busy: the queue stays known to be empty, so claim
        passes skip it, and a job that arrives is handed back to the head of its queue, where
        the next pass (or another worker) takes it first.
        """
        try:
            while not self.stopping.is_set():
                if self._pipelined_claim and queue not in self.config.rate_limits and self.slots.may_claim():
                    if await self._blmove_and_claim(queue):
                        return
                    continue
                # redis-py types the timeout as int; BLMOVE takes fractional seconds since Redis 6
                job_id = await self.blocking.blmove(
                    self.keys.queue(queue), self.keys.active(queue, self.worker_id),
                    timeout=BLOCK_TIMEOUT_S, src="RIGHT", dest="LEFT",  # type: ignore[arg-type]
                )
                self.outage.recovered(f"watch {queue}")
                if job_id is not None:
                    self._sent.add(queue)
                    await self._start_moved(queue, cast(bytes, job_id).decode())
                    return
        except REDIS_ERRORS as exc:
            if not is_transient(exc):
                raise
            self._lost()  # the BLMOVE may have moved an id whose reply was lost
            if is_refusal(exc):
                # BLMOVE is refused at maxmemory while claim.lua is not: wait, then let the next
                # claim pass take what is queued (ending at once would spin: pass, watch, refused)
                await self.outage.retry_after(exc, f"watch {queue}")
            else:
                self.outage.failed(exc)
        finally:
            del self._watchers[queue]
            self.wake()

    async def _blmove_and_claim(self, queue: str) -> bool:
        """BLMOVE and claim.lua (head mode) in one pipeline; True once a job arrived."""
        async def calls(pipe: Any) -> None:
            pipe.blmove(self.keys.queue(queue), self.keys.active(queue, self.worker_id),
                        timeout=BLOCK_TIMEOUT_S, src="RIGHT", dest="LEFT")
            # as busy as can be for a suspect job: it goes back for a claim pass that runs it alone
            await self.scripts.claim(
                queue, self.worker_id, clock.now_ms(), 0, max(1, self.slots.busy()), head=True,
                client=pipe, **self._claim_options)

        # never sent twice: the BLMOVE may have moved an id already
        self._sent.add(queue)  # (a reply that says nothing moved is taken back below)
        moved, reply = await self.scripts.pipelined(self.blocking, calls, resend=False)
        if isinstance(moved, Exception):
            raise moved
        self.outage.recovered(f"watch {queue}")
        if isinstance(reply, Exception):  # e.g. NOSCRIPT after a server restart (now loaded): claim it alone
            if moved is not None:
                await self._start_moved(queue, moved.decode())
            return moved is not None
        claim = decode_claim(reply, queue)
        if moved is None and not claim.jobs:
            self._sent.discard(queue)
            return False  # timed out; with jobs: an id an earlier claim never started, started now
        if not self.slots.may_claim():  # slots filled up while blocked (other queues' claims)
            await self._undo_starts(queue, claim)
            return True
        self._started(queue, claim)
        return True

    async def _undo_starts(self, queue: str, reply: ClaimReply) -> None:
        """Hand back the jobs a claim reply started that this process has no slot for."""
        for claimed in reply.jobs:
            if claimed.started_ms is not None and not claimed.missing:
                await self.scripts.handback(queue, self.worker_id, claimed.job_id, started_ms=claimed.started_ms)

    async def _start_moved(self, queue: str, job_id: str) -> None:
        if self.stopping.is_set():
            return  # the id stays in the landing list and is requeued with the rest
        if not self.slots.may_claim():
            await self.scripts.handback(queue, self.worker_id, job_id)
            return
        with self.slots.reserving(1):
            reply = await self._claim_script(queue, 0, moved_id=job_id)
        self._started(queue, reply)

    # -- reconcile ------------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Start ids in our landing lists and running sets that no task runs: claims whose reply
        was lost.

        Runs after every error around a claim and every RECONCILE_INTERVAL_S: a claim sent
        before a partition can reach the server after its client gave up on it, and move an id
        into this list long after the error that a one-off check would follow. Asks only the
        queues a claim (or a BLMOVE that moved an id) went to since the last reconcile: an idle
        process asks nothing; after an error, every queue for RECONCILE_ALL_ROUNDS rounds.
        """
        self._reconcile_at = clock.monotonic() + RECONCILE_INTERVAL_S
        sent, self._sent = self._sent, set()
        queues = self.config.queues if self._reconcile_all else [q for q in self.config.queues if q in sent]
        try:
            for queue in queues:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.lrange(self.keys.active(queue, self.worker_id), 0, -1)
                    pipe.zrange(self.keys.running(queue, self.worker_id), 0, -1)
                    landed, running = await pipe.execute()
                for raw in [*landed, *running]:
                    job_id = cast(bytes, raw).decode()
                    if job_id not in self.slots.running and not self.stopping.is_set():
                        self._started(queue, await self._claim_script(queue, 0, moved_id=job_id))
            self._must_reconcile = False
            self._reconcile_all = max(0, self._reconcile_all - 1)
        except REDIS_ERRORS as exc:
            if not is_transient(exc):
                raise
            self._sent |= sent
            self._must_reconcile = True  # still down: the dispatcher backs off and tries again
