"""What an operator reads, against the real server: `pool status` data and `pool jobs` pages."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import pytest
import redis

from pool import AsyncClient, health, status
from pool.handlers import load_registry
from pool.keys import Keys, make_worker_id
from pool.lua import Scripts
from pool.testing import async_wait_until
from pool.worker import Worker

QUEUE_FIELDS = {"queued", "active", "delayed", "dead", "completed", "failed", "reclaimed", "last_minute",
                "last_hour", "jobs_per_s", "oldest_wait_s"}
WORKER_FIELDS = {"id", "host", "pid", "state", "supervisor", "name", "queues", "in_flight", "done", "failed",
                 "concurrency", "memory_bytes", "started_ms", "heartbeat_age_s", "uptime_s", "active"}
SUPERVISOR_FIELDS = {"id", "host", "pid", "state", "processes", "workers", "restarts", "recycles", "metrics",
                     "started_ms", "uptime_s", "heartbeat_age_s"}


@pytest.fixture
def config(make_config):
    return make_config(
        concurrency=2,
        handlers=["tests.sample_handlers", {"path": "tests.sample_handlers.async_explode", "dead_letter": False}],
        retries={"backoff": "1h", "backoff_max": "2h"}, heartbeat_interval="100ms", heartbeat_ttl="2s",
    )


@contextlib.asynccontextmanager
async def running(config, url, r):
    worker = Worker(config, load_registry(config.handlers, config.base_dir), make_worker_id(secrets.token_hex(3)),
                    url=url)
    task = asyncio.create_task(worker.run())

    async def registered() -> bool:
        if task.done():
            task.result()
        return bool(r.exists(Keys(config.key_prefix).worker(worker.worker_id)))

    await async_wait_until(registered, timeout=5, message="worker registration")
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


def now(predicate):
    """A plain predicate as the async one async_wait_until awaits."""
    async def check():
        return predicate()
    return check


def snapshot(config, url):
    client = redis.Redis.from_url(url)
    try:
        return status.snapshot(client, config, url)
    finally:
        client.close()


async def test_status_json_under_load_with_jobs_in_every_state(config, url, r, tmp_path):
    async with AsyncClient(config, url) as client, running(config, url, r) as worker:
        # Given jobs that finished every way: 3 completed, 2 dead, 1 failed, 1 waiting to retry,
        # 1 cancelled while delayed
        done = [await client.enqueue("tests.sample_handlers.add", i, 1) for i in range(3)]
        dead = [await client.enqueue("tests.sample_handlers.explode", f"boom {i}") for i in range(2)]
        failed = await client.enqueue("tests.sample_handlers.async_explode", "no dead letter")
        retrying = await client.enqueue("tests.sample_handlers.flaky", str(tmp_path / "n"), 5, max_retries=3)
        cancelled = await client.enqueue("tests.sample_handlers.add", 0, 0, delay=3600)
        assert await client.cancel(cancelled.id) == "cancelled"
        await async_wait_until(now(lambda: worker.done_count == 3 and worker.failed_count == 4), timeout=10,
                               message="the first jobs to finish")
        # And, while both slots are busy, 3 queued jobs and 2 delayed ones
        release = tmp_path / "release"
        active = [await client.enqueue("tests.sample_handlers.start_then_wait", str(tmp_path / "started"),
                                       str(release)) for _ in range(2)]
        await async_wait_until(now(lambda: len(worker.slots.running) == 2), timeout=5, message="both slots busy")
        queued = [await client.enqueue("tests.sample_handlers.add", i, 2) for i in range(3)]
        delayed = [await client.enqueue("tests.sample_handlers.add", i, 3, delay=3600 + i) for i in range(2)]

        # When pool status reads it (once the worker's heartbeat has told it about the busy slots)
        data = await async_wait_until(now(lambda: (d := snapshot(config, url))["workers"][0]["in_flight"] == 2 and d),
                                      timeout=5, message="a heartbeat with both jobs in flight")

        # Then the documented shape holds, with exactly these numbers
        assert set(data) == {"time_ms", "redis", "pool", "queues", "supervisors", "workers", "schedules", "warnings"}
        q = data["queues"]["default"]
        assert set(q) == QUEUE_FIELDS
        assert {k: q[k] for k in ("queued", "active", "delayed", "dead", "completed", "failed", "reclaimed")} == {
            "queued": 3, "active": 2, "delayed": 3, "dead": 2, "completed": 3, "failed": 1, "reclaimed": 0}
        # failed attempts: 2 dead + 1 failed + 1 retried; the cancelled job is neither
        assert q["last_minute"] == q["last_hour"] == {"completed": 3, "failed": 4}
        assert q["jobs_per_s"] == round(7 / 60, 2)
        assert q["oldest_wait_s"] is not None and 0 <= q["oldest_wait_s"] < 10
        [w] = data["workers"]
        assert set(w) == WORKER_FIELDS
        assert (w["id"], w["state"], w["in_flight"], w["concurrency"], w["done"]) == (worker.worker_id, "busy", 2, 2, 3)
        assert w["memory_bytes"] > 10 * 2**20 and w["queues"] == ["default"] and w["active"] == {"default": 2}
        assert data["pool"] == {"state": "up", "hosts": 1, "supervisors": 0, "workers": 1, "workers_expected": None,
                                "problems": []}

        # And pool jobs lists each state, from the structure that holds it
        async def ids(state: str) -> list[str]:
            page = await client.jobs(status=state, limit=50)
            allowed = {state, "retrying"} if state == "delayed" else {state}  # both wait in the delayed set
            assert all(job.status.value in allowed for job in page.jobs)
            return [job.id for job in page.jobs]

        assert await ids("queued") == [job.id for job in queued]  # next to start first
        assert sorted(await ids("active")) == sorted(job.id for job in active)
        assert sorted(await ids("delayed")) == sorted([retrying.id, *(job.id for job in delayed)])
        assert await ids("retrying") == [retrying.id]
        assert sorted(await ids("dead")) == sorted(job.id for job in dead)  # newest first; these ran at once
        assert sorted(await ids("completed")) == sorted(job.id for job in done)
        assert await ids("failed") == [failed.id]
        assert await ids("cancelled") == [cancelled.id]
        release.touch()


async def test_delayed_lists_earliest_first_and_pages_over_retrying_jobs(config, url, r, tmp_path):
    async with AsyncClient(config, url) as client:
        async with running(config, url, r) as worker:
            for i in range(3):  # three jobs waiting to retry (backoff about an hour)
                await client.enqueue("tests.sample_handlers.flaky", str(tmp_path / f"n{i}"), 5, max_retries=3)
            await async_wait_until(now(lambda: worker.failed_count == 3), timeout=10, message="3 failed attempts")
        soon = [await client.enqueue("tests.sample_handlers.add", i, 0, delay=60 + i) for i in range(2)]
        first = await client.jobs(status="delayed", limit=2)
        retrying = await client.jobs(status="retrying", limit=2)
    assert [job.id for job in first.jobs] == [job.id for job in soon]  # earliest due first
    assert first.to_dict()["total"] == 5 and first.to_dict()["next_offset"] == 2
    assert len(retrying.jobs) == 2 and retrying.more and retrying.total == 3


def _calls(r, *commands):
    stats = r.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{command}", {}).get("calls", 0)) for command in commands)


async def test_a_page_of_retrying_jobs_reads_a_page_however_many_jobs_are_delayed(config, url, r):
    """3 retrying among 3,000 delayed: the page asks for its own entries, not the delayed set's."""
    scripts, worker_id = Scripts(r, Keys(config.key_prefix)), "w"
    fields = ["handler", "tests.sample_handlers.add", "queue", "default", "status", "queued", "args", "[]",
              "kwargs", "{}", "created_ms", "1"]
    for first in range(0, 3000, 1000):
        scripts.enqueue("default", [(f"d{i}", 10**12 + i, ["id", f"d{i}", *fields]) for i in range(first, first + 1000)],
                        1000)
    scripts.enqueue("default", [(f"r{i}", 0, ["id", f"r{i}", *fields]) for i in range(3)], 1000)
    scripts.claim("default", worker_id, 1000, 3, 0)
    for i in range(3):  # due after the delayed ones: a walk of the delayed set would reach them last
        scripts.ack("default", worker_id, f"r{i}", "retrying", 2000, 60_000, ["error", "E"], due_ms=2 * 10**12 + i)
    async with AsyncClient(config, url) as client:
        await client.jobs(status="dead")  # connect first: the hello of a new connection is not the page's
        before = _calls(r, "zrange", "hget", "hgetall", "hmget")
        first = await client.jobs(status="retrying", limit=2)
        second = await client.jobs(status="retrying", offset=2, limit=2)
        asked = _calls(r, "zrange", "hget", "hgetall", "hmget") - before
    assert [job.id for job in first.jobs] == ["r0", "r1"] and first.more and first.total == 3
    assert [job.id for job in second.jobs] == ["r2"] and not second.more
    assert asked <= 2 * (1 + 2)  # per page: one ZRANGE of the index and a record per job listed


