"""Building Redis clients (URL, TLS, ACL, timeouts) and surviving outages (backoff, logging).

Every client `pool` makes comes from here. Clients are built with redis-py's own command retries
turned off: a BLMOVE or an ack resent after a lost reply can strand or misreport a job, so the
callers retry at the edge of their loops, where they know what a retry means.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

from pool import embedded
from pool.config import Config, redact_url
from pool.errors import RedisUnavailable

logger = logging.getLogger(__name__)

# A blocking claim waits at most this long, so loops notice shutdown; its socket timeout is longer
# so that a reply that is merely slow is never mistaken for a dead connection.
BLOCK_TIMEOUT_S = 2.0
BLOCKING_SOCKET_MARGIN_S = 3.0

MIN_REDIS_VERSION = (6, 2)  # BLMOVE

# Errors that mean "Redis is not reachable right now" rather than "the command was wrong".
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,
    TimeoutError,
    OSError,
)

redact = redact_url  # the one place that knows how a URL hides its password (config_values.py)


def resolve_url(config: Config) -> str:
    """The Redis URL this config points at: ``redis.url``, or the running embedded server's.

    Raises:
        RedisUnavailable: no URL is configured and the embedded server is not running.
    """
    if config.redis.sentinels:
        return sentinel_url(config)
    if config.redis.url:
        return config.redis.url
    url = embedded.find_url(config.state_dir, wait_s=embedded.HANDOVER_WAIT_S)  # a restart under way
    if url is None and embedded.is_in_use(config.state_dir):
        raise RedisUnavailable(
            f"the embedded Redis of {config.path.name} did not come back within {embedded.HANDOVER_WAIT_S:g}s "
            f"although a pool run uses it; see {config.state_dir / 'valkey.log'} and the log of pool run"
        )
    if url is None:
        raise RedisUnavailable(
            f"the embedded Redis of {config.path.name} is not running (state dir {config.state_dir}); "
            f"start the pool with `pool run {config.path}`, or set redis.url"
        )
    return url


def replication(config: Config) -> tuple[int, int] | None:
    """WAIT's arguments (replicas, timeout ms) for ``durability: replicated``; None for fast."""
    if config.durability != "replicated":
        return None
    return 1, max(1, int(config.replication_timeout_s * 1000))


def sentinel_url(config: Config) -> str:
    """How logs and `pool status` name a Sentinel-managed master (no password in it)."""
    return f"redis+sentinel://{','.join(config.redis.sentinels)}/{config.redis.service_name}"


def _sentinel_addresses(config: Config) -> list[tuple[str, int]]:
    return [(host, int(port)) for host, _, port in (a.rpartition(":") for a in config.redis.sentinels)]


def _sentinel_kwargs(config: Config) -> dict[str, Any]:
    """How the Sentinels themselves are asked (their password may differ from the master's)."""
    kwargs: dict[str, Any] = {"socket_timeout": config.redis.connect_timeout_s,
                              "socket_connect_timeout": config.redis.connect_timeout_s}
    if config.redis.sentinel_password:
        kwargs["password"] = config.redis.sentinel_password
    return kwargs


def _client_kwargs(config: Config, url: str, socket_timeout_s: float | None, *, for_asyncio: bool) -> dict[str, Any]:
    settings = config.redis
    # Each kind of client takes its own kind of Retry: redis-py 8 converts a sync one handed to an
    # asyncio client with a warning (and proposes to refuse it).
    retry_class = redis.asyncio.retry.Retry if for_asyncio else redis.retry.Retry
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout_s or settings.socket_timeout_s,
        "socket_connect_timeout": settings.connect_timeout_s,
        "retry": retry_class(NoBackoff(), 0),
    }
    if not settings.cluster:  # (redis-py's cluster clients have no such option)
        kwargs["retry_on_timeout"] = False
    if settings.username:
        kwargs["username"] = settings.username
    if settings.password:
        kwargs["password"] = settings.password
    if url.startswith("rediss://"):
        tls = settings.tls
        kwargs["ssl_cert_reqs"] = "required" if tls.verify else "none"
        kwargs["ssl_check_hostname"] = tls.verify
        if tls.ca_file:
            kwargs["ssl_ca_certs"] = tls.ca_file
        if tls.cert_file:
            kwargs["ssl_certfile"] = tls.cert_file
        if tls.key_file:
            kwargs["ssl_keyfile"] = tls.key_file
    return kwargs


def async_client(
    config: Config, url: str, *, socket_timeout_s: float | None = None,
    max_connections: int | None = None,
) -> redis.asyncio.Redis:
    """An asyncio client for ``url``. Create it inside the process (and loop) that uses it.

    With ``redis.cluster`` it is redis-py's cluster client (``max_connections`` per node; every
    call we make names keys of one slot); with ``redis.sentinels`` a client of the master the
    Sentinels name, asked again whenever a connection is opened (so after a failover).
    """
    kwargs = _client_kwargs(config, url, socket_timeout_s, for_asyncio=True)
    if max_connections:
        kwargs["max_connections"] = max_connections
    if config.redis.cluster:
        # not a Redis subclass, but it has every command we send (each names keys of one slot)
        return cast(redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster.from_url(url, **kwargs))
    if config.redis.sentinels:
        sentinel = redis.asyncio.sentinel.Sentinel(
            _sentinel_addresses(config), sentinel_kwargs=_sentinel_kwargs(config), **kwargs)
        assert config.redis.service_name, "config loading requires redis.service_name with redis.sentinels"
        client = sentinel.master_for(config.redis.service_name, redis_class=_AsyncSentinelMaster)
    else:
        client = redis.asyncio.Redis.from_url(url, **kwargs)
    pool = client.connection_pool
    pool.connection_class = _with_hiredis_packing(pool.connection_class)
    return client


