"""The shared wait with real processes: ready tokens across `pool run` workers, kills and reclaim.

Each test says Given / When / Then; every worker runs with ``shared_wait_from: 1`` (one BLPOP on
the ready tokens of its empty queues, pool/worker/ready_wait.py).
"""

from __future__ import annotations

import time

from pool import Client, JobSpec
from pool.testing import wait_until
from tests.process.conftest import live_workers
from tests.process.test_faults import read_journal


def test_reclaim_after_sigkill_signals_so_an_idle_waiting_worker_takes_the_job(write_config, start_pool, tmp_path):
    # Given host A (its own process group) running a long job, and host B's worker idle, waiting
    config = write_config(processes=1, concurrency=1, shared_wait_from=1, reclaim_interval="200ms")
    host_a = start_pool(config, "a.log", new_session=True)
    wait_until(live_workers(config, 1), timeout=30, message="host A's worker")
    started, release = tmp_path / "started", tmp_path / "release"
    with Client.from_config(config) as client:
        job = client.enqueue("tests.sample_handlers.start_then_wait", str(started), str(release))
        wait_until(lambda: started.exists() and started.read_text().split(), timeout=10, message="the job started")
        host_b = start_pool(config, "b.log")
        wait_until(live_workers(config, 2), timeout=30, message="host B's worker")
        # When host A is lost (SIGKILL of its supervisor and worker at once)
        host_a.kill_group()
        lost_at = time.monotonic()
        # Then B's supervisor reclaims the job after the heartbeat TTL (2 s), and requeue.lua's
        # ready token wakes B's waiting worker: no new enqueue, no periodic pass needed
        wait_until(lambda: len(started.read_text().split()) >= 2, timeout=15, interval=0.02,
                   message="the job started again on host B")
        assert time.monotonic() - lost_at < 2.0 + 0.2 + 3.0
        release.write_text("go")
        first, second = (int(pid) for pid in started.read_text().split())
        assert client.result(job.id, timeout=15) == second != first
    assert host_b.stop() == 0


def test_a_batch_on_one_queue_wakes_the_second_waiting_process_through_the_chain_signal(
        write_config, start_pool, tmp_path):
    # Given two idle worker processes of 2 slots each, both waiting on the one queue
    config = write_config(processes=2, concurrency=2, shared_wait_from=1)
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    path = tmp_path / "journal"
    with Client.from_config(config) as client:
        # When 20 jobs arrive in one enqueue_many (one script call: one token)
        jobs = client.enqueue_many(
            JobSpec("tests.sample_handlers.journal", (str(path), f"j{n}", 20)) for n in range(20))
        # Then all run, and on both processes: the first claim left a token for the second
        assert sorted(client.result(job.id, timeout=15) for job in jobs) == sorted(f"j{n}" for n in range(20))
    pids = {pid for kind, _, pid, _ in read_journal(path) if kind == "start"}
    assert len(pids) == 2, f"jobs ran on {pids}"
    assert pool.stop() == 0
