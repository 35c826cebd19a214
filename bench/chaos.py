"""Chaos drill: run N jobs through `pool run` while killing workers and restarting Redis.

    python bench/chaos.py --jobs 10000 --processes 4 --concurrency 8 --kill-every 0.3

Starts a private valkey-server (AOF, appendfsync always), a pool on it, enqueues N jobs that
each sleep 0-20 ms and journal their start and end to a file (an account kept outside Redis),
SIGKILLs a random worker process every --kill-every seconds and restarts Redis (SIGKILL, then
start on the same port and data) once at about half way. With --refusal-window S it also makes
Redis refuse commands for S seconds twice, after the restart: BUSY (another client's script that
loops until SCRIPT KILL), then OOM (maxmemory reached, noeviction); worker kills pause meanwhile, so that any worker that exits during a window is the pool's own
failure. Then it waits for every job and reports:

- lost: jobs that never completed (must be 0), leftovers in queues or landing lists or running sets (must be 0);
- duplicates: runs beyond the first (at-least-once: only jobs in flight at a kill may repeat;
  a process holds at most 2 x concurrency: its running jobs and the outcomes being written);
- recovery after each worker kill: time until every job it held had started again elsewhere
  (each one, and p50/max; kills that hit an idle worker have nothing to recover);
- recovery after the Redis restart: time until the first job was claimed (started) after it
  came back;
- for each refusal window: time from its end until a job started, and how many worker processes
  exited during it (must be 0: a refusal is waited out, never a crash).

The last line is one JSON object with every figure, for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pool import Client, JobSpec, Status  # noqa: E402
from pool.embedded import EmbeddedServer, free_port  # noqa: E402
from pool.keys import Keys  # noqa: E402
from pool.testing import process_alive  # noqa: E402


async def job(journal: str, key: str, sleep_ms: float) -> str:
    """The chaos workload: journal the start, sleep, journal the end (idempotent by key)."""
    with open(journal, "a") as fh:
        fh.write(f"start {key} {os.getpid()} {time.time():.6f}\n")
    await asyncio.sleep(sleep_ms / 1000)
    with open(journal, "a") as fh:
        fh.write(f"end {key} {os.getpid()} {time.time():.6f}\n")
    return key


@dataclass
class Report:
    jobs: int
    processes: int
    concurrency: int
    kills: int = 0
    redis_restarts: int = 0
    completed: int = 0
    lost: int = 0
    leftovers: int = 0
    duplicates: int = 0
    duplicate_bound: int = 0
    dead: int = 0
    seconds: float = 0.0
    kill_recovery_p50_s: float | None = None
    kill_recovery_max_s: float | None = None
    kill_recovery_s: list[float] = field(default_factory=list)
    redis_recovery_s: list[float] = field(default_factory=list)
    refusal_windows: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class _Fault:
    kind: str
    at: float
    pid: int = 0
    back_at: float = 0.0
    exited_workers: int = 0


class Chaos:
    def __init__(self, jobs: int, processes: int, concurrency: int, kill_every: float,
                 redis_restarts: int, workdir: Path, refusal_window_s: float = 0.0) -> None:
        self.jobs, self.processes, self.concurrency = jobs, processes, concurrency
        self.kill_every, self.redis_restarts = kill_every, redis_restarts
        self.refusal_window_s = refusal_window_s
        # (fault, share of the jobs finished when it starts), in order: after the Redis restart,
        # BUSY (nothing runs meanwhile), then OOM at once (claims and acks go on meanwhile, so the
        # jobs left may all finish in it)
        self.refusals_due = [("busy", 0.6), ("oom", 0.6)] if refusal_window_s > 0 else []
        self.workdir = workdir
        self.journal = workdir / "journal"
        self.faults: list[_Fault] = []
        self.server = EmbeddedServer(workdir / "redis", persist=True, port=free_port())
        self.stop_chaos = threading.Event()

    def run(self) -> Report:
        url = self.server.start()
        redis.Redis.from_url(url).config_set("appendfsync", "always")
        config = self._write_config(url)
        log = open(self.workdir / "pool.log", "w")  # noqa: SIM115 - closed below
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        pool = subprocess.Popen([sys.executable, "-m", "pool", "run", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        started = time.monotonic()
        try:
            with Client.from_config(config) as client:
                self._wait_for_workers(url, config)
                ids = self._enqueue(client)
                chaos = threading.Thread(target=self._chaos_loop, args=(url, config), daemon=True)
                chaos.start()
                records = [client.wait(job_id, timeout=600) for job_id in ids]
                self.stop_chaos.set()
                chaos.join()
            seconds = time.monotonic() - started
            return self._report(records, url, config, seconds)
        finally:
            self.stop_chaos.set()
            pool.send_signal(signal.SIGTERM)
            try:
                pool.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(pool.pid, signal.SIGKILL)
            log.close()
            self.server.stop()

    def _write_config(self, url: str) -> Path:
        path = self.workdir / "pool.yaml"
        path.write_text(yaml.safe_dump({
            "redis": {"url": url, "socket_timeout": "2s"},
            "key_prefix": "chaos", "processes": self.processes, "concurrency": self.concurrency,
            "handlers": ["bench.chaos.job"], "heartbeat_interval": "200ms", "heartbeat_ttl": "2s",
            "reclaim_interval": "200ms", "max_deliveries": 1000, "shutdown_timeout": "5s",
            "logging": {"level": "warning"},
        }))
        return path

    def _live_worker_pids(self, url: str) -> list[int]:
        keys = Keys("chaos")
        client = redis.Redis.from_url(url, socket_timeout=1)
        try:
            members = client.smembers(keys.workers())
            with client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hget(keys.worker(member.decode()), "pid")
                return [int(pid) for pid in pipe.execute() if pid]
        except (redis.RedisError, OSError):
            return []
        finally:
            client.close()

    def _wait_for_workers(self, url: str, config: Path) -> None:
        deadline = time.monotonic() + 60
        while len(self._live_worker_pids(url)) < self.processes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start; see {self.workdir / 'pool.log'}")
            time.sleep(0.05)  # polling the registry: no event to wait on

    def _enqueue(self, client: Client) -> list[str]:
        ids: list[str] = []
        for start in range(0, self.jobs, 1000):
            batch = [JobSpec("bench.chaos.job", (str(self.journal), f"k{i}", random.uniform(0, 20)))
                     for i in range(start, min(start + 1000, self.jobs))]
            ids += [j.id for j in client.enqueue_many(batch)]
        return ids

    def _chaos_loop(self, url: str, config: Path) -> None:
        restart_at = self.jobs // 2
        while not self.stop_chaos.wait(self.kill_every):
            if self.redis_restarts and self._finished_count() >= restart_at:
                self._restart_redis()
                self.redis_restarts -= 1
                continue
            if self.refusals_due and self._finished_count() >= self.refusals_due[0][1] * self.jobs:
                self._refuse(url, self.refusals_due.pop(0)[0])
                continue
            pids = self._live_worker_pids(url)
            if pids:
                victim = random.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                    self.faults.append(_Fault("kill", time.time(), pid=victim))
                except ProcessLookupError:
                    pass

    def _restart_redis(self) -> None:
        fault = _Fault("redis", time.time())
        self.server.kill()
        time.sleep(1.0)  # Redis stays down for a second: the outage under test
        self.server.start()
        fault.back_at = time.time()
        self.faults.append(fault)

    def _refuse(self, url: str, kind: str) -> None:
        """Make Redis refuse commands for the window: OOM (maxmemory 1 byte, noeviction) or BUSY
        (a script from another client that loops until SCRIPT KILL; BUSY after 100 ms of it)."""
        admin = redis.Redis.from_url(url, socket_timeout=5)
        before = set(self._live_worker_pids(url))
        fault = _Fault(kind, time.time())
        busy = None
        if kind == "oom":
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", 1)
        else:
            admin.config_set("busy-reply-threshold", 100)
            busy = threading.Thread(target=_loop_script, args=(url,), daemon=True)
            busy.start()
        time.sleep(self.refusal_window_s)  # the window's length is the fault under test
        if kind == "oom":
            admin.config_set("maxmemory", 0)
        else:
            admin.script_kill()
            assert busy is not None
            busy.join(10)
        fault.back_at = time.time()
        admin.close()
        fault.exited_workers = sum(1 for pid in before if not process_alive(pid))
        self.faults.append(fault)

    def _finished_count(self) -> int:
        try:
            return self.journal.read_text().count("\nend ")
        except FileNotFoundError:
            return 0

    def _report(self, records: list, url: str, config: Path, seconds: float) -> Report:
        rows = [line.split() for line in self.journal.read_text().splitlines()]
        ends = [r for r in rows if r[0] == "end"]
        keys_done = {r[1] for r in ends}
        report = Report(jobs=self.jobs, processes=self.processes, concurrency=self.concurrency,
                        seconds=round(seconds, 2))
        report.kills = sum(1 for f in self.faults if f.kind == "kill")
        report.redis_restarts = sum(1 for f in self.faults if f.kind == "redis")
        report.completed = sum(1 for r in records if r.status is Status.COMPLETED)
        report.dead = sum(1 for r in records if r.status is Status.DEAD)
        report.lost = self.jobs - len(keys_done & {f"k{i}" for i in range(self.jobs)})
        report.duplicates = len(ends) - len(keys_done)
        held = 2 * self.concurrency  # per process: running jobs + outcomes being written (slots.JobSlots)
        report.duplicate_bound = report.kills * held + report.redis_restarts * self.processes * held
        report.leftovers = self._leftovers(url)
        recoveries = self._kill_recoveries(rows)
        report.kill_recovery_s = [round(r, 3) for r in recoveries]
        if recoveries:
            report.kill_recovery_p50_s = round(statistics.median(recoveries), 3)
            report.kill_recovery_max_s = round(max(recoveries), 3)
        starts = [float(r[3]) for r in rows if r[0] == "start"]
        report.redis_recovery_s = [
            round(min((t for t in starts if t > f.back_at), default=f.back_at) - f.back_at, 3)
            for f in self.faults if f.kind == "redis"
        ]
        for f in self.faults:
            if f.kind in ("oom", "busy"):
                resumed = min((t for t in starts if t > f.back_at), default=f.back_at) - f.back_at
                report.refusal_windows[f.kind] = {"seconds": round(f.back_at - f.at, 2),
                                                  "resumed_after_s": round(resumed, 3),
                                                  "workers_exited": f.exited_workers}
        return report

    def _leftovers(self, url: str) -> int:
        client = redis.Redis.from_url(url)
        keys = Keys("chaos")
        total = client.llen(keys.queue("default"))
        total += sum(client.llen(k) for k in client.scan_iter("chaos:{default}:active:*"))
        total += sum(client.zcard(k) for k in client.scan_iter("chaos:{default}:running:*"))
        client.close()
        return total

    def _kill_recoveries(self, rows: list[list[str]]) -> list[float]:
        """For each kill: time until every job the victim held had started on another process."""
        starts: dict[str, list[tuple[float, int]]] = defaultdict(list)
        ends: dict[tuple[str, int], float] = {}
        for kind, key, pid, at in rows:
            if kind == "start":
                starts[key].append((float(at), int(pid)))
            else:
                ends[(key, int(pid))] = float(at)
        recoveries = []
        for fault in (f for f in self.faults if f.kind == "kill"):
            held = [k for k, runs in starts.items()
                    if any(p == fault.pid and t <= fault.at for t, p in runs) and (k, fault.pid) not in ends]
            again = [min((t for t, p in starts[k] if t > fault.at and p != fault.pid), default=None) for k in held]
            if held and all(a is not None for a in again):
                recoveries.append(max(again) - fault.at)
        return recoveries


def _loop_script(url: str) -> None:
    """Another client's script that runs until SCRIPT KILL (which makes it raise here)."""
    client = redis.Redis.from_url(url)
    try:
        client.eval("while true do end", 0)
    except redis.ResponseError:
        pass
    finally:
        client.close()


