"""Growth: what each operation costs when what it works on is small and when it is large, in one run.

    python bench/growth.py                        # every row
    python bench/growth.py --rows dead-bulk       # some rows (comma-separated names)

Starts a private valkey-server. Each row is one function: it builds its small and its large case,
measures both, and returns a dict (``row``, ``small`` and ``large`` labels, and ``measures``: for
each measure its small and large figure). The table prints one line per measure,
"row | small | large | ratio" (large / small: 1.0 is flat), and the last line is one JSON object
with every row. Rows:

- dead-bulk, `pool dead retry --all` and `pool dead purge --all` over 1,000 vs 100,000 dead jobs:
  time per job, the peak resident memory of the client process (measured in a child process of
  its own: VmHWM), the longest command the server ran meanwhile and the 99th percentile (SLOWLOG
  with slowlog-log-slower-than 0) and the longest and 99th-percentile PING of a
  prober (how long Redis was held).
- cancel, cancelling a queued job from the middle of a queue of 10,000 vs 1,000,000 (cancel.lua's
  time in SLOWLOG: mean, median, max), and claims of 10 through a clean stretch and through one
  where every other job was cancelled (bench/growth_cancel.py builds the queues).
- reclaim, one supervisor's reclaim pass beside 10 vs 10,000 live workers (commands and ms per
  pass), and a pass that finds 100 of 1,000 workers expired (bench/growth_reclaim.py).
- idle, a pool of 2 processes x 50 slots serving 1 vs 1,000 queues with nothing to do:
  connections, server commands/s, server and pool CPU (bench/growth_idle.py).
- ack, claim.lua and ack.lua beside 10 vs 1,000 jobs the worker runs (SLOWLOG: mean, median,
  max; bench/growth_ack.py).
- retrying, a page of `pool jobs --status retrying` among 10k vs 1M delayed (bench/growth_retrying.py).
- enqueue-resend, enqueue_many of 1,000 fresh vs resent ids (bench/growth_enqueue_resend.py).
- promote, 1,000 vs 100,000 jobs due at one instant on a 2 x 50 pool: script calls over 10 ms,
  the longest promote, claim and ack, PING waits, time to drain (bench/growth_promote.py).
- status, `pool status` (status.snapshot) beside 10 vs 10,000 workers and 1 vs 1,000 queues busy
  for an hour: ms per snapshot and commands sent (bench/growth_status.py).
- health, `pool health` and /healthz beside 10 vs 10,000 other workers and 1 vs 1,000 busy queues
  (bench/growth_health.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    growth_ack,
    growth_cancel,
    growth_enqueue_resend,
    growth_health,
    growth_idle,
    growth_promote,
    growth_reclaim,
    growth_retrying,
    growth_status,
)
from bench.harness import ROOT, PrivateServer, percentile
from pool.client import Client
from pool.testing import bury

Row = Callable[[PrivateServer, argparse.Namespace], dict[str, Any]]


class PingProber:
    """PINGs the server every millisecond from a process of its own until stopped: how long a
    PING waits is how long other clients' commands (or a batch of them) held Redis. Its own
    process, so that this one's garbage collection does not show up as a wait; the longest wait
    still catches this shared machine's scheduling hiccups, the 99th percentile less so."""

    def __init__(self, server: PrivateServer) -> None:
        self.url = server.url
        self.waits_ms: dict[str, float] = {}
        self._child: subprocess.Popen[str]

    def __enter__(self) -> PingProber:
        self._child = subprocess.Popen([sys.executable, __file__, "--ping-probe", self.url], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self._child.stdout is not None and self._child.stdout.readline() == "ready\n"
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self._child.communicate(timeout=60)  # closing its stdin stops it
        self.waits_ms = json.loads(out)


def ping_probe(url: str) -> None:
    """The prober's side: PING until stdin closes, then print the longest and p99 wait in ms."""
    client = redis.Redis.from_url(url)
    client.ping()
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    print("ready", flush=True)
    waits_ms: list[float] = []
    while not stop.wait(0.001):  # a PING every millisecond, not a busy loop
        began = time.perf_counter()
        client.ping()
        waits_ms.append((time.perf_counter() - began) * 1000)
    print(json.dumps({"longest": max(waits_ms), "p99": percentile(waits_ms, 99)}))


# -- dead-bulk ---------------------------------------------------------------------------------

def dead_client(action: str, config: str) -> None:
    """The child's side: one bulk dead action with the sync client, as `pool dead ACTION --all`
    runs it; prints its seconds, count and peak resident memory as JSON."""
    with Client.from_config(config) as client:
        op = client.retry_dead if action == "retry" else client.purge_dead
        began = time.perf_counter()
        count = op(all=True)
        seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "count": count, "peak_mib": peak_rss_kib() / 1024}))


