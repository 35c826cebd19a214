"""Growth row 8 (promotion): 1,000 vs 100,000 delayed jobs falling due at one instant.

    python bench/growth_promote.py        (or: python bench/growth.py --rows promote)

Starts a private valkey-server and, for each size, a `pool run` of PROCESSES x CONCURRENCY slots
serving one queue. The jobs (no-op records and their delayed-set entries, written by a Lua loop
before the measured window) all fall due at one instant DUE_IN_S later; the scheduler is told so
on the queue's wake channel, as enqueue.lua tells it. From then on:

- every script call over 1 ms is in SLOWLOG (a threshold of 0 would log each command inside the
  scripts too, and slow the scripts themselves): the longest, the longest promote, claim and
  ack call (claims and acks are the pool running the jobs meanwhile), and how many took over 10 ms;
- a prober process PINGs every millisecond: longest and 99th-percentile wait;
- the delayed set is polled every 5 ms: how long after the due instant it was empty (the
  backlog promoted), and how long until every job had completed.

Figures per job (drain and completion µs per job) are what should stay flat; the longest call
and the PING waits should not grow with the backlog. The last line is one JSON object with the
row (bench/growth.py folds it in).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import PrivateServer  # noqa: E402
from pool.lua import SOURCES  # noqa: E402

SIZES = (1_000, 100_000)
PROCESSES, CONCURRENCY = 2, 50
QUEUE = "default"
DUE_IN_S = 2.0  # the jobs are written, then fall due this long after: the window starts quiet
SLOW_US = 1_000  # SLOWLOG threshold of the measured window
_CHUNK = 20_000  # jobs per building script call

# Delayed job records as enqueue.lua writes them (status 'delayed', due_ms), and their entries.
_BUILD = """
local qprefix, first, last, due_ms, queue = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
for i = first, last do
  local id = 'job-' .. i
  redis.call('HSET', qprefix .. 'job:' .. id, 'id', id, 'handler', 'bench.growth_promote.noop', 'queue', queue,
    'status', 'delayed', 'attempts', 0, 'enqueued_ms', due_ms, 'due_ms', due_ms, 'args', '[]', 'kwargs', '{}')
  redis.call('ZADD', KEYS[1], due_ms, id)
end
return last - first + 1
"""


def noop() -> None:
    """The workload: nothing, so that only promotion and the queue's own cost are measured."""


def _build(server: PrivateServer, config: Path, count: int, due_ms: int) -> None:
    keys = server.keys(config)
    build = server.redis.register_script(_BUILD)
    for first in range(0, count, _CHUNK):
        last = min(count, first + _CHUNK) - 1
        build(keys=[keys.delayed(QUEUE)], args=[keys.queue_prefix(QUEUE), first, last, due_ms, QUEUE])


def _await_drain(server: PrivateServer, config: Path, count: int, due_ms: int) -> tuple[float, float]:
    """Milliseconds from the due instant until the delayed set is empty, and until all completed."""
    keys = server.keys(config)
    drained_ms = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        now_ms = time.time() * 1000
        if drained_ms is None and now_ms >= due_ms and server.redis.zcard(keys.delayed(QUEUE)) == 0:
            drained_ms = now_ms - due_ms
        if int(server.redis.hget(keys.stats(QUEUE), "completed") or 0) >= count:
            assert drained_ms is not None
            return drained_ms, now_ms - due_ms
        time.sleep(0.005)
    raise TimeoutError(f"{count:,} due jobs did not complete in 600 s")


def _script_calls_us(server: PrivateServer) -> dict[str, list[int]]:
    """Durations (µs) of the script calls SLOWLOG holds, sorted, by script name ('all' for every one)."""
    names = {hashlib.sha1(source.encode()).hexdigest(): name for name, source in SOURCES.items()}
    calls: dict[str, list[int]] = {"all": [0], "promote": [0], "claim": [0], "ack": [0]}
    for entry in server.redis.slowlog_get(-1):
        words = bytes(entry["command"]).split()
        if words[0].upper() in (b"EVALSHA", b"EVAL") and len(words) > 1:
            for name in ("all", names.get(words[1].decode(), "other")):
                calls.setdefault(name, [0]).append(int(entry["duration"]))
    return {name: sorted(durations) for name, durations in calls.items()}


def one_size(server: PrivateServer, count: int) -> dict[str, float]:
    """``count`` jobs due at one instant, promoted and run by a pool, watched from outside."""
    from bench.growth import PingProber  # growth.py imports this module: import it when used

    config = server.write_config(processes=PROCESSES, concurrency=CONCURRENCY, queues=[QUEUE],
                                 handlers=["bench.growth_promote.noop"])
    pool = server.start_pool(config)
    try:
        due_ms = int(time.time() * 1000 + DUE_IN_S * 1000)
        _build(server, config, count, due_ms)
        server.redis.config_set("slowlog-log-slower-than", SLOW_US)
        server.redis.config_set("slowlog-max-len", 100_000)
        server.redis.slowlog_reset()
        with PingProber(server) as prober:
            server.redis.publish(server.keys(config).wake(QUEUE), due_ms)
            drained_ms, done_ms = _await_drain(server, config, count, due_ms)
        calls_us = _script_calls_us(server)
    finally:
        server.redis.config_set("slowlog-log-slower-than", 10_000)
        server.stop_pool(pool)
    return {"drain µs/job": drained_ms * 1000 / count, "done µs/job": done_ms * 1000 / count,
            "drain ms": drained_ms, "longest script ms": calls_us["all"][-1] / 1000,
            **{f"longest {name} ms": calls_us[name][-1] / 1000 for name in ("promote", "claim", "ack")},
            "scripts over 10 ms": sum(1 for us in calls_us["all"] if us > 10_000),
            "longest PING ms": prober.waits_ms["longest"], "p99 PING ms": prober.waits_ms["p99"]}


def measure(server: PrivateServer, options: argparse.Namespace | None = None) -> dict[str, Any]:
    """The row: each size on a fresh keyspace of ``server``; measures as growth.py prints them."""
    small, large = (one_size(server, count) for count in SIZES)
    server.redis.flushall()
    return {"row": "jobs due at one instant", "small": f"{SIZES[0]:,} due", "large": f"{SIZES[1]:,} due",
            "measures": {name: {"small": small[name], "large": large[name]} for name in small}}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as workdir, PrivateServer(Path(workdir), 1, 1) as private:
        row = measure(private)
    for name, figure in row["measures"].items():
        ratio = figure["large"] / figure["small"] if figure["small"] else float("nan")
        print(f"{name:<22} {figure['small']:>10.3f} {figure['large']:>10.3f} {ratio:>6.2f}")
    print(json.dumps(row))
