"""How fast `pool` moves jobs, and what each job costs Python and Redis.

    python bench/throughput.py --jobs 20000 --processes 2 --concurrency 50 --rounds 3

Starts a private valkey-server, then for each workload and round a fresh `pool run` with
P processes x C slots, and measures:

- enqueue: N jobs with `Client.enqueue_many` in batches of --batch, from one client process,
  before the pool starts (jobs/s), and the Redis CPU that cost per job; and the same from
  `AsyncClient` with two enqueue_many calls in flight (one prepares while Redis runs the other);
- processing: N jobs already queued, from the first start to the last finish (jobs/s), with the
  Redis CPU (INFO used_cpu_sys + used_cpu_user) and the pool's Python CPU (supervisor and
  workers, from /proc) per job, and the peak resident memory (VmHWM) of each worker;
- latency: single no-op jobs enqueued one at a time on the idle pool: from just before
  `enqueue` to the handler's first line (both clocks are this host's), p50 / p99, beside a bare
  LPUSH -> BLMOVE round trip measured the same way on the same server.

Workloads: noop (returns None), logged (noop with the one log line per job on, as at the
default level info; the others run at warning), sleep (asyncio.sleep 10 ms), payload (a 10 KB
argument). With --memory-jobs, one more pool runs that many no-op jobs fed continuously and
reports each worker's resident memory at every tenth.
Figures are medians over --rounds; the last line is one JSON object with all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PrivateServer, add_shape_arguments, percentile, wait
from pool import AsyncClient, Client, JobSpec
from pool.config import load

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAYLOAD = "x" * 10_240


async def noop(*args: object) -> None:
    """The no-op workload (its argument, if any, is the 10 KB payload): a coroutine, as an
    asyncio handler is (a plain function would add a hand-over to the thread pool)."""


async def sleep_10ms() -> None:
    await asyncio.sleep(0.01)


async def stamp() -> int:
    """The latency probe: when the handler started, in this host's nanoseconds."""
    return time.time_ns()


WORKLOADS = {
    "noop": lambda: JobSpec("bench.throughput.noop"),
    "logged": lambda: JobSpec("bench.throughput.noop"),  # noop, with the per-job log line at info
    "sleep": lambda: JobSpec("bench.throughput.sleep_10ms"),
    "payload": lambda: JobSpec("bench.throughput.noop", (PAYLOAD,)),
}