def peak_rss_kib() -> int:
    """VmHWM, this process's own peak resident memory (ru_maxrss would carry over the parent's
    peak through fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def dead_action(server: PrivateServer, action: str, dead: int) -> dict[str, float]:
    """``dead`` dead jobs, then the action in a child process, watched by SLOWLOG and a prober."""
    config = server.write_config(dead_letter={"max": dead})
    prefix = server.keys(config).prefix
    bury(server.redis, prefix, "default", [f"dead-{i}" for i in range(dead)], int(time.time() * 1000),
         dead_max=dead)
    server.redis.config_set("slowlog-log-slower-than", 0)
    server.redis.config_set("slowlog-max-len", 4 * dead + 1000)
    server.redis.slowlog_reset()
    with PingProber(server) as prober:
        child = subprocess.run([sys.executable, __file__, "--dead-client", action, str(config)],
                               capture_output=True, text=True, check=True, cwd=ROOT)
    entries = server.redis.slowlog_get(-1)
    server.redis.config_set("slowlog-log-slower-than", 10_000)
    report = json.loads(child.stdout)
    assert report["count"] == dead, report
    commands = sorted((e for e in entries if not e["command"].upper().startswith(b"SLOWLOG")),
                      key=lambda e: e["duration"])
    longest = commands[-1]
    print(f"dead-bulk {action} {dead:,}: longest command {longest['duration'] / 1000:.3f} ms: "
          f"{longest['command'][:60]!r}", file=sys.stderr)
    return {"us_per_job": report["seconds"] / dead * 1e6, "peak_client_mib": report["peak_mib"],
            "longest_command_ms": longest["duration"] / 1000,
            "p99_command_ms": percentile([e["duration"] for e in commands], 99) / 1000,
            "longest_ping_ms": prober.waits_ms["longest"], "p99_ping_ms": prober.waits_ms["p99"]}


def dead_bulk(server: PrivateServer, options: argparse.Namespace) -> dict[str, Any]:
    small, large = options.dead_small, options.dead_large
    measures: dict[str, dict[str, float]] = {}
    for action in ("retry", "purge"):
        figures = {size: dead_action(server, action, count) for size, count in (("small", small), ("large", large))}
        for name in figures["small"]:
            measures[f"{action} {name}"] = {"small": figures["small"][name], "large": figures["large"][name]}
    return {"row": "dead retry/purge --all", "small": f"{small:,} dead", "large": f"{large:,} dead",
            "measures": measures}


def cancel_queued(server: PrivateServer, options: argparse.Namespace) -> dict[str, Any]:
    """cancel.lua at 10k vs 1M queued jobs, and claims through a stretch of cancelled ids."""
    server.redis.config_set("slowlog-log-slower-than", 0)
    server.redis.config_set("slowlog-max-len", 10_000)
    small, large = (growth_cancel.measure(depth, server.redis) for depth in growth_cancel.DEPTHS)
    server.redis.flushall()
    measures = {f"{name} {stat.removesuffix('_us')} µs": {"small": small[name][stat], "large": large[name][stat]}
                for name in ("cancel", "claim_clean", "claim_mixed") for stat in ("mean_us", "p50_us", "max_us")}
    return {"row": "cancel a queued job", "small": f"{small['depth']:,} queued",
            "large": f"{large['depth']:,} queued", "measures": measures}


def reclaim(server: PrivateServer, options: argparse.Namespace) -> dict[str, Any]:
    """A reclaim pass beside 10 vs 10k live workers; the pass over 100 expired of 1,000 besides."""
    logging.getLogger("pool").setLevel(logging.ERROR)  # a 'requeued' line per dead worker otherwise
    small, large = (growth_reclaim.live_row(server.url, server.redis, size) for size in growth_reclaim.FLEETS)
    expired = growth_reclaim.expired_row(server.url, server.redis)
    server.redis.flushall()
    measures = {name: {"small": small[name], "large": large[name]} for name in ("commands", "ms")}
    measures[f"ms for {expired['expired']} expired of {expired['workers']:,}"] = {
        "small": expired["ms"], "large": expired["ms"]}  # one figure: its ratio is 1 by construction
    return {"row": "reclaim pass", "small": f"{small['workers']:,} live", "large": f"{large['workers']:,} live",
            "measures": measures}


def health(server: PrivateServer, options: argparse.Namespace) -> dict[str, Any]:
    """`pool health` and /healthz beside a small and a large simulated fleet."""
    small, large = (growth_health.measure(size, server.redis, server.url) for size in growth_health.SIZES)
    server.redis.flushall()
    return {"row": "pool health", "small": f"{small['other_workers']:,} workers x {small['queues']:,} queues",
            "large": f"{large['other_workers']:,} workers x {large['queues']:,} queues",
            "measures": {name: {"small": small[name], "large": large[name]} for name in ("health_ms", "healthz_ms")}}


def idle(server: PrivateServer, options: argparse.Namespace) -> dict[str, Any]:
    """An idle pool serving 1 vs --idle-queues queues."""
    return growth_idle.idle(server, options.idle_queues, options.idle_window)


ROWS: dict[str, Row] = {
    "reclaim": reclaim, "cancel": cancel_queued, "ack": growth_ack.measure, "retrying": growth_retrying.measure,
    "enqueue-resend": growth_enqueue_resend.measure, "promote": growth_promote.measure, "dead-bulk": dead_bulk,
    "status": lambda server, _: growth_status.measure(server.redis, server.url), "health": health, "idle": idle,
}


# -- the table ---------------------------------------------------------------------------------

def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'row':<48} | {'small':>12} | {'large':>12} | {'ratio':>6}")
    for result in results:
        print(f"{result['row']} ({result['small']} vs {result['large']})")
        for name, figure in result["measures"].items():
            ratio = figure["large"] / figure["small"] if figure["small"] else float("nan")
            print(f"  {name:<46} | {figure['small']:>12.3f} | {figure['large']:>12.3f} | {ratio:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows: {', '.join(ROWS)}")
    parser.add_argument("--dead-small", type=int, default=1_000, help="dead jobs of dead-bulk's small case")
    parser.add_argument("--dead-large", type=int, default=100_000, help="dead jobs of dead-bulk's large case")
    parser.add_argument("--idle-queues", type=int, default=1_000, help="queues of idle's large case")
    parser.add_argument("--idle-window", type=float, default=10.0, help="seconds idle counts per case")
    parser.add_argument("--dead-client", nargs=2, metavar=("ACTION", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--ping-probe", metavar="URL", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.dead_client:
        dead_client(*options.dead_client)
        return
    if options.ping_probe:
        ping_probe(options.ping_probe)
        return
    names = [name.strip() for name in options.rows.split(",") if name.strip()]
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown row {unknown[0]!r} (rows: {', '.join(ROWS)})")
    with tempfile.TemporaryDirectory() as workdir, PrivateServer(Path(workdir), 1, 1) as server:
        results = [ROWS[name](server, options) for name in names]
    print_table(results)
    print(json.dumps({"growth": results}))


if __name__ == "__main__":
    main()
