"""How late delayed jobs start, and what serving several queues costs compared with one.

    python bench/scheduling.py --jobs 20000 --delayed 1000 --rounds 3

Starts a private valkey-server and, for each measurement, a `pool run` with P processes x C
slots (its first worker runs the scheduler):

- delayed lateness: --delayed no-op jobs enqueued with delays spread evenly over --spread seconds
  (a light, steady load); lateness = the job's start (started_ms, set when claimed) minus its
  due time. Reported as p50 / p99 / max in milliseconds.
- several queues: --jobs no-op jobs enqueued before the pool starts, then processed, with
  (a) one queue; (b) three queues in strict priority with every job on the last one (the worst
  case: two empty queues ahead of it); (c) three queues with the jobs spread evenly. Processing
  rate = jobs / (last finish - first start). The three set-ups alternate, --rounds times, in one
  run; figures are medians, and (b), (c) are also given as ratios to (a).

The last line is one JSON object with every figure, for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PrivateServer, percentile
from pool import Client, JobSpec


def noop() -> None:
    """The workload: nothing, so that only the queue's own cost is measured."""


SETUPS = {
    "one queue": (["q1"], ["q1"]),
    "3 queues, jobs on the last": (["q1", "q2", "q3"], ["q3"]),
    "3 queues, jobs spread": (["q1", "q2", "q3"], ["q1", "q2", "q3"]),
}


class Bench(PrivateServer):
    def config(self, queues: list[str]) -> Path:
        return self.write_config(queues=queues, handlers=["bench.scheduling.noop"])

    def wait_completed(self, config: Path, queues: list[str], count: int, timeout: float = 600) -> None:
        keys = self.keys(config)
        client = self.redis
        deadline = time.monotonic() + timeout
        while True:
            with client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    pipe.hget(keys.stats(queue), "completed")
                done = sum(int(n or 0) for n in pipe.execute())
            if done >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done} of {count} jobs completed after {timeout}s")
            time.sleep(0.01)

    def times(self, config: Path, jobs: list, fields: tuple[str, ...]) -> list[list[int]]:
        keys = self.keys(config)
        client = self.redis
        with client.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.hmget(keys.job(job.queue, job.id), *fields)
            return [[int(v) for v in row] for row in pipe.execute()]

    def throughput(self, setup: str, jobs: int) -> float:
        queues, targets = SETUPS[setup]
        config = self.config(queues)
        with Client.from_config(config) as client:
            specs = [JobSpec("bench.scheduling.noop", queue=targets[i % len(targets)]) for i in range(jobs)]
            enqueued = []
            for start in range(0, jobs, 5000):
                enqueued += client.enqueue_many(specs[start:start + 5000])
        pool = self.start_pool(config)
        try:
            self.wait_completed(config, queues, jobs)
        finally:
            self.stop_pool(pool)
        rows = self.times(config, enqueued, ("started_ms", "finished_ms"))
        seconds = (max(r[1] for r in rows) - min(r[0] for r in rows)) / 1000
        return jobs / max(seconds, 0.001)

    def lateness(self, count: int, spread_s: float) -> list[int]:
        config = self.config(["q1"])
        pool = self.start_pool(config)
        try:
            with Client.from_config(config) as client:
                begin = time.time() + 1.0
                jobs = []
                for i in range(count):  # enqueued as time goes by, each ~1 s ahead of its due time
                    due = begin + spread_s * i / count
                    while time.time() < due - 1.0:
                        time.sleep(0.001)
                    jobs.append(client.enqueue("bench.scheduling.noop", queue="q1", delay=due - time.time()))
                self.wait_completed(config, ["q1"], count)
        finally:
            self.stop_pool(pool)
        return [started - due for due, started in self.times(config, jobs, ("due_ms", "started_ms"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per throughput measurement")
    parser.add_argument("--delayed", type=int, default=1000, help="delayed jobs for the lateness measurement")
    parser.add_argument("--spread", type=float, default=5.0, help="seconds the delayed jobs' due times span")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pool-bench-") as workdir, \
            Bench(Path(workdir), options.processes, options.concurrency) as bench:
        late = bench.lateness(options.delayed, options.spread)
        rates: dict[str, list[float]] = {setup: [] for setup in SETUPS}
        for _ in range(options.rounds):
            for setup in SETUPS:
                rates[setup].append(bench.throughput(setup, options.jobs))
    medians = {setup: statistics.median(values) for setup, values in rates.items()}
    base = medians["one queue"]
    print(f"{options.processes} processes x {options.concurrency} slots, {os.cpu_count()} CPUs")
    print(f"delayed jobs ({options.delayed} over {options.spread:g}s): start late by p50 {percentile(late, 50):.0f} ms, "
          f"p99 {percentile(late, 99):.0f} ms, max {max(late)} ms")
    for setup, rate in medians.items():
        print(f"{setup:<28} {rate:>8.0f} jobs/s  ({rate / base:.2f}x one queue; runs: "
              f"{', '.join(f'{r:.0f}' for r in rates[setup])})")
    print(json.dumps({
        "processes": options.processes, "concurrency": options.concurrency, "jobs": options.jobs,
        "delayed": options.delayed, "late_p50_ms": percentile(late, 50), "late_p99_ms": percentile(late, 99),
        "late_max_ms": max(late), "jobs_per_s": medians,
        "ratio_to_one_queue": {setup: round(rate / base, 3) for setup, rate in medians.items()},
    }))


if __name__ == "__main__":
    main()
