"""Growth row (idle): what an idle pool costs as the queues it serves grow.

    python bench/growth_idle.py [--queues 1000] [--window 10]

Starts a private valkey-server and `pool run` with 2 processes x 50 slots serving 1 queue
(small), then the same pool serving ``--queues`` queues (large), nothing enqueued. Once every
worker has registered and the pool has settled, it counts over ``--window`` seconds: the clients
connected to the server, the commands the server ran per second (INFO's
total_commands_processed, less this bench's own INFO calls), the server's CPU, and the CPU of
the pool's processes (from /proc). Prints small, large and large / small; the last line is one
JSON object (bench/growth.py folds this row in). Issue 17's target: connections per worker
process constant in the number of queues, idle commands/s at 1,000 queues <= 1.2x one queue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import PrivateServer  # noqa: E402

SETTLE_S = 3.0  # workers' first claim passes and watchers start after they register
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(root_pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants, from /proc."""
    total, pending = 0.0, [root_pid]
    while pending:
        pid = pending.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS_PER_S
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        pending += [int(child) for child in children]
    return total


def _server_sample(server: PrivateServer) -> tuple[int, float]:
    info = server.redis.info()
    return int(info["total_commands_processed"]), float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


PROCESSES, CONCURRENCY = 2, 50


def measure(server: PrivateServer, queues: int, window_s: float) -> dict[str, float]:
    """The idle figures of one pool (PROCESSES x CONCURRENCY) serving ``queues`` queues."""
    config = server.write_config(queues=[f"q{n}" for n in range(queues)], handlers=["bench.throughput"],
                                 processes=PROCESSES, concurrency=CONCURRENCY)
    pool = server.start_pool(config)
    try:
        time.sleep(SETTLE_S)  # a bench settles for a measured window: no state to wait for
        commands_0, server_cpu_0 = _server_sample(server)
        pool_cpu_0, began = _tree_cpu_s(pool.pid), time.monotonic()
        time.sleep(window_s)
        commands_1, server_cpu_1 = _server_sample(server)
        pool_cpu_1, elapsed = _tree_cpu_s(pool.pid), time.monotonic() - began
        clients = int(server.redis.info("clients")["connected_clients"]) - 1  # less this bench
    finally:
        server.stop_pool(pool)
    return {
        "connections": clients,
        "connections_per_process": clients / PROCESSES,
        "commands_per_s": (commands_1 - commands_0 - 1) / elapsed,  # the second INFO counts itself
        "server_cpu_pct": (server_cpu_1 - server_cpu_0) / elapsed * 100,
        "pool_cpu_pct": (pool_cpu_1 - pool_cpu_0) / elapsed * 100,
    }


def idle(server: PrivateServer, queues: int, window_s: float) -> dict[str, Any]:
    small, large = measure(server, 1, window_s), measure(server, queues, window_s)
    return {"row": "idle", "small": "1 queue", "large": f"{queues:,} queues",
            "measures": {name: {"small": small[name], "large": large[name]} for name in small}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=1_000)
    parser.add_argument("--window", type=float, default=10.0, help="seconds counted per size")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, PrivateServer(Path(workdir), PROCESSES, CONCURRENCY) as server:
        row = idle(server, options.queues, options.window)
    for name, figures in row["measures"].items():
        ratio = figures["large"] / figures["small"] if figures["small"] else float("inf")
        print(f"idle | {name} | {figures['small']:.2f} | {figures['large']:.2f} | {ratio:.2f}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
