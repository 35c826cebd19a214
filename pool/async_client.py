"""`AsyncClient`: enqueue jobs, look them up, wait for their results, from asyncio code.

It does the work of both clients (client.py's `Client` runs it on a private event loop). Waiting
for a result blocks in Redis (BLMOVE on the job's done list, which the ack script fills) instead
of polling the job record. New records are built by `jobs.new_job`; the dead-set operations
live in dead_letter.py; the Redis clients and the outage rules in connection.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redis.asyncio

from pool import clock, dead_letter, listing
from pool.config import Config, load
from pool.config_values import redact_url
from pool.connection import (
    BLOCK_TIMEOUT_S,
    CLIENT_ATTEMPTS,
    OUTAGE_ERRORS,
    REDIS_ERRORS,
    async_client,
    backoff_s,
    blocking_client,
    describe_error,
    describe_unreachable,
    is_transient,
    replication,
    resolve_url,
    subscription,
)
from pool.errors import JobNotFound, NotReplicated, RedisUnavailable, ResultTimeout, UsageError
from pool.jobs import Job, JobSpec, dumps, new_job
from pool.keys import QUEUE_NAME_RULE, Keys, is_valid_queue_name
from pool.listing import JobPage
from pool.lua import CancelCode, Scripts

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Jobs per enqueue.lua call. A script blocks the server while it runs; 300,000 jobs in one call
# ran over 5 s, past the client's socket timeout (the resend then met BUSY) and past
# busy-reply-threshold (every other client got BUSY). 2,000 jobs take a few milliseconds, and a
# larger chunk gains nothing: the calls go in one pipeline all the same.
ENQUEUE_CHUNK = 2000
CHUNKS_PER_ROUND_TRIP = 8  # 16,000 jobs: well under a second per round trip

class AsyncClient:
    """Enqueue and inspect jobs from asyncio code.

    Args:
        config: the pool's settings (queues, key prefix, payload limit, Redis).
        url: Redis URL; default: the config's ``redis.url`` or its running embedded server.
    """

    def __init__(self, config: Config, url: str | None = None) -> None:
        self.config = config
        self.url = url or resolve_url(config)
        self.keys = Keys(config.key_prefix)
        self._redis: redis.asyncio.Redis | None = None
        self._blocking: redis.asyncio.Redis | None = None
        self._scripts: Scripts | None = None

    @classmethod
    def from_config(cls, path: str | Path, url: str | None = None) -> AsyncClient:
        """A client for the pool described by the YAML file at ``path``."""
        return cls(load(path), url)

    @property
    def redis(self) -> redis.asyncio.Redis:
        if self._redis is None:
            self._redis = async_client(self.config, self.url)
            self._scripts = Scripts(self._redis, self.keys)
        return self._redis

    @property
    def scripts(self) -> Scripts:
        self.redis  # noqa: B018 - creates the client and its scripts on first use
        assert self._scripts is not None
        return self._scripts

    async def close(self) -> None:
        for client in (self._redis, self._blocking):
            if client is not None:
                await client.aclose()
        self._redis = self._blocking = self._scripts = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def enqueue(
        self, handler: str, *args: Any, kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None, timeout: float | None = None, result_ttl: float | None = None,
        job_id: str | None = None, max_retries: int | None = None,
        delay: float | timedelta | None = None, at: datetime | None = None,
    ) -> Job:
        """Enqueue one job.

        Args:
            handler: dotted path of a registered handler (``"examples.tasks.add"``).
            *args: positional arguments for the handler (JSON values).
            kwargs: keyword arguments for the handler (JSON values).
            queue: target queue; default: the first queue in the config.
            timeout: seconds the job may run (default: the config's ``timeout``).
            result_ttl: seconds the result is kept (default: the config's ``result_ttl``).
            job_id: choose the id; if a job with this id exists on the queue it is returned
                unchanged (ids are unique per queue: see :meth:`get_job`).
            max_retries: retries after a failed attempt (default: the handler's settings).
            delay: start no earlier than this many seconds (or this timedelta) from now.
            at: start no earlier than this moment (a timezone-aware datetime). The job waits in
                the delayed set (status ``delayed``) and is started within milliseconds of it.

        Returns:
            The job as enqueued (or the existing job with that id).

        Raises:
            SerializationError: an argument is not JSON-serialisable.
            PayloadTooLarge: the encoded arguments exceed ``max_payload_size``.
            UsageError: a bad queue name, handler name or timeout.
            RedisUnavailable: Redis cannot be reached.
        """
        spec = JobSpec(handler, args, kwargs or {}, queue, timeout, result_ttl, job_id, max_retries, delay, at)
        return (await self.enqueue_many([spec]))[0]

    async def enqueue_many(self, specs: Iterable[JobSpec]) -> list[Job]:
        """Enqueue many jobs in one round trip: one script call per queue and per
        ``ENQUEUE_CHUNK`` jobs, pipelined.

        Each call is atomic and short (a few milliseconds), so a bulk enqueue of any size never
        holds the server for long; the batch as a whole is not one atomic step. Should Redis
        refuse one call (OOM at maxmemory), the jobs of the calls it took are enqueued and those
        of the refused one are not, and the error is raised: give the specs a ``job_id`` each and
        enqueue them again to finish without duplicates (an id that exists is skipped).

        Returns:
            The jobs, in the order given. Ids that already existed come back as stored.

        Raises:
            The same errors as :meth:`enqueue`; nothing is enqueued when any spec is invalid.
        """
        now_ms = clock.now_ms()
        checked: set[tuple[str, str]] = set()  # (queue, handler) pairs already validated
        prepared = [new_job(spec, now_ms, default_queue=self.config.queues[0],
                            max_payload_bytes=self.config.max_payload_bytes, checked=checked) for spec in specs]
        chunks = _chunks_by_queue(job.queue for job, _ in prepared)
        batches = [(queue, [(prepared[i][0].id, prepared[i][0].due_ms or 0, prepared[i][1]) for i in indexes])
                   for queue, indexes in chunks]
        replies = await self._send_batches(batches, now_ms)
        jobs = [job for job, _ in prepared]
        # enqueue.lua answers an id that exists with its record as stored, in the same call: a
        # resent batch costs the round trips of a fresh one, not a read per existing id.
        for (_, indexes), created in zip(chunks, replies, strict=True):
            for index, reply in zip(indexes, created, strict=True):
                if isinstance(reply, list):
                    jobs[index] = Job.from_hash(dict(zip(reply[::2], reply[1::2], strict=True)))
        return jobs

    async def _send_batches(self, chunks: list[tuple[str, list[tuple[str, int, list[Any]]]]], now_ms: int) -> list[Any]:
        """The chunks in pipelines of CHUNKS_PER_ROUND_TRIP, one after the other; replies in order.

        One pipeline for any number of jobs would stream for longer than the socket timeout
        (the server takes it at its own pace), and the resend after that timeout found every id
        existing. Each round trip is resent alone after a dropped connection (enqueue.lua is
        idempotent by id)."""
        replies: list[Any] = []
        for first in range(0, len(chunks), CHUNKS_PER_ROUND_TRIP):
            group = chunks[first:first + CHUNKS_PER_ROUND_TRIP]
            replies += await self._retrying(functools.partial(self._send_group, group, now_ms))
        return replies

    async def _send_group(self, chunks: list[tuple[str, list[tuple[str, int, list[Any]]]]], now_ms: int) -> list[Any]:
        """enqueue.lua once per chunk: alone for one chunk, else in one pipeline (and with
        ``durability: replicated``, followed by a WAIT for a replica on the same connection)."""
        replicas = replication(self.config)
        if len(chunks) == 1 and replicas is None:
            [(queue, batch)] = chunks
            return [await self.scripts.enqueue(queue, batch, now_ms)]

        async def add_calls(pipe: Any) -> None:
            for queue, batch in chunks:
                await self.scripts.enqueue(queue, batch, now_ms, client=pipe)

        replies = await self.scripts.pipelined(self.redis, add_calls, replicas=replicas)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if replicas is not None:
            confirmed = replies.pop()
            if confirmed < replicas[0]:
                raise NotReplicated(
                    f"Redis at {redact_url(self.url)} took the enqueue but no replica confirmed it within "
                    f"{self.config.replication_timeout_s:g}s (durability: replicated); a failover now could lose "
                    f"it. Enqueue again with the same job_id (safe: it is created once), or check the replicas")
        return replies

    async def get_job(self, job_id: str, queue: str | None = None) -> Job | None:
        """Look a job up by id; None if it does not exist (or its result expired).

        Job ids are unique per queue, not per pool: a job's keys live in its queue's hash slot
        (so that Cluster runs each step as one script), and no one script can see whether the
        id is taken on another queue. Without ``queue`` the id is looked up on every queue, and
        if it exists on several, that is an error rather than a guess.

        Args:
            job_id: the job's id.
            queue: its queue; default: look in every queue of the config (one round trip).

        Raises:
            UsageError: no ``queue`` was given and the id exists on more than one queue.
        """
        queues = [queue] if queue else list(self.config.queues)

        async def send() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in queues:
                    pipe.hgetall(self.keys.job(name, job_id))
                return await pipe.execute()

        found = [Job.from_hash(fields) for fields in await self._retrying(send) if fields]
        if len(found) > 1:
            raise UsageError(f"job id {job_id} exists on queues {', '.join(job.queue for job in found)} "
                             "(ids are unique per queue): name the queue (--queue, or queue=)")
        return found[0] if found else None

    async def result(self, job_id: str, timeout: float | None = None, queue: str | None = None) -> Any:
        """Wait for a job to finish and return its result.

        Args:
            job_id: the job's id.
            timeout: seconds to wait; None waits as long as it takes. A Redis outage within that
                time is waited out.
            queue: the job's queue; default: look in every queue of the config.

        Returns:
            The handler's return value (decoded JSON).

        Raises:
            JobFailed: the job failed; ``str()`` includes the remote traceback.
            ResultTimeout: the job did not finish within ``timeout``.
            JobNotFound: no such job (never enqueued, or its result expired).
        """
        job = await self.wait(job_id, timeout, queue)
        return job.outcome()

    async def wait(self, job_id: str, timeout: float | None = None, queue: str | None = None) -> Job:
        """Wait for a job to finish and return its record (completed or failed); see :meth:`result`."""
        deadline = math.inf if timeout is None else clock.monotonic() + timeout
        job = await self._outlasting_outages(deadline, lambda: self._require(job_id, queue))
        while not job.status.is_finished:
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                raise ResultTimeout(f"job {job_id} did not finish within {timeout:g}s (status: {job.status})")
            block = functools.partial(self._block_on_done, job.queue, job_id, min(remaining, BLOCK_TIMEOUT_S))
            await self._outlasting_outages(deadline, block)
            job = await self._outlasting_outages(deadline, functools.partial(self._require, job_id, job.queue))
        return job

    async def _outlasting_outages(self, deadline: float, call: Callable[[], Awaitable[T]]) -> T:
        """A waiter rides out a Redis outage until its own deadline, then reports it."""
        attempt = 0
        while True:
            try:
                return await call()
            except RedisUnavailable:
                attempt += 1
                if clock.monotonic() + 0.1 >= deadline:
                    raise
                await asyncio.sleep(min(backoff_s(attempt), max(0.0, deadline - clock.monotonic())))

    async def _require(self, job_id: str, queue: str | None) -> Job:
        job = await self.get_job(job_id, queue)
        if job is None:
            where = f"queue {queue!r}" if queue else "queues " + ", ".join(self.config.queues)
            raise JobNotFound(f"no job {job_id} in {where} (never enqueued, or its result expired)")
        return job

    async def _block_on_done(self, queue: str, job_id: str, seconds: float) -> None:
        # BLMOVE from the done list onto itself: the token stays for every other waiter.
        if self._blocking is None:
            self._blocking = blocking_client(self.config, self.url, max_connections=64)
        done = self.keys.done(queue, job_id)
        blocking = self._blocking
        await self._retrying(
            # redis-py types the timeout as int; BLMOVE takes fractional seconds since Redis 6
            lambda: blocking.blmove(done, done, timeout=max(seconds, 0.01), src="RIGHT", dest="LEFT")  # type: ignore[arg-type]
        )

    # -- cancellation and the dead-letter queue ----------------------------------------------------

    async def cancel(self, job_id: str, queue: str | None = None) -> str:
        """Cancel a job that has not finished.

        Returns:
            'cancelled' (it was waiting: it will never run), 'requested' (it is running: its
            worker cancels it within a heartbeat) or 'finished' (too late: nothing changed).

        Raises:
            JobNotFound: no such job.
        """
        job = await self._require(job_id, queue)
        event = None
        if self.config.events:
            event = dumps({"id": job.id, "queue": job.queue, "handler": job.handler,
                           "status": "cancelled", "ts_ms": clock.now_ms()})
        code = CancelCode(await self._retrying(lambda: self.scripts.cancel(
            job.queue, job.id, clock.now_ms(), int(self.config.result_ttl_s * 1000), event)))
        if code is CancelCode.NOT_FOUND:
            raise JobNotFound(f"no job {job_id} (its result expired meanwhile)")
        return code.name.lower()

    async def dead_jobs(self, queue: str | None = None, limit: int = 100) -> list[Job]:
        """The most recent dead jobs, newest first, across the config's queues (or one)."""
        return await dead_letter.dead_jobs(self, queue, limit)

    async def jobs(self, queue: str | None = None, status: str = "queued", offset: int = 0,
                   limit: int = 20) -> JobPage:
        """One page of a queue's jobs in one state (see :mod:`pool.listing`).

        Args:
            queue: default: the first queue of the config.
            status: queued, active, delayed, retrying, dead, completed, failed or cancelled.
        """
        name = queue or self.config.queues[0]
        if not is_valid_queue_name(name):
            raise UsageError(f"queue {name!r} is not a valid queue name: {QUEUE_NAME_RULE}")
        return await listing.list_jobs(self.redis, self.keys, name, status, offset, limit, self._retrying)

    async def retry_dead(self, job_ids: Iterable[str] = (), queue: str | None = None, *, all: bool = False,
                         on_progress: Callable[[int, int], None] | None = None) -> int:
        """Send dead jobs back to their queues (attempts reset, ids kept). Returns how many went.

        The work goes in pages of ``dead_letter.DEAD_PAGE`` ids, one round trip each (resent
        alone after an outage), so no call holds Redis for long and the client's memory stays
        bounded at any size of the dead set.

        Args:
            job_ids: the jobs to retry; or ``all=True`` for every dead job (of ``queue``, or of
                every queue of the config) that had died when the run started: jobs that die
                while it runs (a retried job that fails again at once, say) are left for the next
                run. So is a job buried meanwhile by a host whose clock is behind, with a time of
                death earlier than the page the run has reached.
            on_progress: called after each page with the ids handled so far and the dead ids
                counted at the start (``len(job_ids)``, or the dead sets' size with ``all``).
        """
        return await dead_letter.retry_or_purge(self, "retry", job_ids, queue, all, on_progress)

    async def purge_dead(self, job_ids: Iterable[str] = (), queue: str | None = None, *, all: bool = False,
                         on_progress: Callable[[int, int], None] | None = None) -> int:
        """Delete dead jobs for good. Returns how many were deleted. Arguments and paging as in
        :meth:`retry_dead`."""
        return await dead_letter.retry_or_purge(self, "purge", job_ids, queue, all, on_progress)

    async def events(self, queues: Iterable[str] | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """Yield each finished attempt's event (completed, failed, retrying, dead, cancelled) as a dict.

        Subscribes to the queues' channels (default: every queue of the config) and runs until the
        caller stops iterating, resubscribing after a Redis outage. Events are not stored: only
        those published while listening arrive. A message on the channel that is not an event
        (anyone who may publish can send one) is logged and skipped.

        Raises:
            RedisUnavailable: Redis cannot be reached when it starts (later outages are waited out).
        """
        channels = [self.keys.events(q) for q in (list(queues) if queues else self.config.queues)]
        await self._retrying(self.redis.ping)
        async for message in subscription(self.redis, channels):
            event = _event(message)
            if event is not None:
                yield event

    async def _retrying(self, send: Callable[[], Awaitable[T]]) -> T:
        """Run ``send``, resending it after a dropped connection or a refusal (OOM, BUSY, LOADING
        ...: a refused command did nothing, and every client call is idempotent).

        Raises:
            RedisUnavailable: still unreachable, or still refusing, after CLIENT_ATTEMPTS tries
                (a waiter goes on until its own deadline).
        """
        for attempt in range(CLIENT_ATTEMPTS):
            try:
                return await send()
            except REDIS_ERRORS as exc:
                if not is_transient(exc):
                    raise
                if attempt == CLIENT_ATTEMPTS - 1:
                    if isinstance(exc, OUTAGE_ERRORS):
                        raise describe_unreachable(self.url, exc) from None
                    raise RedisUnavailable(f"Redis at {redact_url(self.url)} refuses commands: {describe_error(exc)}") \
                        from None
                await asyncio.sleep(backoff_s(attempt + 1, base_s=0.05, cap_s=0.5))
        raise AssertionError("unreachable")  # pragma: no cover

def _chunks_by_queue(queues: Iterable[str]) -> list[tuple[str, list[int]]]:
    """The indexes of a bulk enqueue's jobs grouped by queue, in runs of at most ENQUEUE_CHUNK."""
    by_queue: dict[str, list[int]] = defaultdict(list)
    for index, queue in enumerate(queues):
        by_queue[queue].append(index)
    return [(queue, indexes[first:first + ENQUEUE_CHUNK])
            for queue, indexes in by_queue.items() for first in range(0, len(indexes), ENQUEUE_CHUNK)]


def _event(message: dict[str, Any]) -> dict[str, Any] | None:
    """A published event, or None (logged) for a message that is not one."""
    try:
        event = orjson.loads(message["data"])
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("status"), str):
        logger.warning("skipped a message on %s that is not a pool event", _text(message.get("channel")))
        return None
    return event


def _text(raw: Any) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
