"""Building Redis clients (URL, TLS, ACL, Sentinel, Cluster, timeouts) and checking the server.

Every client `pool` makes comes from here. Clients are built with redis-py's own command retries
turned off: a BLMOVE or an ack resent after a lost reply can strand or misreport a job, so the
callers retry at the edge of their loops (pool/connection.py: Outage and its helpers), where they
know what a retry means.
"""

from __future__ import annotations

import contextlib
import logging
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
from pool.config import Config
from pool.config_values import redact_url
from pool.errors import RedisUnavailable

logger = logging.getLogger(__name__)

# A blocking claim waits at most this long, so loops notice shutdown; its socket timeout is longer
# so that a reply that is merely slow is never mistaken for a dead connection.
BLOCK_TIMEOUT_S = 2.0
BLOCKING_SOCKET_MARGIN_S = 3.0

MIN_REDIS_VERSION = (6, 2)  # BLMOVE



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
        raise RedisUnavailable(f"Redis {version} at {redact_url(url)} is too old: pool needs 6.2 or newer (BLMOVE)")
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
