"""A simulated fleet written straight into Redis: supervisor and worker hashes as their heartbeats
write them, and queues with an hour of per-second tallies as acks leave them. For tests and
benchmarks of the read-only views (health, status) at sizes no test machine can run."""

from __future__ import annotations

from typing import Any

import redis

from pool import clock
from pool.keys import Keys

BATCH = 1000  # commands per pipeline round trip while writing


def write_supervisor(r: redis.Redis, keys: Keys, supervisor_id: str, worker_ids: list[str], *,
                     processes: int | None = None, state: str = "running", heartbeat_age_s: float = 0.0,
                     worker_ages_s: dict[str, float] | None = None) -> None:
    """One supervisor and its workers, as announce() and the worker heartbeat leave them."""
    with r.pipeline(transaction=False) as pipe:
        _queue_supervisor(pipe, keys, supervisor_id, worker_ids, processes, state, heartbeat_age_s,
                          worker_ages_s or {})
        pipe.execute()


def write_fleet(r: redis.Redis, keys: Keys, hosts: int, workers_per_host: int, queues: list[str]) -> None:
    """``hosts`` other hosts, one supervisor each with ``workers_per_host`` fresh workers, and an
    hour of tallies (every second busy) in each of ``queues``."""
    pipe = r.pipeline(transaction=False)
    for host in range(hosts):
        supervisor_id = f"other-{host}:1:s{host}"
        workers = [f"other-{host}:{100 + n}:w{host}x{n}" for n in range(workers_per_host)]
        _queue_supervisor(pipe, keys, supervisor_id, workers, None, "running", 0.0, {})
        if len(pipe) >= BATCH:
            pipe.execute()
    minute = int(r.time()[0]) // 60
    for queue in queues:
        pipe.hset(keys.stats(queue), mapping={"completed": 3600 * 60, "failed": 60})
        for older in range(minute - 60, minute + 1):
            pipe.hset(keys.tally(queue, older), mapping={f"c{second}": 60 for second in range(60)})
        pipe.hset(keys.minutes(queue), mapping={f"c{older}": 3600 for older in range(minute - 61, minute + 1)})
        if len(pipe) >= BATCH:
            pipe.execute()
    pipe.execute()
    pipe.reset()


def _queue_supervisor(pipe: Any, keys: Keys, supervisor_id: str, worker_ids: list[str], processes: int | None,
                      state: str, heartbeat_age_s: float, worker_ages_s: dict[str, float]) -> None:
    now_ms = clock.now_ms()
    host, pid, _ = supervisor_id.rsplit(":", 2)
    pipe.hset(keys.supervisor(supervisor_id), mapping={
        "id": supervisor_id, "host": host, "pid": pid, "started_ms": now_ms - 60_000, "state": state,
        "processes": len(worker_ids) if processes is None else processes, "workers": ",".join(worker_ids),
        "restarts": 0, "recycles": 0, "config": "pool.yaml", "metrics": "",
        "heartbeat_ms": now_ms - int(heartbeat_age_s * 1000)})
    pipe.sadd(keys.supervisors(), supervisor_id)
    for worker_id in worker_ids:
        worker_host, worker_pid, _ = worker_id.rsplit(":", 2)
        pipe.hset(keys.worker(worker_id), mapping={
            "id": worker_id, "host": worker_host, "pid": worker_pid, "queues": "default", "state": "idle",
            "heartbeat_ms": now_ms - int(worker_ages_s.get(worker_id, 0.0) * 1000), "in_flight": 0,
            "done": 0, "failed": 0, "started_ms": now_ms - 60_000, "concurrency": 8, "rss_bytes": 1 << 20,
            "active": "{}"})
        pipe.sadd(keys.workers(), worker_id)
