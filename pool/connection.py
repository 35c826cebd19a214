"""Surviving Redis outages: what counts as one, pacing and logging it, and the three edge helpers.

An outage is a lost connection or a refusal ("not now": OOM, BUSY, LOADING ...). Every loop of
every process handles it at its edge with one of three helpers, so that each shape is written
once: :meth:`Outage.retry` (run an idempotent step until Redis takes it), :func:`subscription`
(follow pub/sub channels, resubscribing), and :func:`wait_event` (wait for an event with a
timeout, the one way that cannot swallow a cancellation on Python 3.11). Building the clients
is clients.py's; its names are re-exported here, where callers have always found them.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio

from pool.clients import (
    BLOCK_TIMEOUT_S,
    BLOCKING_SOCKET_MARGIN_S,
    MIN_REDIS_VERSION,
    async_client,
    blocking_client,
    check_server,
    replication,
    resolve_url,
    sentinel_url,
    server_info,
    sync_client,
)
from pool.config_values import redact_url
from pool.errors import RedisUnavailable

__all__ = [
    "BLOCKING_SOCKET_MARGIN_S", "BLOCK_TIMEOUT_S", "CLIENT_ATTEMPTS", "MIN_REDIS_VERSION", "OUTAGE_ERRORS",
    "REDIS_ERRORS", "REFUSAL_CODES", "Outage", "async_client", "backoff_s", "blocking_client", "check_server",
    "describe_error", "describe_unreachable", "is_refusal", "is_transient", "replication",
    "resolve_url", "sentinel_url", "server_info", "subscription", "sync_client", "wait_event",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that mean "Redis is not reachable right now" rather than "the command was wrong".
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,
    TimeoutError,
    OSError,
)

# The public client resends a call after a dropped connection (a stale pooled socket after a
# server restart or CLIENT KILL); safe because every command it sends is idempotent.
CLIENT_ATTEMPTS = 4


def describe_unreachable(url: str, exc: BaseException) -> RedisUnavailable:
    """A one-line error for a Redis that cannot be reached, without the password."""
    reason = str(exc).strip() or type(exc).__name__
    return RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {reason}")


def backoff_s(attempt: int, base_s: float = 0.05, cap_s: float = 1.0) -> float:
    """Exponential backoff with full jitter (attempt 0, 1, 2 ...), capped at ``cap_s``.

    The cap is short on purpose: work must resume within about a second of Redis coming back.
    """
    return random.uniform(0, min(cap_s, base_s * (2 ** min(attempt, 16))))


# -- refusals ---------------------------------------------------------------------------------------
#
# Beside a lost connection (OUTAGE_ERRORS) the server can answer "not now": OOM at maxmemory with
# noeviction, MISCONF when it cannot persist, BUSY while a slow script runs, READONLY on a replica
# (a failover in progress), LOADING after a restart, TRYAGAIN / CLUSTERDOWN / MASTERDOWN while a
# Cluster or a replica is not ready. Every process waits these out like an outage, with the same
# Outage pacing and logging, instead of exiting (a crash loop helps nobody: the supervisor's
# respawn backoff then delays the return of work by up to 30 s). A refusal is per command: under
# OOM only commands that may add memory are refused (claims and acks pass; heartbeats do not), so
# an Outage tracks refusals per path ("heartbeat", "claim", "ack" ...) and one path's success
# does not end another's refusal.
#
# Every other error reply is a bug or a misconfiguration (a Lua error of our own scripts, NOPERM)
# and stays loud: the caller raises it.
#
# redis-py strips the code from the replies it has a class for (OOM, READONLY, LOADING, TRYAGAIN,
# CLUSTERDOWN, MASTERDOWN), so those are told by class; MISCONF and BUSY keep it in the text,
# after "... of pipeline caused error: " in a pipeline, and Redis 6.2 wraps a script's error as
# "Error running script ... @user_script:N: -OOM ...".

REFUSAL_CODES = ("OOM", "MISCONF", "BUSY", "READONLY", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN",
                 "NOREPLICAS")
_REFUSAL_CLASSES: tuple[type[BaseException], ...] = tuple(
    getattr(redis.exceptions, name) for name in (
        "OutOfMemoryError", "ReadOnlyError", "BusyLoadingError", "TryAgainError", "ClusterDownError",
        "MasterDownError")
    if hasattr(redis.exceptions, name))
# redis-py 5.x quotes a pipeline's error as a tuple: "caused error: ('BUSY ...',)".
_REFUSAL_TEXT = re.compile(r"(?:^|caused error: (?:\(['\"])?|: -)(" + "|".join(REFUSAL_CODES) + r")\b")
_SCRIPT_SUFFIX = re.compile(r"\s*script: [0-9a-f]{40}, on @user_script:\d+\.?\s*$")
_PIPELINE_PREFIX = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.DOTALL)

# What may be a refusal (the caller asks is_transient) or an outage: the except clause of every
# loop that waits Redis out.
REDIS_ERRORS: tuple[type[BaseException], ...] = (*OUTAGE_ERRORS, redis.exceptions.ResponseError)


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is the server saying "not now" (see REFUSAL_CODES), to be waited out."""
    if isinstance(exc, _REFUSAL_CLASSES):
        return True
    return isinstance(exc, redis.exceptions.ResponseError) and _REFUSAL_TEXT.search(str(exc)) is not None