def _with_hiredis_packing(connection_class: type) -> type:
    """The asyncio connections of redis-py pack commands in Python, argument by argument; its sync
    ones use hiredis when installed. A job's fields are ~20 arguments per script call, so packing
    was a third of the client's CPU in bulk enqueues (bench/test_micro.py): use hiredis here too.
    """
    if not HIREDIS_AVAILABLE or issubclass(connection_class, _HiredisPacking):
        return connection_class
    return type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), {})


class _HiredisPacking:
    _packer = HiredisRespSerializer() if HIREDIS_AVAILABLE else None

    def pack_command(self, *args: Any) -> list[bytes]:
        # hiredis takes our arguments (str, bytes, int, float) as they are; redis-py's serializer
        # first copies them through a generator (a sixth of a bulk enqueue's client CPU).
        if not (isinstance(args[0], str) and " " in args[0]):
            with contextlib.suppress(TypeError):
                return [hiredis.pack_command(args)]
        assert self._packer is not None  # mixed in only when hiredis is installed
        return self._packer.pack(*args)  # splits 'CLIENT SETINFO' etc.


def blocking_client(config: Config, url: str, max_connections: int) -> redis.asyncio.Redis:
    """A client reserved for blocking claims, so heartbeats and acks never queue behind them."""
    timeout = max(config.redis.socket_timeout_s, BLOCK_TIMEOUT_S + BLOCKING_SOCKET_MARGIN_S)
    return async_client(config, url, socket_timeout_s=timeout, max_connections=max_connections)


def sync_client(config: Config, url: str) -> redis.Redis:
    """A synchronous client (supervisor housekeeping, CLI). Its pool resets itself after a fork."""
    kwargs = _client_kwargs(config, url, None, for_asyncio=False)
    if config.redis.cluster:
        # not a Redis subclass, but it has every command we send (each names keys of one slot)
        return cast(redis.Redis, redis.cluster.RedisCluster.from_url(url, **kwargs))
    if config.redis.sentinels:
        sentinel = redis.sentinel.Sentinel(_sentinel_addresses(config), sentinel_kwargs=_sentinel_kwargs(config),
                                           **kwargs)
        assert config.redis.service_name, "config loading requires redis.service_name with redis.sentinels"
        return sentinel.master_for(config.redis.service_name, redis_class=_SentinelMaster)
    return redis.Redis.from_url(url, **kwargs)


class _AsyncSentinelMaster(redis.asyncio.Redis):
    """The master's client; closing it also closes its connections to the Sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = cast(redis.asyncio.sentinel.SentinelConnectionPool, self.connection_pool)  # master_for made it
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


class _SentinelMaster(redis.Redis):
    """The master's client; closing it also closes its connections to the Sentinels."""

    def close(self) -> None:
        super().close()
        pool = cast(redis.sentinel.SentinelConnectionPool, self.connection_pool)  # master_for made it
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()


# The public client resends a call after a dropped connection (a stale pooled socket after a
# server restart or CLIENT KILL); safe because every command it sends is idempotent.
CLIENT_ATTEMPTS = 4


def describe_unreachable(url: str, exc: BaseException) -> RedisUnavailable:
    """A one-line error for a Redis that cannot be reached, without the password."""
    reason = str(exc).strip() or type(exc).__name__
    return RedisUnavailable(f"cannot reach Redis at {redact(url)}: {reason}")


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
_REFUSAL_TEXT = re.compile(r"(?:^|caused error: |: -)(" + "|".join(REFUSAL_CODES) + r")\b")
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
    text = _SCRIPT_SUFFIX.sub("", _PIPELINE_PREFIX.sub("", str(exc).strip()))
    code = getattr(exc, "status_code", None) or _stripped_code(exc)
    if code and not text.startswith(code):
        text = f"{code} {text}"
    return text or type(exc).__name__


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
        self.url = redact(url)
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
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that lands
        # as the wait ends, and a stop cancels these tasks
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._ended.wait()

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


def server_info(client: redis.Redis, section: str, key: str) -> dict[str, Any]:
    """INFO ``section`` of the server holding ``key``: on a Cluster, the node serving its slot
    (any node would answer, a different one each time)."""
    if isinstance(client, redis.cluster.RedisCluster):
        return dict(client.info(section, target_nodes=client.get_node_from_key(key)))
    return dict(client.info(section))


def check_server(client: redis.Redis, url: str) -> None:
    """At start-up: refuse Redis < 6.2 (no BLMOVE), warn about eviction, say which persistence is on.

    Raises:
        RedisUnavailable: the server is too old.
    """
    try:
        info = client.info("server") | client.info("persistence")
    except redis.exceptions.RedisError:
        return  # INFO not allowed, or Redis gone again (the housekeeper reports outages)
    version = str(info.get("valkey_version") or info.get("redis_version") or "0")
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts and parts < MIN_REDIS_VERSION:
        raise RedisUnavailable(f"Redis {version} at {redact(url)} is too old: pool needs 6.2 or newer (BLMOVE)")
    if info.get("aof_enabled"):
        logger.info("Redis %s, persistence: AOF", version)
    else:
        logger.warning("Redis %s has no AOF (appendonly no): a crash or restart of Redis can lose "
                       "queued jobs (RDB snapshots, if configured, lose everything since the last one)",
                       version)
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except Exception:  # CONFIG is often disabled on managed Redis: nothing to check then
        return
    if policy and policy != "noeviction":
        logger.warning("Redis maxmemory-policy is %r: eviction can silently delete queued jobs; "
                       "set it to 'noeviction'", policy)