async def test_jobs_pages_through_a_long_queue(config, url):
    async with AsyncClient(config, url) as client:
        jobs = [await client.enqueue("tests.sample_handlers.add", i, 0) for i in range(25)]
        first = await client.jobs(status="queued", limit=10)
        last = await client.jobs(status="queued", offset=20, limit=10)
    assert [job.id for job in first.jobs] == [job.id for job in jobs[:10]]
    assert first.to_dict()["total"] == 25 and first.to_dict()["next_offset"] == 10
    assert [job.id for job in last.jobs] == [job.id for job in jobs[20:]]
    assert last.to_dict()["next_offset"] is None


async def test_lost_workers_and_supervisors_make_the_pool_degraded(config, url, r):
    keys = Keys(config.key_prefix)
    # Given a worker and a supervisor still registered, whose heartbeats expired
    r.sadd(keys.workers(), "gone-host:41:abc")
    r.sadd(keys.supervisors(), "gone-host:40:def")
    data = snapshot(config, url)
    assert data["pool"]["state"] == "down"  # nothing alive at all
    # When a live worker runs beside them
    async with running(config, url, r):
        data = snapshot(config, url)
    # Then the pool is degraded, and the problems say why in words
    assert data["pool"]["state"] == "degraded"
    assert [s["state"] for s in data["supervisors"]] == ["lost"]
    assert any("gone-host pid 40 lost" in p for p in data["pool"]["problems"])
    assert any("1 worker(s) lost" in p for p in data["pool"]["problems"])
    assert set(data["supervisors"][0]) == SUPERVISOR_FIELDS


async def test_health_needs_a_supervisor_on_this_host(config, url, r):
    async with running(config, url, r):
        client = redis.Redis.from_url(url)
        try:
            verdict = health.check(client, config, url)
        finally:
            client.close()
    assert not verdict.healthy
    assert "no supervisor is running on host" in verdict.message
