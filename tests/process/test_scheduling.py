"""Schedules and rate limits across real `pool run` processes."""

from __future__ import annotations

import itertools
import json
import signal

import redis
import yaml

from pool import Client, JobSpec
from pool.keys import Keys
from pool.testing import wait_until
from tests.conftest import pool_cli
from tests.process.conftest import live_workers


def test_two_supervisors_sharing_a_schedule_run_each_tick_once(write_config, start_pool, url, tmp_path):
    journal = tmp_path / "journal"
    schedule = {"handler": "tests.sample_handlers.journal", "every": "250ms", "args": [str(journal), "tick"]}
    config = write_config(processes=2, concurrency=2, schedules={"beat": schedule})
    first, second = start_pool(config, "first.log"), start_pool(config, "second.log")
    wait_until(live_workers(config, 4), timeout=30, message="both supervisors' workers")
    wait_until(lambda: journal.exists() and journal.read_text().count("end tick") >= 12, timeout=30,
               message="twelve ticks run")
    # Each supervisor runs a scheduler, and both fire every tick: fire.lua lets one through.
    assert "runs the scheduler" in first.output() and "runs the scheduler" in second.output()
    status = json.loads(pool_cli("status", str(config), "--json").stdout)
    assert status["schedules"]["beat"]["when"] == "every 0.25s"
    assert status["schedules"]["beat"]["next_ms"] > status["schedules"]["beat"]["last_ms"]
    assert first.stop(signal.SIGTERM) == 0 and second.stop(signal.SIGTERM) == 0
    keys = Keys(yaml.safe_load(config.read_text())["key_prefix"])
    server = redis.Redis.from_url(url)
    ticks = sorted(int(k.decode().rsplit("@", 1)[1]) for k in server.scan_iter(keys.job("default", "beat@*")))
    assert len(ticks) >= 12
    assert all(b - a == 250 for a, b in itertools.pairwise(ticks)), ticks  # no tick skipped
    starts = journal.read_text().count("start tick")
    assert starts == len(ticks), f"{starts} runs for {len(ticks)} ticks"  # none ran twice
    fired = sum(log.count("schedule beat: enqueued") for log in (first.output(), second.output()))
    assert fired == len(ticks)


def test_rate_limit_holds_across_two_worker_processes(write_config, start_pool, tmp_path):
    config = write_config(processes=2, concurrency=4, queues=[{"name": "default", "rate_limit": "4/1s"}])
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    with Client.from_config(config) as client:
        jobs = client.enqueue_many(JobSpec("tests.sample_handlers.pid") for _ in range(14))
        pids = [client.result(job.id, timeout=30) for job in jobs]
        starts = sorted(client.get_job(job.id).started_ms for job in jobs)
    assert pool.stop(signal.SIGTERM) == 0, pool.output()
    assert len(set(pids)) == 2, "both processes should have taken jobs within the shared limit"
    # At most 4 starts in any second (judged by the server's clock; a few ms of slack for the
    # workers' own clocks, which wrote started_ms).
    assert all(starts[i + 4] - starts[i] >= 980 for i in range(len(starts) - 4)), starts
    assert starts[-1] - starts[0] >= 3000  # 14 jobs at 4/s: at least three full windows
