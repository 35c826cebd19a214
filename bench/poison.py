"""How long ordinary jobs wait while poison jobs keep killing the workers of the pool.

    python bench/poison.py --rate 200 --seconds 15 --processes 2 --concurrency 4

Starts a private valkey-server and `pool run` (P processes x C slots, max_deliveries 5,
heartbeat_ttl --heartbeat-ttl), enqueues 7 poison jobs (2 x os._exit, 2 x segfault, a SIGKILL
of their own process, a KeyboardInterrupt raised in the handler's thread, an async handler that
blocks its event loop), then ordinary jobs (async, sleeping 1-20 ms) at --rate per second for
--seconds. Then it waits for every job and reports:

- wait of the ordinary jobs: start (started_ms of the attempt that completed) minus enqueue, in
  ms, p50 / p99 / max. A job claimed beside a poison job that then killed its worker starts
  again, so its wait includes that loss.
- poison: how many ended dead or failed, and the error of one of each kind;
- restarts: worker deaths the supervisor logged, and the longest respawn delay it chose.

The last line is one JSON object with every figure, for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PrivateServer, percentile
from pool import Client, JobSpec, Status


async def ordinary(sleep_ms: float) -> None:
    await asyncio.sleep(sleep_ms / 1000)


def exit_process() -> None:
    os._exit(3)


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def kill_self() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def keyboard_interrupt() -> None:
    raise KeyboardInterrupt


async def block_loop() -> None:
    time.sleep(120)


POISON = ["exit_process", "exit_process", "segfault", "segfault", "kill_self", "keyboard_interrupt", "block_loop"]


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    with PrivateServer(workdir, args.processes, args.concurrency) as bench:
        config = bench.write_config(handlers=["bench.poison"], max_deliveries=5,
                                    heartbeat_ttl=args.heartbeat_ttl, heartbeat_interval="500ms",
                                    logging={"level": "info"})
        pool = bench.start_pool(config)
        try:
            with Client.from_config(config) as client:
                poison = [client.enqueue(f"bench.poison.{name}") for name in POISON]
                normal = []
                started = time.monotonic()
                for second in range(args.seconds):
                    batch = [JobSpec("bench.poison.ordinary", (random.uniform(1, 20),)) for _ in range(args.rate)]
                    normal += client.enqueue_many(batch)
                    time.sleep(max(0.0, started + second + 1 - time.monotonic()))
                finished = [client.wait(job.id, timeout=600) for job in normal]
                ends = [client.wait(job.id, timeout=600) for job in poison]
        finally:
            bench.stop_pool(pool)
        log = (workdir / f"{config.stem}.log").read_text()
    waits = [j.started_ms - j.enqueued_ms for j in finished if j.status is Status.COMPLETED]
    delays = [float(d) for d in re.findall(r"restarting in ([0-9.]+)s", log)]
    errors = {}
    for name, job in zip(POISON, ends, strict=True):
        errors.setdefault(name, f"{job.status.value}: {job.error}")
    return {
        "ordinary_jobs": len(normal), "completed": len(waits),
        "wait_p50_ms": percentile(waits, 50), "wait_p99_ms": percentile(waits, 99), "wait_max_ms": max(waits),
        "poison_finished": sum(j.status in (Status.DEAD, Status.FAILED) for j in ends),
        "worker_deaths": len(delays), "longest_respawn_delay_s": max(delays, default=0.0),
        "poison_errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=200, help="ordinary jobs enqueued per second")
    parser.add_argument("--seconds", type=int, default=15, help="how long ordinary jobs are enqueued")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--heartbeat-ttl", default="3s", help="how soon a blocked event loop is killed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pool-poison-") as workdir:
        report = run(args, Path(workdir))
    print(f"{report['completed']}/{report['ordinary_jobs']} ordinary jobs; wait p50 {report['wait_p50_ms']:.0f} ms, "
          f"p99 {report['wait_p99_ms']:.0f} ms, max {report['wait_max_ms']:.0f} ms")
    print(f"{report['poison_finished']}/{len(POISON)} poison jobs finished (dead or failed); "
          f"{report['worker_deaths']} worker deaths, longest respawn delay {report['longest_respawn_delay_s']:.1f} s")
    for name, error in report["poison_errors"].items():  # type: ignore[union-attr]
        print(f"  {name}: {error}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
