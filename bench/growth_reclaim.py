"""Growth row 1: what one supervisor's reclaim pass costs beside a fleet of 10 and of 10,000 live
workers, and with 100 of 1,000 workers expired.

    python bench/growth_reclaim.py

Starts a private valkey-server and simulates the fleet with the workers' own heartbeat
(``pool.worker.heartbeat.beat``, one per simulated worker, as each would send it), then times one
supervisor's reclaim pass (``Housekeeper.reclaim_expired``) and counts the commands it cost the
server (INFO commandstats deltas: a script's own commands count, besides its EVALSHA). In the
expired row each expired worker holds one claimed job, and the pass must requeue them all.
Prints commands and ms per pass, small and large and their ratio; the last line is one JSON
object with every figure (bench/growth.py folds this row in).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pool.config import from_mapping  # noqa: E402
from pool.embedded import EmbeddedServer, free_port  # noqa: E402
from pool.keys import Keys  # noqa: E402
from pool.lua import Scripts  # noqa: E402
from pool.supervisor.housekeeping import Housekeeper  # noqa: E402
from pool.testing import wait_until  # noqa: E402
from pool.worker import heartbeat  # noqa: E402

QUEUE = "default"
FLEETS = (10, 10_000)
EXPIRED_FLEET, EXPIRED = 1_000, 100
PASSES = 7  # timed passes per live fleet (the median is shown)
LIVE_TTL_MS = 600_000
EXPIRED_TTL_MS = 300
BEATS_AT_ONCE = 50  # below the client's connection limit


def _commands(client: redis.Redis) -> int:
    """Every command the server has run (INFO commandstats), scripts' own commands included."""
    return sum(int(stat["calls"]) for stat in client.info("commandstats").values())


async def _beat_fleet(url: str, keys: Keys, worker_ids: list[str], ttl_ms: int) -> None:
    """One heartbeat of each simulated worker, through the pool's own beat (whatever it writes)."""
    client = redis.asyncio.Redis.from_url(url)
    scripts = Scripts(client, keys)
    wants_scripts = "scripts" in inspect.signature(heartbeat.beat).parameters  # the code before this row's change took keys

    async def one(worker_id: str) -> None:
        first = scripts if wants_scripts else keys
        await heartbeat.beat(client, first, worker_id, [QUEUE], "busy", ttl_ms, {"concurrency": 1})

    for start in range(0, len(worker_ids), BEATS_AT_ONCE):
        await asyncio.gather(*(one(w) for w in worker_ids[start:start + BEATS_AT_ONCE]))
    await client.aclose()


def _keeper(url: str, prefix: str) -> Housekeeper:
    config = from_mapping({"redis": {"url": url}, "key_prefix": prefix, "handlers": ["bench.peer_tasks"]},
                          ROOT / "pool.yaml", environ={})
    return Housekeeper(config, url, "bench:1:keeper")


def _one_pass(keeper: Housekeeper, admin: redis.Redis) -> tuple[int, float, int]:
    """(commands, ms, jobs requeued) of one reclaim pass."""
    before = _commands(admin)
    started = time.perf_counter()
    requeued = keeper.reclaim_expired()
    took_ms = (time.perf_counter() - started) * 1000
    return _commands(admin) - before - 1, took_ms, requeued  # - 1: the first INFO itself


def live_row(url: str, admin: redis.Redis, size: int) -> dict[str, Any]:
    admin.flushall()
    prefix = f"live{size}"
    asyncio.run(_beat_fleet(url, Keys(prefix), [f"h{i}:{i}:live" for i in range(size)], LIVE_TTL_MS))
    keeper = _keeper(url, prefix)
    keeper.reclaim_expired()  # loads the scripts
    passes = [_one_pass(keeper, admin) for _ in range(PASSES)]
    keeper.redis.close()
    return {"workers": size, "commands": passes[-1][0], "ms": round(statistics.median(p[1] for p in passes), 2)}


def expired_row(url: str, admin: redis.Redis) -> dict[str, Any]:
    admin.flushall()
    prefix, keys = "expired", Keys("expired")
    live = [f"h{i}:{i}:live" for i in range(EXPIRED_FLEET - EXPIRED)]
    dead = [f"d{i}:{i}:dead" for i in range(EXPIRED)]
    asyncio.run(_beat_fleet(url, keys, live, LIVE_TTL_MS))
    keeper = _keeper(url, prefix)
    keeper.reclaim_expired()  # loads the scripts
    scripts = Scripts(admin, keys)
    fields = ["handler", "bench.noop", "queue", QUEUE, "status", "queued", "attempts", 0]
    scripts.enqueue(QUEUE, [(f"job-{i}", 0, ["id", f"job-{i}", *fields]) for i in range(EXPIRED)], 1)
    asyncio.run(_beat_fleet(url, keys, dead, EXPIRED_TTL_MS))
    for worker_id in dead:
        scripts.claim(QUEUE, worker_id, 2, 1, 0)
    wait_until(lambda: not any(admin.exists(keys.alive(QUEUE, w)) for w in dead), timeout=10,
               message="the dead workers' heartbeats to expire")
    commands, took_ms, requeued = _one_pass(keeper, admin)
    assert requeued == EXPIRED, f"the pass requeued {requeued} of {EXPIRED} jobs"
    keeper.redis.close()
    return {"workers": EXPIRED_FLEET, "expired": EXPIRED, "commands": commands, "ms": round(took_ms, 2)}


def main() -> None:
    logging.getLogger("pool").setLevel(logging.ERROR)  # one 'requeued' line per dead worker otherwise
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp) / "redis", persist=False, port=free_port())
        url = server.start()
        admin = redis.Redis.from_url(url)
        try:
            small, large = (live_row(url, admin, size) for size in FLEETS)
            expired = expired_row(url, admin)
        finally:
            admin.close()
            server.stop()
    print(f"{'live workers':>14} {'commands/pass':>14} {'ms/pass':>9}")
    for row in (small, large):
        print(f"{row['workers']:>14,} {row['commands']:>14,} {row['ms']:>9.2f}")
    print(f"{'ratio':>14} {large['commands'] / max(small['commands'], 1):>14.1f} "
          f"{large['ms'] / max(small['ms'], 0.01):>9.1f}")
    print(f"{expired['workers']:,} workers, {expired['expired']} expired (one job each): "
          f"{expired['commands']:,} commands, {expired['ms']:.1f} ms for the pass")
    print(json.dumps({"reclaim": {"small": small, "large": large, "expired": expired,
                                  "ratio_commands": round(large["commands"] / max(small["commands"], 1), 2),
                                  "ratio_ms": round(large["ms"] / max(small["ms"], 0.01), 2)}}))


if __name__ == "__main__":
    main()
