"""Growth row 4: what a claim and an ack cost a worker running 10 vs 1,000 jobs.

    python bench/growth.py --rows ack     (or: python bench/growth_ack.py)

On a private valkey-server, one worker claims 10 (small) or 1,000 (large) jobs and keeps them
running; then, ROUNDS times, it claims BATCH more (one claim.lua call) and acks the BATCH oldest
it runs (one ack.lua call, as the worker batches its acks), so the number running stays put.
Acking the oldest is the worst case for a scan of the worker's jobs (an LREM from the head of a
list walks all of them) and the steady state of jobs that take about as long as each other.
Figures are per job (a call's time / BATCH), and the longest call. Each call's time comes from SLOWLOG
(slowlog-log-slower-than 0): how long Redis was blocked, not the round trip. Only the scripts'
public wrappers are used, so the same file measures an earlier version side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import PrivateServer  # noqa: E402
from pool.keys import Keys  # noqa: E402
from pool.lua import Ack, AckCode, Scripts  # noqa: E402

SIZES = (10, 1_000)  # jobs the worker runs while it claims and acks
ROUNDS = 200  # claim + ack calls measured at each size
BATCH = 10  # jobs per claim and per ack call (all of them at the small size)
QUEUE, WORKER, NOW_MS = "q", "bench:1:growth", 1_000
_BATCH = 1_000  # jobs per enqueue.lua call while filling


def _fill(scripts: Scripts, count: int) -> None:
    """job-0 (the next to start) .. job-<count-1>, queued."""
    for first in range(0, count, _BATCH):
        jobs = [(f"job-{i}", 0, ["id", f"job-{i}", "handler", "bench.noop", "queue", QUEUE, "status", "queued",
                                  "attempts", 0, "args", "[]", "kwargs", "{}"])
                for i in range(first, min(count, first + _BATCH))]
        scripts.enqueue(QUEUE, jobs, NOW_MS)


def _times_us(entries: list[dict[str, Any]], sha: str) -> list[int]:
    prefix = f"evalsha {sha}".encode()
    return [int(e["duration"]) for e in entries if bytes(e["command"]).lower().startswith(prefix)]


def _summary(times_us: list[int]) -> dict[str, float]:
    ordered = sorted(times_us) or [0]
    return {"mean_us": round(sum(ordered) / len(ordered) / BATCH, 2), "p50_us": ordered[len(ordered) // 2] / BATCH,
            "call_max_us": ordered[-1], "calls": len(times_us)}


def case(client: redis.Redis, running: int) -> dict[str, Any]:
    """The figures of one size, on a freshly flushed server."""
    client.flushall()
    scripts = Scripts(client, Keys("growth"))
    _fill(scripts, running + ROUNDS * BATCH)
    assert len(scripts.claim(QUEUE, WORKER, NOW_MS, running, 0)[1]) == running
    scripts.ack_many(QUEUE, WORKER, [])  # loads ack.lua: SCRIPT LOAD stays out of the figures
    client.slowlog_reset()
    entries: list[dict[str, Any]] = []
    for i in range(ROUNDS):
        assert len(scripts.claim(QUEUE, WORKER, NOW_MS, BATCH, running)[1]) == BATCH
        oldest = range(i * BATCH, (i + 1) * BATCH)
        acks = [Ack(f"job-{j}", "completed", NOW_MS, 60_000, ["result", b"null"]) for j in oldest]
        assert scripts.ack_many(QUEUE, WORKER, acks) == [AckCode.ACKED] * BATCH
        if i % 100 == 99:  # the slow log keeps the newest entries only: read it as it fills
            entries += client.slowlog_get(-1)
            client.slowlog_reset()
    claim = _summary(_times_us(entries, scripts._registered["claim"].sha))
    ack = _summary(_times_us(entries, scripts._registered["ack"].sha))
    assert claim["calls"] == ack["calls"] == ROUNDS, (claim, ack)
    return {"running": running, "claim": claim, "ack": ack}


def _on_slowlog(client: redis.Redis) -> Any:
    """Restores the slow log's settings when done."""
    saved = client.config_get("slowlog-*")
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 10_000)
    return saved


def measure(server: PrivateServer, options: argparse.Namespace | None = None) -> dict[str, Any]:
    """Row 4 of the growth table (bench/growth.py): claim.lua and ack.lua at 10 vs 1,000 running."""
    saved = _on_slowlog(server.redis)
    try:
        small, large = (case(server.redis, running) for running in SIZES)
    finally:
        server.redis.config_set("slowlog-log-slower-than", saved["slowlog-log-slower-than"])
        server.redis.config_set("slowlog-max-len", saved["slowlog-max-len"])
        server.redis.flushall()
    names = {"mean_us": "µs/job mean", "p50_us": "µs/job p50", "call_max_us": "call max µs"}
    measures = {f"{script} {name}": {"small": small[script][stat], "large": large[script][stat]}
                for script in ("claim", "ack") for stat, name in names.items()}
    return {"row": "claim + ack per job", "small": f"{SIZES[0]:,} running", "large": f"{SIZES[1]:,} running",
            "measures": measures}


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir, PrivateServer(Path(workdir), 1, 1) as server:
        row = measure(server)
    for name, figure in row["measures"].items():
        ratio = figure["large"] / figure["small"] if figure["small"] else float("nan")
        print(f"{name:<20} {figure['small']:>10.2f} {figure['large']:>10.2f}  x{ratio:.2f}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
