"""The chaos drill of bench/chaos.py at CI size: kills and a Redis restart, nothing lost."""

from __future__ import annotations

from bench.chaos import run


def test_chaos_5000_jobs_with_worker_kills_and_a_redis_restart():
    # Given 5,000 jobs on 4 processes; When a random worker is SIGKILLed every 300 ms and Redis
    # is SIGKILLed and restarted once half way
    report = run(jobs=5000, processes=4, concurrency=8, kill_every=0.3, redis_restarts=1)
    # Then every job completed, none is left anywhere, and duplicates stay within the bound
    assert report.kills >= 3, report
    assert report.redis_restarts == 1, report
    assert (report.lost, report.leftovers, report.dead) == (0, 0, 0), report
    assert report.completed == 5000, report
    assert report.duplicates <= report.duplicate_bound, report
    assert report.kill_recovery_max_s is not None and report.kill_recovery_max_s < 1.0, report
