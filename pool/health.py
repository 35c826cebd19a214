"""Is the pool on this host healthy? The one answer behind `pool health` and ``/healthz``.

Healthy means: Redis answers, at least one supervisor of this host has a fresh heartbeat, and
each such supervisor runs all its worker processes with fresh heartbeats. A supervisor that is
stopping or crash-looping is unhealthy (it does not serve its queues). Everything is judged
from Redis, as `pool status` shows it, so a probe and the status view never disagree.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import redis

from pool import status
from pool.config import Config


@dataclass(frozen=True)
class Health:
    healthy: bool
    message: str


def check(client: redis.Redis, config: Config, url: str, host: str | None = None,
          supervisor_id: str | None = None) -> Health:
    """Judge one host (default: this one), or only one supervisor of it.

    Raises the redis error of an unreachable server (the caller reports it as unhealthy).
    """
    host = host or socket.gethostname()
    data = status.snapshot(client, config, url)
    supervisors = [s for s in data["supervisors"] if s["host"] == host
                   and (supervisor_id is None or s["id"] == supervisor_id)]
    live = [s for s in supervisors if s["state"] != "lost"]
    if not live:
        what = "this supervisor has no heartbeat in Redis" if supervisor_id else \
            f"no supervisor is running on host {host} (start one with `pool run {config.path.name}`)"
        return Health(False, what)
    problems, summary = [], []
    for supervisor in live:
        where = f"supervisor pid {supervisor['pid']}"
        running = [w for w in data["workers"] if w["supervisor"] == supervisor["id"] and w["state"] != "lost"]
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


def _stale(worker: dict[str, Any], config: Config) -> bool:
    """A heartbeat older than the TTL (the hash outlives it by less than one interval)."""
    age = worker["heartbeat_age_s"]
    return age is not None and age > config.heartbeat_ttl_s
