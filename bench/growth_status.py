"""Growth row 2 (status): what `pool status` costs beside a large, busy fleet.

    python bench/growth_status.py

Starts a private valkey-server and writes the simulated fleets of bench/growth_health.py into it
(tests/fleet.py): 10 workers on 10 hosts and 1 queue with an hour of per-second tallies (small),
then 10,000 workers on 1,000 hosts and 1,000 such queues (large). Times ``status.snapshot``
(median of 5) and counts the commands the server ran for one snapshot (INFO's
total_commands_processed, less the INFO calls themselves; nothing else talks to this server).
Prints small, large and large / small; the last line is one JSON object, the row in
bench/growth.py's format. Target: a snapshot <= 200 ms at the large size.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.growth_health import HOST, SIZES, _config, _median_ms  # noqa: E402
from pool import status  # noqa: E402
from pool.embedded import EmbeddedServer, free_port  # noqa: E402
from pool.keys import Keys  # noqa: E402
from tests.fleet import write_fleet, write_supervisor  # noqa: E402

ROUNDS = 5


def _commands(client: redis.Redis, url: str, config: Any) -> int:
    """Commands the server ran for one snapshot (its INFO of eviction warnings included)."""
    before = int(client.info("stats")["total_commands_processed"])
    status.snapshot(client, config, url)
    after = int(client.info("stats")["total_commands_processed"])
    return after - before - 1  # less the first INFO (the second is counted after it ran)


def _case(size: dict[str, int], client: redis.Redis, url: str) -> dict[str, Any]:
    """One fleet size on a freshly flushed server: snapshot ms and commands."""
    client.flushall()
    config = _config(url, size["queues"])
    keys = Keys(config.key_prefix)
    write_supervisor(client, keys, f"{HOST}:1:ours", [f"{HOST}:2:w1", f"{HOST}:3:w2"])
    write_fleet(client, keys, size["hosts"], size["workers_per_host"], list(config.queues))
    data = status.snapshot(client, config, url)
    hours = {q["last_hour"]["completed"] for q in data["queues"].values()}
    # every second of the hour busy (60 each), and of the current minute, written whole, its future too
    assert len(hours) == 1 and 3600 * 60 <= min(hours) <= 3600 * 60 + 59 * 60, (hours, data["time_ms"])
    return {"workers": len(data["workers"]), "queues": size["queues"],
            "snapshot_ms": _median_ms(lambda: status.snapshot(client, config, url), ROUNDS),
            "commands": _commands(client, url, config)}


def measure(client: redis.Redis, url: str) -> dict[str, Any]:
    """The status row of the growth table, in bench/growth.py's format (flushes the server)."""
    small, large = (_case(size, client, url) for size in SIZES)
    client.flushall()
    return {"row": "pool status", "small": f"{small['workers']:,} workers x {small['queues']:,} queues",
            "large": f"{large['workers']:,} workers x {large['queues']:,} queues",
            "measures": {name: {"small": small[name], "large": large[name]} for name in ("snapshot_ms", "commands")}}


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        server = EmbeddedServer(Path(workdir) / "redis", persist=False, port=free_port())
        url = server.start()
        client = redis.Redis.from_url(url)
        try:
            row = measure(client, url)
        finally:
            client.close()
            server.stop()
    for name, figure in row["measures"].items():
        ratio = figure["large"] / figure["small"] if figure["small"] else float("nan")
        print(f"{name:<12} {row['small']}: {figure['small']:>10,.2f}   {row['large']}: {figure['large']:>10,.2f}"
              f"   ratio {ratio:.2f}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
