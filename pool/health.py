"""Is the pool on this host healthy? The one answer behind `pool health` and ``/healthz``.

Healthy means: Redis answers, at least one supervisor of this host has a fresh heartbeat, and
each such supervisor runs all its worker processes with fresh heartbeats. A supervisor that is
stopping or crash-looping is unhealthy (it does not serve its queues). Records are decoded by
status.py's own functions, so a probe and `pool status` never disagree about one supervisor.

A probe reads only what it judges: this host's supervisor hashes (for ``/healthz`` only its own
supervisor's), then the hashes of the workers they list, in pipelined round trips. The rest of the
fleet, the queues and their tallies are not read: a probe must answer within its timeout however
large and busy the pool is (`pool status`, which reads all of it, took 6 s at 10k workers and
1,000 busy queues, past a readiness probe's timeout).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, cast

import redis

from pool import clock, status
from pool.config import Config
from pool.keys import Keys


@dataclass(frozen=True)
class Health:
    healthy: bool
    message: str


def check(client: redis.Redis, config: Config, url: str, host: str | None = None,
          supervisor_id: str | None = None) -> Health:
    """Judge one host (default: this one), or only one supervisor of it.

    Args:
        url: the server's address (kept for the callers' symmetry with status.snapshot).
        host: the host to judge; default this one.
        supervisor_id: judge only this supervisor (``/healthz``): one hash read, not the registry.

    Raises the redis error of an unreachable server (the caller reports it as unhealthy).
    """
    host = host or socket.gethostname()
    keys = Keys(config.key_prefix)
    ids = [supervisor_id] if supervisor_id else _host_supervisor_ids(client, keys, host)
    live = [s for s in _read(client, keys.supervisor, ids, status.SUPERVISOR_FIELDS, status.supervisor_record)
            if s["host"] == host and s["state"] != "lost"]
    if not live:
        what = "this supervisor has no heartbeat in Redis" if supervisor_id else \
            f"no supervisor is running on host {host} (start one with `pool run {config.path.name}`)"
        return Health(False, what)
    workers = _read(client, keys.worker, sorted({w for s in live for w in s["workers"]}), status.WORKER_FIELDS,
                    status.worker_record)
    status.name_workers(workers, live)
    problems, summary = [], []
    for supervisor in live:
        where = f"supervisor pid {supervisor['pid']}"
        running = [w for w in workers if w["supervisor"] == supervisor["id"] and w["state"] != "lost"]
        summary.append(f"{where} {supervisor['state']}, {len(running)}/{supervisor['processes']} workers")
        if supervisor["state"] in ("stopping", "crash-looping"):
            problems.append(f"{where} is {supervisor['state']}")
        elif len(running) < supervisor["processes"]:
            problems.append(f"{where}: {len(running)} of {supervisor['processes']} workers running")
        stale = [w for w in running if _stale(w, config)]
        problems += [f"{where}: {w['name']} pid {w['pid']} last heartbeat {w['heartbeat_age_s']:.0f}s ago"
                     for w in stale]
    if problems:
        return Health(False, f"host {host}: " + "; ".join(problems))
    return Health(True, f"host {host}: " + "; ".join(summary) + "; Redis answers")


def _host_supervisor_ids(client: redis.Redis, keys: Keys, host: str) -> list[str]:
    """This host's supervisors, by id alone (``host:pid:nonce``): no other host's hash is read."""
    members = (cast(bytes, member).decode() for member in client.smembers(keys.supervisors()))
    return sorted(member for member in members if member.rsplit(":", 2)[0] == host)


def _read(client: redis.Redis, key: Any, ids: list[str], fields: tuple[str, ...], decode: Any) -> list[dict[str, Any]]:
    """The ``fields`` of the hashes of ``ids`` in one pipelined round trip, decoded as `pool status` decodes them."""
    if not ids:
        return []
    with client.pipeline(transaction=False) as pipe:
        for record_id in ids:
            pipe.hmget(key(record_id), fields)
        replies = pipe.execute()
    now_ms = clock.now_ms()  # heartbeats carry their writer's clock: ages are judged on ours
    return [decode(record_id, fields, now_ms) for record_id, fields in zip(ids, replies, strict=True)]


def _stale(worker: dict[str, Any], config: Config) -> bool:
    """A heartbeat older than the TTL (the hash outlives it by less than one interval)."""
    age = worker["heartbeat_age_s"]
    return age is not None and age > config.heartbeat_ttl_s