def run(jobs: int = 10_000, processes: int = 4, concurrency: int = 8, kill_every: float = 0.3,
        redis_restarts: int = 1, refusal_window_s: float = 0.0) -> Report:
    """Run the drill in a temporary folder and return its report."""
    with tempfile.TemporaryDirectory(prefix="pool-chaos-") as workdir:
        return Chaos(jobs, processes, concurrency, kill_every, redis_restarts, Path(workdir),
                     refusal_window_s).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kill-every", type=float, default=0.3, help="seconds between worker kills")
    parser.add_argument("--redis-restarts", type=int, default=1, choices=(0, 1))
    parser.add_argument("--refusal-window", type=float, default=3.0, metavar="S",
                        help="seconds of OOM, then of BUSY (0: none); longer than heartbeat_ttl (2 s)")
    options = parser.parse_args()
    report = run(options.jobs, options.processes, options.concurrency, options.kill_every, options.redis_restarts,
                 options.refusal_window)
    print(f"jobs {report.jobs} on {report.processes} processes x {report.concurrency} slots, {report.seconds}s")
    print(f"faults: {report.kills} worker kills, {report.redis_restarts} Redis restart(s)")
    print(f"lost {report.lost}, leftovers {report.leftovers}, dead {report.dead}, completed {report.completed}")
    print(f"duplicates {report.duplicates} (bound: {report.duplicate_bound} = jobs in flight at the faults)")
    print(f"recovery after a worker kill: p50 {report.kill_recovery_p50_s}s, max {report.kill_recovery_max_s}s "
          f"(each: {', '.join(f'{r:.3f}' for r in report.kill_recovery_s) or 'no kill hit a running job'})")
    print(f"recovery after the Redis restart: {report.redis_recovery_s}s")
    for kind, window in report.refusal_windows.items():
        print(f"{kind.upper()} for {window['seconds']}s: a job started {window['resumed_after_s']}s after it ended, "
              f"{window['workers_exited']} worker(s) exited meanwhile")
    print(json.dumps(asdict(report)))


if __name__ == "__main__":
    main()
