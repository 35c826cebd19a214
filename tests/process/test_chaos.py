"""The chaos drill of bench/chaos.py at CI size: kills, a Redis restart and two windows of refused
commands (OOM, BUSY), nothing lost."""

from __future__ import annotations

from bench.chaos import run


def test_chaos_5000_jobs_with_worker_kills_a_redis_restart_and_refusals():
    # Given 5,000 jobs on 4 processes; When a random worker is SIGKILLed every 300 ms, Redis
    # is SIGKILLed and restarted once half way, and refuses commands for 3 s twice (OOM, BUSY:
    # longer than the 2 s heartbeat TTL)
    report = run(jobs=5000, processes=4, concurrency=8, kill_every=0.3, redis_restarts=1, refusal_window_s=3.0)
    # Then every job completed, none is left anywhere, and duplicates stay within the bound
    assert report.kills >= 3, report
    assert report.redis_restarts == 1, report
    assert (report.lost, report.leftovers, report.dead) == (0, 0, 0), report
    assert report.completed == 5000, report
    assert report.duplicates <= report.duplicate_bound, report
    assert report.kill_recovery_max_s is not None and report.kill_recovery_max_s < 1.0, report
    # And no worker exited in either refusal window, and work went on right after each (the
    # bench reports the figure; the bound here leaves room for a loaded CI machine)
    assert set(report.refusal_windows) == {"oom", "busy"}, report
    for window in report.refusal_windows.values():
        assert window["workers_exited"] == 0, report
        assert window["resumed_after_s"] < 2.0, report
