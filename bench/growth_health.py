"""Growth row 2 (health): what `pool health` costs beside a large, busy fleet.

    python bench/growth_health.py

Starts a private valkey-server and writes a simulated fleet straight into it (tests/fleet.py):
this host's supervisor with 2 workers, beside 10 workers of other hosts and 1 queue with an hour
of per-second tallies (small), then 10,000 workers on 1,000 other hosts and 1,000 such queues
(large). Times ``health.check`` for this host (median of 20) and, for comparison,
``status.snapshot`` (once: it reads the whole fleet and every tally). Prints small, large
and large / small; the last line is one JSON object with every figure (bench/growth.py folds
this row in). Target: health ≤ 100 ms at the large size.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pool import health, status  # noqa: E402
from pool.config import Config, from_mapping  # noqa: E402
from pool.embedded import EmbeddedServer, free_port  # noqa: E402
from pool.keys import Keys  # noqa: E402
from tests.fleet import write_fleet, write_supervisor  # noqa: E402

HOST = "bench-host"
SIZES = ({"hosts": 10, "workers_per_host": 1, "queues": 1},
         {"hosts": 1_000, "workers_per_host": 10, "queues": 1_000})
# status once: at the large size it sends an LLEN per worker and queue (10M commands, ~3 min)
HEALTH_ROUNDS, STATUS_ROUNDS = 20, 1


def _median_ms(call: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def _config(url: str, queues: int) -> Config:
    # a long heartbeat TTL: the fleet's hashes are written once and must stay fresh for the run
    return from_mapping({"redis": {"url": url}, "key_prefix": "growth", "queues": [f"q{n}" for n in range(queues)],
                         "heartbeat_interval": "1s", "heartbeat_ttl": "1h"}, ROOT / "pool.yaml", environ={})


def measure(size: dict[str, int], client: redis.Redis, url: str) -> dict[str, Any]:
    """Every figure of one fleet size, on a freshly flushed server."""
    client.flushall()
    config = _config(url, size["queues"])
    keys = Keys(config.key_prefix)
    write_supervisor(client, keys, f"{HOST}:1:ours", [f"{HOST}:2:w1", f"{HOST}:3:w2"])
    write_fleet(client, keys, size["hosts"], size["workers_per_host"], list(config.queues))
    verdict = health.check(client, config, url, HOST)
    return {**size, "other_workers": size["hosts"] * size["workers_per_host"], "healthy": verdict.healthy,
            "health_ms": _median_ms(lambda: health.check(client, config, url, HOST), HEALTH_ROUNDS),
            "healthz_ms": _median_ms(lambda: health.check(client, config, url, HOST, f"{HOST}:1:ours"),
                                     HEALTH_ROUNDS),
            "status_ms": _median_ms(lambda: status.snapshot(client, config, url), STATUS_ROUNDS)}


def growth_health() -> dict[str, Any]:
    """Row 2 (health) of the growth table; ``ratio`` is large / small of the health median."""
    with tempfile.TemporaryDirectory() as workdir:
        server = EmbeddedServer(Path(workdir) / "redis", persist=False, port=free_port())
        url = server.start()
        client = redis.Redis.from_url(url)
        try:
            small, large = (measure(size, client, url) for size in SIZES)
        finally:
            client.close()
            server.stop()
    return {"row": "pool health", "small": small, "large": large,
            "ratio": round(large["health_ms"] / max(small["health_ms"], 0.01), 2),
            "status_ratio": round(large["status_ms"] / max(small["status_ms"], 0.01), 2)}


def _print(result: dict[str, Any]) -> None:
    for case in (result["small"], result["large"]):
        print(f"{case['other_workers']:>6,} other workers, {case['queues']:>5,} busy queues:  "
              f"health {case['health_ms']:>8.2f} ms  /healthz {case['healthz_ms']:>8.2f} ms  "
              f"status {case['status_ms']:>9.2f} ms  (healthy: {case['healthy']})")
    print(f"large / small: health {result['ratio']}, status {result['status_ratio']}")
    print(json.dumps(result))


if __name__ == "__main__":
    _print(growth_health())
