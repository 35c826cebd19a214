"""The arithmetic and the wording of `pool status`, without a server."""

from __future__ import annotations

from pool.cli.status_text import render
from pool.status import window_counts


def tally(**fields: int) -> dict[bytes, bytes]:
    return {name.encode(): str(value).encode() for name, value in fields.items()}


def test_last_minute_takes_only_the_seconds_of_the_previous_minute_still_inside_it():
    # 20 s into the minute: the window is the previous minute's seconds 21..59 plus this one
    current = tally(c3=2, c19=3, f10=1)
    previous = tally(c5=4, c20=1, c21=7, f59=2, f0=1)
    minute, hour = window_counts(20, current, previous, {}, [{}] * 58)
    assert minute == {"completed": 5 + 7, "failed": 1 + 2}
    assert hour == {"completed": 5 + 12, "failed": 1 + 3}


def test_last_hour_adds_the_whole_minutes_between_and_the_tail_of_the_minute_an_hour_ago():
    hour_ago = tally(c30=60, c31=40, f45=9)
    full = [tally(c0=4, c59=6, f7=1)] * 58
    minute, hour = window_counts(30, tally(c1=1), tally(c2=2), hour_ago, full)
    assert minute == {"completed": 1, "failed": 0}
    assert hour == {"completed": 1 + 2 + 58 * 10 + 40, "failed": 58 * 1 + 9}


def test_tallies_of_an_earlier_version_with_bare_totals_are_read_without_them():
    minute, _ = window_counts(10, tally(c=99, c1=2), tally(f=5, f30=1), {}, [{}] * 58)
    assert minute == {"completed": 2, "failed": 1}


def test_at_second_59_nothing_of_the_older_minutes_counts():
    minute, hour = window_counts(59, tally(c0=3), tally(c59=50), tally(c59=7), [{}] * 58)
    assert minute == {"completed": 3, "failed": 0}
    assert hour == {"completed": 53, "failed": 0}


def _data(pool: dict, supervisors: list, workers: list) -> dict:
    return {"time_ms": 1_790_000_000_000, "redis": {"version": "8.1.1", "url": "redis://h:6379/0"},
            "pool": pool, "queues": {}, "supervisors": supervisors, "workers": workers, "schedules": {},
            "warnings": []}


def test_a_stopped_pool_says_so_and_how_to_start_it():
    text = render(_data({"state": "down", "hosts": 0, "supervisors": 0, "workers": 0, "workers_expected": None,
                         "problems": []}, [], []), "pool.yaml")
    assert "POOL DOWN · no supervisor or worker has a heartbeat in Redis" in text
    assert "start it with `pool run pool.yaml`" in text
    assert text.splitlines()[0].endswith(" · 2026-09-21T14:13:20Z")  # UTC with a Z, as every time pool prints


def test_a_degraded_pool_lists_its_problems_and_groups_workers_by_host():
    supervisor = {"id": "web-1:10:a", "host": "web-1", "pid": 10, "state": "crash-looping", "processes": 2,
                  "workers": ["web-1:11:b"], "restarts": 4, "recycles": 0, "metrics": None, "uptime_s": 75.0}
    worker = {"id": "web-1:11:b", "host": "web-1", "pid": 11, "state": "idle", "supervisor": "web-1:10:a",
              "name": "worker-1", "in_flight": 0, "concurrency": 16, "done": 1234, "failed": 5,
              "memory_bytes": 50 * 2**20, "heartbeat_age_s": 0.4, "uptime_s": 3.0}
    text = render(_data({"state": "degraded", "hosts": 1, "supervisors": 1, "workers": 1, "workers_expected": 2,
                         "problems": ["supervisor web-1 pid 10: a worker keeps dying at start-up"]},
                        [supervisor], [worker]), "pool.yaml")
    assert "POOL DEGRADED · 1 host · 1 supervisor · 1/2 workers" in text
    assert "  ! supervisor web-1 pid 10: a worker keeps dying at start-up" in text
    assert "HOST web-1 · supervisor pid 10 · crash-looping · up 1m 15s · 1/2 workers · 4 restarts" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("worker-1"))
    assert row.split() == ["worker-1", "11", "idle", "0/16", "1,234", "5", "50", "MiB", "0.4s", "ago", "3.0s"]