class Bench(PrivateServer):
    def config(self, workload: str = "noop") -> Path:
        level = "info" if workload == "logged" else "warning"  # info: one line per job to the log file
        return self.write_config(handlers=["bench.throughput"], logging={"level": level})

    def redis_cpu_s(self) -> float:
        info = self.redis.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def completed(self, config: Path) -> int:
        keys = self.keys(config)
        return int(self.redis.hget(keys.stats("default"), "completed") or 0)

    def throughput(self, workload: str, jobs: int, batch: int) -> dict[str, float]:
        config = self.config(workload)
        specs = [WORKLOADS[workload]() for _ in range(jobs)]
        with Client.from_config(config) as client:
            client.enqueue_many(specs[:10])  # connect and load the scripts first
            cpu0, began = self.redis_cpu_s(), time.perf_counter()
            enqueued = []
            for start in range(10, jobs, batch):
                enqueued += client.enqueue_many(specs[start:start + batch])
            enqueue_s, enqueue_cpu = time.perf_counter() - began, self.redis_cpu_s() - cpu0
        pool = self.start_pool(config)
        try:
            python0, cpu0 = process_tree_cpu_s(pool.pid), self.redis_cpu_s()
            wait(lambda: self.completed(config) >= jobs, "every job", timeout=900)
            python_cpu, redis_cpu = process_tree_cpu_s(pool.pid) - python0, self.redis_cpu_s() - cpu0
            peak = max(peak_rss(pid) for pid in children(pool.pid))
        finally:
            self.stop_pool(pool)
        keys = self.keys(config)
        with self.redis.pipeline(transaction=False) as pipe:
            for job in enqueued:
                pipe.hmget(keys.job(job.queue, job.id), "started_ms", "finished_ms")
            rows = [(int(a), int(b)) for a, b in pipe.execute()]
        seconds = (max(r[1] for r in rows) - min(r[0] for r in rows)) / 1000
        return {
            "enqueue_per_s": len(enqueued) / enqueue_s, "enqueue_redis_us": enqueue_cpu / len(enqueued) * 1e6,
            "jobs_per_s": len(enqueued) / max(seconds, 0.001), "redis_us_per_job": redis_cpu / jobs * 1e6,
            "python_us_per_job": python_cpu / jobs * 1e6, "peak_worker_mib": peak / 2**20,
        }

    def enqueue_async(self, jobs: int, batch: int, in_flight: int = 2) -> float:
        """Jobs/s of a bulk enqueue from AsyncClient with ``in_flight`` enqueue_many calls at once:
        one call's jobs are prepared while Redis runs the other's script."""
        config = self.config()
        specs = [WORKLOADS["noop"]() for _ in range(jobs)]

        async def run() -> float:
            async with AsyncClient(load(config)) as client:
                await client.enqueue_many(specs[:10])
                slots = asyncio.Semaphore(in_flight)

                async def one(start: int) -> None:
                    async with slots:
                        await client.enqueue_many(specs[start:start + batch])

                began = time.perf_counter()
                await asyncio.gather(*(one(start) for start in range(10, jobs, batch)))
                return (jobs - 10) / (time.perf_counter() - began)

        return asyncio.run(run())

    def memory(self, jobs: int, batch: int, samples: int = 10) -> dict[str, list[float]]:
        """Resident memory of each worker while ``jobs`` no-op jobs pass through the pool.

        A producer keeps at most 20 batches queued ahead of the workers (so Redis holds a
        bounded backlog, and results live 60 s), and the workers' VmRSS is read every
        jobs/samples completions: a leak per job shows as a rising line.
        """
        config = self.write_config(handlers=["bench.throughput"], result_ttl="60s")
        pool = self.start_pool(config)
        rss: dict[int, list[float]] = {}
        try:
            with Client.from_config(config) as client:
                sent, step = 0, jobs // samples
                for mark in range(step, jobs + 1, step):
                    while sent < mark:
                        if sent - self.completed(config) < 20 * batch:
                            count = min(batch, jobs - sent)
                            client.enqueue_many([WORKLOADS["noop"]() for _ in range(count)])
                            sent += count
                        else:
                            time.sleep(0.005)
                    wait(lambda m=mark: self.completed(config) >= m, f"{mark} jobs", timeout=900)
                    for pid in children(pool.pid):
                        rss.setdefault(pid, []).append(current_rss(pid) / 2**20)
        finally:
            self.stop_pool(pool)
        return {str(pid): values for pid, values in rss.items() if len(values) == samples}

    def latency(self, count: int) -> list[float]:
        """Milliseconds from just before enqueue to the handler's start, one job at a time."""
        config = self.config()
        pool = self.start_pool(config)
        try:
            with Client.from_config(config) as client:
                client.result(client.enqueue("bench.throughput.stamp").id, timeout=30)  # warm up
                samples = []
                for _ in range(count):
                    sent = time.time_ns()
                    started = client.result(client.enqueue("bench.throughput.stamp").id, timeout=30)
                    samples.append((started - sent) / 1e6)
                    time.sleep(0.005)  # an idle pool: every worker is back in BLMOVE
        finally:
            self.stop_pool(pool)
        return samples

    def bare_latency(self, count: int) -> list[float]:
        """The floor: LPUSH a timestamp, BLMOVE it on another connection, in milliseconds."""
        source, target = f"bare:{self.runs}:in", f"bare:{self.runs}:out"
        received: list[float] = []
        ready = threading.Event()

        def consume() -> None:
            client = redis.Redis.from_url(self.url)
            ready.set()
            for _ in range(count):
                item = client.blmove(source, target, 5, "RIGHT", "LEFT")
                received.append((time.time_ns() - int(item)) / 1e6)
            client.close()

        consumer = threading.Thread(target=consume)
        consumer.start()
        ready.wait()
        for _ in range(count):
            time.sleep(0.005)
            self.redis.lpush(source, time.time_ns())
        consumer.join()
        return received


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU of a process and its children (the supervisor and its workers)."""
    total = 0.0
    for each in [pid, *children(pid)]:
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def peak_rss(pid: int) -> int:
    return _status_kib(pid, "VmHWM:") * 1024


def current_rss(pid: int) -> int:
    return _status_kib(pid, "VmRSS:") * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shape_arguments(parser)
    parser.add_argument("--batch", type=int, default=1000, help="jobs per enqueue_many call")
    parser.add_argument("--latency", type=int, default=300, help="single jobs for the latency figures")
    parser.add_argument("--workloads", default="noop,logged,sleep,payload")
    parser.add_argument("--memory-jobs", type=int, default=0,
                        help="also pass this many jobs through one pool and sample worker memory (e.g. 1000000)")
    options = parser.parse_args()
    workloads = options.workloads.split(",")
    results: dict[str, list[dict[str, float]]] = {w: [] for w in workloads}
    with tempfile.TemporaryDirectory(prefix="pool-bench-") as workdir, \
            Bench(Path(workdir), options.processes, options.concurrency) as bench:
        enqueue_async = []
        for _ in range(options.rounds):
            for workload in workloads:
                results[workload].append(bench.throughput(workload, options.jobs, options.batch))
            enqueue_async.append(bench.enqueue_async(options.jobs, options.batch))
        bare = bench.bare_latency(options.latency)
        latency = bench.latency(options.latency)
        memory = bench.memory(options.memory_jobs, options.batch) if options.memory_jobs else {}
    medians = {w: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for w, runs in results.items()}
    print(f"{options.processes} processes x {options.concurrency} slots, {options.jobs} jobs, "
          f"{options.rounds} rounds, {os.cpu_count()} CPUs")
    for workload, m in medians.items():
        print(f"{workload:<8} {m['jobs_per_s']:>8.0f} jobs/s   Redis {m['redis_us_per_job']:5.1f} µs/job   "
              f"Python {m['python_us_per_job']:6.1f} µs/job   peak worker {m['peak_worker_mib']:.0f} MiB   "
              f"enqueue {m['enqueue_per_s']:>7.0f} jobs/s ({m['enqueue_redis_us']:.1f} µs Redis)")
    print(f"enqueue  AsyncClient, 2 enqueue_many calls of {options.batch} in flight: "
          f"{statistics.median(enqueue_async):.0f} jobs/s")
    print(f"latency  enqueue -> start p50 {percentile(latency, 50):.2f} ms, p99 {percentile(latency, 99):.2f} ms; "
          f"bare LPUSH -> BLMOVE p50 {percentile(bare, 50):.2f} ms, p99 {percentile(bare, 99):.2f} ms "
          f"({percentile(latency, 50) / percentile(bare, 50):.1f}x at p50)")
    for pid, values in memory.items():
        print(f"memory   worker {pid} over {options.memory_jobs} jobs, MiB at each tenth: "
              + " ".join(f"{v:.1f}" for v in values) + f" (growth from the first tenth: {values[-1] - values[0]:+.1f})")
    print(json.dumps({
        "processes": options.processes, "concurrency": options.concurrency, "jobs": options.jobs,
        "rounds": options.rounds, "workloads": medians,
        "enqueue_async_per_s": statistics.median(enqueue_async),
        "latency_ms": {"p50": percentile(latency, 50), "p99": percentile(latency, 99)},
        "bare_latency_ms": {"p50": percentile(bare, 50), "p99": percentile(bare, 99)},
        "memory_mib": {"jobs": options.memory_jobs, "workers": memory},
    }))


if __name__ == "__main__":
    main()