def is_transient(exc: BaseException) -> bool:
    """An outage or a refusal: wait it out. Anything else is a bug or a misconfiguration."""
    return isinstance(exc, OUTAGE_ERRORS) or is_refusal(exc)


def describe_error(exc: BaseException) -> str:
    """An error reply as people should read it: with its code, without redis-py's pipeline
    preamble (which quotes the command, timestamps included) or the script's sha and line."""
    text = _SCRIPT_SUFFIX.sub("", _unquoted(_PIPELINE_PREFIX.sub("", str(exc).strip())))
    code = getattr(exc, "status_code", None) or _stripped_code(exc)
    if code and not text.startswith(code):
        text = f"{code} {text}"
    return text or type(exc).__name__


def _unquoted(text: str) -> str:
    """The message inside redis-py 5.x's tuple quoting of a pipeline error ("('BUSY ...',)")."""
    if text.startswith("(") and text.endswith(",)"):
        try:
            inner = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(inner, tuple) and inner and isinstance(inner[0], str):
            return inner[0].strip()
    return text


def _stripped_code(exc: BaseException) -> str | None:
    """The code redis-py < 8 dropped from the replies it has a class for."""
    for code, name in (("OOM", "OutOfMemoryError"), ("READONLY", "ReadOnlyError"), ("LOADING", "BusyLoadingError"),
                       ("TRYAGAIN", "TryAgainError"), ("MASTERDOWN", "MasterDownError"),
                       ("CLUSTERDOWN", "ClusterDownError")):
        if isinstance(exc, getattr(redis.exceptions, name, ())):
            return code
    return None


def _cause(exc: BaseException) -> str:
    """The first sentence of an error, for a log line (MISCONF's reply is a paragraph)."""
    text = describe_error(exc)
    first, dot, _ = text.partition(". ")
    return first + dot.strip() if dot else text


# -- pacing and logging outages ---------------------------------------------------------------------
#
# An outage or refusal is logged once when it starts (with its cause) and once when it ends (with
# its length), however many calls fail meanwhile. A blip, one that ends within QUIET_S (a reset
# connection that the next call reopens), is not worth two lines each: the first of a minute is
# logged as one line, the others are counted and summed up in the next line (BLIP_REPORT_S).
# 926 connection resets in 15 s were 838 warnings before.

CONNECTION = "connection"  # the path of a lost connection: every path of the process shares it
QUIET_S = 1.0
BLIP_REPORT_S = 60.0


