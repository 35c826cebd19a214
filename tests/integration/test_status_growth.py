"""`pool status` beside a large fleet: a bounded number of calls whatever the number of workers,
and an hour of tallies counted exactly, to the second, from the per-minute and per-second keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pool import status
from pool.keys import Keys
from tests.fleet import write_fleet, write_supervisor


@pytest.fixture
def keys(prefix: str, r: redis.Redis) -> Iterator[Keys]:
    yield Keys(prefix)
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):  # the fleets are large: keep the server small
        r.unlink(key)


class CountingRedis(redis.Redis):
    """A client that counts the calls it sends: each command, and each command of a pipeline."""

    calls = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        CountingRedis.calls += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> Any:
            CountingRedis.calls += len(pipe.command_stack)
            return execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


def _calls(url: str, config: Any) -> tuple[int, dict[str, Any]]:
    client = CountingRedis.from_url(url)
    try:
        CountingRedis.calls = 0
        data = status.snapshot(client, config, url)
        return CountingRedis.calls, data
    finally:
        client.close()


def test_a_snapshot_beside_2000_workers_sends_a_few_calls_more_than_beside_10(r, keys, make_config, url):
    """The workers' hashes are read a few hundred per call, the queues one call each: 2,000
    workers cost a few calls more than 10 (not one per worker, nor one per worker and queue)."""
    config = make_config(queues=["q0", "q1"], heartbeat_ttl="1h")
    keys = Keys(config.key_prefix)
    write_supervisor(r, keys, "web-1:1:ours", ["web-1:2:w1"])
    write_fleet(r, keys, hosts=10, workers_per_host=1, queues=list(config.queues))
    small, small_data = _calls(url, config)
    write_fleet(r, keys, hosts=200, workers_per_host=10, queues=list(config.queues))
    large, large_data = _calls(url, config)
    assert (len(small_data["workers"]), len(large_data["workers"])) == (11, 2_001)
    assert large_data["pool"]["workers"] == 2_001 and large_data["pool"]["supervisors"] == 201
    assert large - small <= 2_000 // status.HASHES_PER_CALL, (small, large)


def _expected(tallies: dict[int, dict[str, int]], now_s: int, window_s: int) -> dict[str, int]:
    """The attempts of the seconds after ``now_s - window_s`` (the current minute whole), by brute force."""
    counted = {"completed": 0, "failed": 0}
    for minute, fields in tallies.items():
        for field, count in fields.items():
            if minute * 60 + int(field[1:]) > now_s - window_s:
                counted["completed" if field[0] == "c" else "failed"] += count
    return counted


def test_last_minute_and_last_hour_count_every_second_of_their_window_and_none_outside(r, keys, make_config, url):
    """An hour and two minutes of tallies, every second different: the windows the snapshot
    reports are the sums of exactly the seconds inside them (read by queue_figures.lua)."""
    config = make_config(queues=["q0"])
    keys = Keys(config.key_prefix)
    minute = int(r.time()[0]) // 60
    tallies: dict[int, dict[str, int]] = {}
    pipe = r.pipeline(transaction=False)
    for at in range(minute - 61, minute):  # minutes already over: nothing is added after the read
        fields = {f"c{s}": (at * 7 + s) % 11 + 1 for s in range(60)} | {f"f{s}": 1 for s in range(0, 60, 7)}
        tallies[at] = fields
        pipe.hset(keys.tally("q0", at), mapping=fields)
        pipe.hset(keys.minutes("q0"), mapping={f"c{at}": sum(v for f, v in fields.items() if f[0] == "c"),
                                               f"f{at}": sum(v for f, v in fields.items() if f[0] == "f")})
    pipe.execute()
    data = status.snapshot(r, config, url)  # at whatever second this runs: the unit tests take each kind of second
    now_s = data["time_ms"] // 1000
    counts = data["queues"]["q0"]
    assert counts["last_minute"] == _expected(tallies, now_s, 60), now_s
    assert counts["last_hour"] == _expected(tallies, now_s, 3600), now_s
    assert counts["last_hour"]["completed"] > 59 * 60  # (the minutes between counted whole)


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A snapshot less what changes between two reads (clocks and ages)."""
    workers = [{k: v for k, v in w.items() if k not in ("heartbeat_age_s", "uptime_s")} for w in data["workers"]]
    return {"queues": data["queues"], "workers": workers, "pool": data["pool"]}


def test_a_user_not_allowed_to_run_scripts_gets_the_same_snapshot_from_plain_commands(r, keys, make_config, url):
    """A read-only ACL user (no @scripting): the same figures, from plain pipelined commands."""
    config = make_config(queues=["q0", "q1"], heartbeat_ttl="1h")
    keys = Keys(config.key_prefix)
    write_supervisor(r, keys, "web-1:1:ours", ["web-1:2:w1"])
    write_fleet(r, keys, hosts=3, workers_per_host=2, queues=list(config.queues))
    r.lpush(keys.queue("q0"), "j1")
    r.hset(keys.job("q0", "j1"), mapping={"status": "queued", "updated_ms": 1, "enqueued_ms": 1})
    user = f"reader-{keys.prefix}"
    r.acl_setuser(user, enabled=True, passwords=["+pw"], keys=["*"], commands=["+@read", "+@connection", "+time",
                                                                                 "+info"])
    reader = redis.Redis.from_url(url, username=user, password="pw")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.eval("return 1", 0)  # (the premise: no scripts for this user)
        as_reader, as_pool = status.snapshot(reader, config, url), status.snapshot(r, config, url)
    finally:
        reader.close()
        r.acl_deluser(user)
    assert _comparable(as_reader) == _comparable(as_pool)
    assert as_reader["queues"]["q0"]["queued"] == 1 and as_reader["queues"]["q0"]["oldest_wait_s"] is not None
    assert as_reader["pool"]["workers"] == 7


def test_the_oldest_wait_is_that_of_the_next_job_when_a_cancelled_one_is_at_the_head(r, keys, make_config, url):
    """A job cancelled while it waited leaves its entry in the queue (stale): the oldest wait is
    read past it, from the job that will start next."""
    from pool.lua import Scripts

    config = make_config(queues=["q"])
    keys = Keys(config.key_prefix)
    scripts = Scripts(r, keys)
    jobs = [(i, 0, ["id", i, "handler", "m.f", "queue", "q", "status", "queued", "attempts", 0, "updated_ms", 1000])
            for i in "abc"]
    scripts.enqueue("q", jobs, 1000)  # a is at the head
    assert [scripts.cancel("q", job_id, 9000, 60_000, None) for job_id in "ba"] == [1, 1]
    assert r.sismember(keys.stale("q"), r.lindex(keys.queue("q"), -1))  # (the premise: a stale entry at the head)
    figures = status.snapshot(r, config, url)["queues"]["q"]
    assert figures["queued"] == 1
    assert figures["oldest_wait_s"] is not None and figures["oldest_wait_s"] > 0
