"""The arithmetic and the wording of `pool status`, without a server."""

from __future__ import annotations

from pool.cli.status_text import render
from pool.status import WORKER_FIELDS, worker_record
from pool.status_queues import boundary_fields, window_counts

MINUTE = 29_000_000  # unix seconds // 60 of some minute


def tally(**fields: int) -> dict[bytes, bytes]:
    return {name.encode(): str(value).encode() for name, value in fields.items()}


def seconds(second: int, **counts: int) -> dict[str, bytes | None]:
    """What status reads of a boundary minute's tally at ``second``: the fields it names, None if unset."""
    return {field: str(counts[field]).encode() if field in counts else None for field in boundary_fields(second)}


def totals(**by_minutes_ago: tuple[int, int]) -> dict[bytes, bytes]:
    """The minutes hash: ``m<n>=(completed, failed)`` for the minute n minutes ago."""
    out = {}
    for name, (completed, failed) in by_minutes_ago.items():
        at = MINUTE - int(name[1:])
        out |= {f"c{at}".encode(): str(completed).encode(), f"f{at}".encode(): str(failed).encode()}
    return out


def test_boundary_fields_are_the_fewer_side_of_the_second_and_never_more_than_60():
    assert boundary_fields(0) == ["c0", "f0"]
    assert boundary_fields(40) == [f"c{s}" for s in range(41, 60)] + [f"f{s}" for s in range(41, 60)]
    assert boundary_fields(59) == []
    assert max(len(boundary_fields(s)) for s in range(60)) <= 60


def test_last_minute_takes_only_the_seconds_of_the_previous_minute_still_inside_it():
    # 40 s into the minute: the window is the previous minute's seconds 41..59 plus this one
    previous = seconds(40, c41=7, f59=2)
    minute, hour = window_counts(MINUTE, 40, totals(m0=(5, 1), m1=(12, 3)), previous, seconds(40))
    assert minute == {"completed": 5 + 7, "failed": 1 + 2}
    assert hour == {"completed": 5 + 12, "failed": 1 + 3}


def test_early_in_a_minute_the_previous_minute_counts_its_total_less_the_seconds_already_out():
    # 20 s in: seconds 0..20 of the previous minute are outside the window, the rest inside
    previous = seconds(20, c5=4, c20=1, f0=1)
    minute, _ = window_counts(MINUTE, 20, totals(m0=(5, 1), m1=(12, 3)), previous, seconds(20))
    assert minute == {"completed": 5 + 12 - 5, "failed": 1 + 3 - 1}


def test_last_hour_adds_the_whole_minutes_between_and_the_tail_of_the_minute_an_hour_ago():
    between = {f"m{n}": (10, 1) for n in range(1, 60)}
    hour_ago = seconds(30, c31=40, f45=9)
    minute, hour = window_counts(MINUTE, 30, totals(m0=(1, 0), m60=(100, 9), **between), seconds(30), hour_ago)
    assert minute == {"completed": 1, "failed": 0}
    assert hour == {"completed": 1 + 59 * 10 + 40, "failed": 59 * 1 + 9}


def test_minutes_older_than_an_hour_and_a_minute_never_count():
    minute, hour = window_counts(MINUTE, 59, totals(m0=(3, 0), m60=(50, 0), m61=(7, 7)), seconds(59), seconds(59))
    assert minute == {"completed": 3, "failed": 0}
    assert hour == {"completed": 3, "failed": 0}


def test_a_minute_without_a_total_counts_no_negative_attempts():
    """An earlier version wrote the seconds but no total: the window never goes below zero."""
    minute, hour = window_counts(MINUTE, 10, totals(m0=(2, 0)), seconds(10, c3=5), seconds(10, f1=1))
    assert minute == {"completed": 2, "failed": 0}
    assert hour == {"completed": 2, "failed": 0}


def test_a_worker_record_carries_its_active_jobs_by_queue_and_none_from_an_earlier_version():
    def values(**fields: bytes) -> list[bytes | None]:
        return [fields.get(name) for name in WORKER_FIELDS]  # as HMGET returns them

    record = worker_record("h:1:x", values(host=b"h", pid=b"1", queues=b"a,b", active=b'{"a":2}'), 0)
    assert record["active"] == {"a": 2} and record["queues"] == ["a", "b"] and record["pid"] == 1
    assert worker_record("h:1:x", values(host=b"h", pid=b"1"), 0)["active"] is None
    assert worker_record("h:1:x", values(), 0)["active"] is None  # lost
    assert worker_record("h:1:x", values(), 0)["state"] == "lost"


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