class Outage:
    """Tracks one process's trouble with Redis, so that it is logged once at the start and once at
    the end, and paces the retries of every path of the process (backoff with jitter).

    Args:
        what: who is speaking in the log ("worker <id>", "supervisor").
        url: the server (its password is not logged).
        on_recovered: told once per connection outage that ended (metrics).
    """

    def __init__(self, what: str, url: str, on_recovered: Callable[[], None] | None = None) -> None:
        self.what = what
        self.url = redact_url(url)
        self.attempt = 0
        self.started: float | None = None
        self.on_recovered = on_recovered
        self.failing: set[str] = set()  # CONNECTION, or the paths whose calls Redis refuses
        self._cause = ""
        self._refusal = False  # the trouble started as a refusal (not a lost connection)
        self._logged = False  # its start was logged (it outlasted QUIET_S)
        self._lost_connection = False
        self._blips = 0  # ended within QUIET_S since the last blip line
        self._blip_logged_at: float | None = None
        self._ended: asyncio.Event | None = None  # set when a path recovers (wakes retry_after)

    @property
    def is_ongoing(self) -> bool:
        return self.started is not None

    @property
    def is_cut_off(self) -> bool:
        """The connection itself is lost (not merely some commands refused)."""
        return CONNECTION in self.failing

    def failed(self, exc: BaseException, path: str = CONNECTION) -> float:
        """Record a failed call of ``path``; returns how long to wait before the next one (seconds)."""
        now = time.monotonic()
        refused = is_refusal(exc)
        if self.started is None:
            self.started, self._cause, self._refusal = now, _cause(exc), refused
        if refused:
            self.failing.discard(CONNECTION)  # a refusal is an answer: the connection is there
            self.failing.add(path)
        else:
            self.failing.add(CONNECTION)
            self._lost_connection = True
        if not self._logged and now - self.started >= QUIET_S:
            self._logged = True
            self._log_start()
        self.attempt += 1
        return backoff_s(self.attempt)

    async def retry_after(self, exc: BaseException, path: str = CONNECTION) -> None:
        """Record a failed call, then wait out its backoff, or less: one path of a process
        getting through wakes the others at once. An ack must not sit out a second of backoff
        while the fetcher, back first, claims more jobs (a kill then runs all their outcomes again)."""
        delay = self.failed(exc, path)
        if self._ended is None:
            self._ended = asyncio.Event()
        await wait_event(self._ended, delay)

    async def retry(self, path: str, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run an idempotent step until Redis takes it, waiting out outages and refusals (OOM,
        MISCONF, BUSY, READONLY ...) with backoff: acks and requeues are never dropped.

        Args:
            path: names the step for the refusal tracking and the log ("ack", "requeue" ...).
            call: the step; called again with the same arguments after each failure.

        Raises:
            redis.exceptions.ResponseError: any other error reply (a bug, a misconfiguration).
        """
        while True:
            try:
                result = await call(*args, **kwargs)
            except REDIS_ERRORS as exc:
                if not is_transient(exc):
                    raise
                await self.retry_after(exc, path)
                continue
            self.recovered(path)
            return result

    def recovered(self, path: str = CONNECTION) -> bool:
        """A call of ``path`` went through: that path, and the connection, are fine again.

        Returns whether this ended a failure (of this path or of the connection).
        """
        if path not in self.failing and CONNECTION not in self.failing:
            return False
        self.failing.discard(path)
        self.failing.discard(CONNECTION)
        if self._ended is not None:
            self._ended.set()
            self._ended = None  # the next wait is on a fresh one
        if not self.failing:
            self._end()
        return True

    def _end(self) -> None:
        assert self.started is not None
        length_s = time.monotonic() - self.started
        if self._logged:
            self._log_end(length_s)
        else:
            self._blip(length_s)
        if self._lost_connection and self.on_recovered is not None:
            self.on_recovered()
        self.started = None
        self.attempt = 0
        self._logged = self._lost_connection = False

    def _log_start(self) -> None:
        if self._refusal:
            logger.warning("%s: Redis at %s refuses commands (%s); waiting with backoff", self.what, self.url,
                           self._cause)
        else:
            logger.warning("%s lost Redis at %s (%s); retrying with backoff", self.what, self.url, self._cause)

    def _log_end(self, length_s: float) -> None:
        if self._refusal:
            logger.warning("%s: Redis at %s accepts commands again after %.1fs", self.what, self.url, length_s)
        else:
            logger.warning("%s reconnected to Redis at %s after %.1fs", self.what, self.url, length_s)

    def _blip(self, length_s: float) -> None:
        """One line for the first blip of a while, then one line per BLIP_REPORT_S with the count."""
        now = time.monotonic()
        self._blips += 1
        if self._blip_logged_at is not None and now - self._blip_logged_at < BLIP_REPORT_S:
            return
        kind = "refused commands" if self._refusal else "dropped the connection"
        if self._blips == 1:
            logger.warning("%s reconnected to Redis at %s after %.2fs: it %s (%s); such blips are counted "
                           "for %ds, not logged each", self.what, self.url, length_s, kind, self._cause,
                           BLIP_REPORT_S)
        else:
            logger.warning("%s: %d blips of Redis at %s in the last %ds, each over within %gs (the last: it %s, %s)",
                           self.what, self._blips, self.url, now - (self._blip_logged_at or now), QUIET_S, kind,
                           self._cause)
        self._blips = 0
        self._blip_logged_at = now


async def subscription(
    client: redis.asyncio.Redis, channels: list[str],
    on_subscribed: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield each message published on ``channels``, for as long as the caller iterates.

    One PubSub for the whole life of the subscription: after a dropped connection the next read
    reconnects it, and redis-py's connect callback subscribes it again (redis-py 8 even does so
    before it raises the error). Closing it and opening a fresh one instead, as this once did,
    threw away a subscription that was already back and widened the gap in which messages are
    lost. ``on_subscribed`` runs after the first subscription and after every outage, once the
    connection answers again: what was published meanwhile is gone, so the caller reads the
    state it would have learnt (the scheduler's earliest due times).
    """
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    attempt = 0
    try:
        while True:
            try:
                if attempt or not pubsub.subscribed:
                    if not pubsub.subscribed:
                        await pubsub.subscribe(*channels)
                    else:
                        await pubsub.ping()  # reconnects (and so resubscribes) before we read state
                    if on_subscribed is not None:
                        await on_subscribed()
                    attempt = 0
                message = await pubsub.get_message(timeout=BLOCK_TIMEOUT_S)
                _raise_if_cancelled()  # redis-py's get_message can swallow a cancellation
            except REDIS_ERRORS as exc:
                if not is_transient(exc):
                    raise
                attempt += 1
                await asyncio.sleep(backoff_s(attempt))
                continue
            if message is not None and message["type"] == "message":
                yield message
    finally:
        await pubsub.aclose()


def _raise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` has passed; returns whether it was set.

    asyncio.timeout, never wait_for: on Python 3.11 wait_for can swallow a cancellation that
    lands as the wait ends, and a stop cancels the tasks that wait here (it would then wait for
    ever). Every timed wait on an event in pool goes through this function.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()
