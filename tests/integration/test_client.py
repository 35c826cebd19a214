"""The client API against a real server: enqueue, enqueue_many, lookup, result waiting."""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import UTC, datetime

import pytest

from pool import AsyncClient, Client, JobSpec, Status
from pool.errors import JobFailed, JobNotFound, PayloadTooLarge, ResultTimeout, SerializationError, UsageError
from pool.keys import Keys
from pool.testing import async_wait_until, drain


@pytest.fixture
async def client(make_config, url):
    async with AsyncClient(make_config(queues=["default", "other"]), url) as c:
        yield c


def _is_blocked_in_blmove(r):
    async def check() -> bool:
        return any(c.get("cmd") == "blmove" for c in r.client_list())
    return check


def commands_run(r, name: str) -> int:
    stats = r.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


async def test_enqueue_returns_a_queued_job(client, r):
    job = await client.enqueue("tests.sample_handlers.add", 1, 2)
    assert job.status is Status.QUEUED
    assert job.queue == "default"
    assert job.enqueued_ms is not None
    stored = await client.get_job(job.id)
    assert (stored.handler, stored.args, stored.status, stored.attempts) == ("tests.sample_handlers.add", (1, 2), Status.QUEUED, 0)
    assert r.lrange(Keys(client.config.key_prefix).queue("default"), 0, -1) == [job.id.encode()]


async def test_enqueue_many_is_one_round_trip_per_call(client, r):
    """100 jobs over two queues: one pipeline with one script call per queue."""
    await client.scripts.load(client.redis)  # as after any first call (a fresh server: NOSCRIPT, load, resend)
    before = commands_run(r, "evalsha") + commands_run(r, "eval")
    specs = [JobSpec("tests.sample_handlers.add", (i, i), queue="default" if i % 2 else "other") for i in range(100)]
    jobs = await client.enqueue_many(specs)
    after = commands_run(r, "evalsha") + commands_run(r, "eval")
    assert after - before <= 2 + 1  # one per queue (+1 if the script had to be loaded)
    assert [j.args for j in jobs] == [(i, i) for i in range(100)]
    assert {j.queue for j in jobs} == {"default", "other"}
    keys = Keys(client.config.key_prefix)
    assert r.llen(keys.queue("default")) == 50 and r.llen(keys.queue("other")) == 50


async def test_a_large_bulk_enqueue_is_split_into_short_script_calls(client, r):
    """4,500 jobs on one queue: three enqueue.lua calls of at most 2,000 (each a few ms, so the
    server is never held for seconds), every job created once, in order; the same specs again
    create nothing and come back as stored."""
    from pool.client import ENQUEUE_CHUNK

    await client.scripts.load(client.redis)
    before = commands_run(r, "evalsha")
    specs = [JobSpec("tests.sample_handlers.add", (i, 0), job_id=f"bulk-{i}") for i in range(4500)]
    jobs = await client.enqueue_many(specs)
    assert ENQUEUE_CHUNK == 2000 and commands_run(r, "evalsha") - before == 3
    keys = Keys(client.config.key_prefix)
    assert r.lrange(keys.queue("default"), 0, -1) == [f"bulk-{i}".encode() for i in reversed(range(4500))]
    again = await client.enqueue_many([JobSpec("tests.sample_handlers.add", (9, 9), job_id=j.id) for j in jobs])
    assert [j.args for j in again] == [(i, 0) for i in range(4500)]  # as stored, not as asked
    assert r.llen(keys.queue("default")) == 4500


async def test_enqueue_over_two_queues_survives_a_server_that_lost_its_scripts(client, r):
    """The pipeline skips redis-py's SCRIPT EXISTS: a NOSCRIPT reply loads the scripts and resends."""
    await client.enqueue_many([JobSpec("tests.sample_handlers.add", (0, 0), queue=q) for q in ("default", "other")])
    r.script_flush()
    before = commands_run(r, "script|exists")
    jobs = await client.enqueue_many([JobSpec("tests.sample_handlers.add", (1, 1), queue=q) for q in ("default", "other")])
    keys = Keys(client.config.key_prefix)
    assert r.llen(keys.queue("default")) == 2 and r.llen(keys.queue("other")) == 2  # each job once
    assert all(r.exists(keys.job(j.queue, j.id)) for j in jobs)
    assert commands_run(r, "script|exists") == before


async def test_enqueue_many_validates_everything_before_writing(client, r):
    specs = [JobSpec("tests.sample_handlers.add", (1, 2)), JobSpec("tests.sample_handlers.add", (object(),))]
    with pytest.raises(SerializationError):
        await client.enqueue_many(specs)
    assert r.llen(Keys(client.config.key_prefix).queue("default")) == 0


async def test_enqueue_with_existing_id_returns_the_existing_job(client, r):
    first = await client.enqueue("tests.sample_handlers.add", 1, 2, job_id="invoice-42")
    second = await client.enqueue("tests.sample_handlers.add", 9, 9, job_id="invoice-42")
    assert second.id == first.id == "invoice-42"
    assert second.args == (1, 2)
    assert r.llen(Keys(client.config.key_prefix).queue("default")) == 1


async def test_a_resent_enqueue_many_is_answered_in_the_round_trips_of_a_fresh_one(client, r):
    """1,000 ids enqueued again: one script call, no read per existing id, the jobs as stored."""
    specs = [JobSpec("tests.sample_handlers.add", (i, 0), job_id=f"bulk-{i}") for i in range(1000)]
    await client.enqueue_many(specs)
    resent = [JobSpec("tests.sample_handlers.add", (9, 9), job_id=f"bulk-{i}") for i in range(1000)]
    await client.scripts.load(client.redis)
    with r.monitor() as monitor:  # what clients send, told apart from the scripts' own commands
        jobs = await client.enqueue_many(resent)
        await client.redis.echo("resent")  # on the same connection: marks the end
        sent = []
        while (command := monitor.next_command())["command"] != "ECHO resent":
            if command["client_type"] != "lua":
                sent.append(command["command"].split()[0])
    assert sent == ["EVALSHA"]
    assert [job.args for job in jobs] == [(i, 0) for i in range(1000)]
    assert {job.status for job in jobs} == {Status.QUEUED}
    assert r.llen(Keys(client.config.key_prefix).queue("default")) == 1000


@pytest.mark.parametrize(("call", "message"), [
    (dict(handler="add"), "handler 'add' must be a dotted path"),
    (dict(handler="tests.sample_handlers.add", queue="bad queue"), "queue 'bad queue' is not a valid queue name"),
    (dict(handler="tests.sample_handlers.add", timeout=0),
     "timeout must be a number of seconds from 0.001 to 3153600000 (36500d (100 years)) (got 0)"),
    (dict(handler="tests.sample_handlers.add", timeout=float("inf")),
     "timeout must be a number of seconds from 0.001 to 3153600000 (36500d (100 years)) (got inf)"),
    (dict(handler="tests.sample_handlers.add", timeout=1e306),
     "timeout must be a number of seconds from 0.001 to 3153600000 (36500d (100 years)) (got 1e+306)"),
    (dict(handler="tests.sample_handlers.add", result_ttl=1e16),
     "result_ttl must be a number of seconds from 0.001 to 3153600000 (36500d (100 years)) (got 1e+16)"),
    (dict(handler="tests.sample_handlers.add", delay=999999999999 * 86400),
     "delay must be a number of seconds from 0 to 3153600000 (36500d (100 years)) or a timedelta"),
    (dict(handler="tests.sample_handlers.add", at=datetime(9999, 1, 1, tzinfo=UTC)),
     "at must be at most 36500d (100 years) from now (got 9999-01-01T00:00:00+00:00)"),
    (dict(handler="tests.sample_handlers.add", max_retries=10**20),
     "max_retries must be an integer from 0 to 1000"),
    (dict(handler="tests.sample_handlers.add", job_id="a b"), "job_id 'a b' must be 1-128 characters without spaces"),
    (dict(handler="tests.sample_handlers.add", job_id=""), "job_id '' must be 1-128 characters without spaces"),
    (dict(handler=["tests.sample_handlers.add"]), "handler ['tests.sample_handlers.add'] must be a dotted path"),
])
async def test_bad_enqueue_arguments_are_usage_errors(client, call, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        await client.enqueue(call.pop("handler"), **call)


async def test_a_bad_spec_late_in_a_bulk_enqueue_enqueues_nothing(client, r):
    specs = [JobSpec("tests.sample_handlers.add", (i, 1)) for i in range(5)]
    specs.append(JobSpec("tests.sample_handlers.add", (0, 0), queue="bad queue"))
    with pytest.raises(UsageError, match="queue 'bad queue' is not a valid queue name"):
        await client.enqueue_many(specs)
    assert r.llen(Keys(client.config.key_prefix).queue("default")) == 0


async def test_non_serialisable_arguments_are_rejected_at_enqueue(client):
    with pytest.raises(SerializationError, match="argument 0 of tests.sample_handlers.add is not JSON-serialisable"):
        await client.enqueue("tests.sample_handlers.add", {1, 2}, 3)


async def test_payload_above_limit_is_refused(make_config, url):
    async with AsyncClient(make_config(max_payload_size=1024), url) as client:
        with pytest.raises(PayloadTooLarge, match="over max_payload_size"):
            await client.enqueue("tests.sample_handlers.echo", "x" * 2000)


async def test_result_returns_value_of_a_completed_job(client, url):
    job = await client.enqueue("tests.sample_handlers.echo", 1, kwargs={"k": "v"})
    await drain(client.config, url)
    assert await client.result(job.id, timeout=5) == {"args": [1], "kwargs": {"k": "v"}}


async def test_result_raises_remote_error_with_traceback(client, url):
    job = await client.enqueue("tests.sample_handlers.explode", "bad input")
    await drain(client.config, url)
    with pytest.raises(JobFailed) as info:
        await client.result(job.id, timeout=5)
    assert info.value.error == "ValueError: bad input"
    assert 'raise ValueError(message)' in info.value.remote_traceback
    assert "sample_handlers.py" in str(info.value)


async def test_result_times_out_clearly(client):
    job = await client.enqueue("tests.sample_handlers.add", 1, 2)
    with pytest.raises(ResultTimeout, match=rf"job {job.id} did not finish within 0.2s \(status: queued\)"):
        await client.result(job.id, timeout=0.2)


async def test_unknown_job_is_not_found(client):
    with pytest.raises(JobNotFound, match="no job nope in queues default, other"):
        await client.result("nope", timeout=1)
    assert await client.get_job("nope") is None


async def test_waiting_blocks_in_redis_instead_of_polling(client, url, r):
    """A waiter that waits ~1.5 s reads the record a handful of times, not in a loop."""
    job = await client.enqueue("tests.sample_handlers.add", 2, 3)
    waiter = asyncio.create_task(client.result(job.id, timeout=10))
    keys = Keys(client.config.key_prefix)
    await asyncio.sleep(0)  # let the waiter issue its first read
    before = commands_run(r, "hgetall")
    # Wait until the waiter is blocked on the done list, then hold it there across one block period.
    await async_wait_until(_is_blocked_in_blmove(r), timeout=5, message="the waiter to block")
    await asyncio.sleep(1.5)  # the waiting period under test; nothing to synchronise on
    await drain(client.config, url)
    assert await waiter == 5
    reads = commands_run(r, "hgetall") - before
    assert reads <= 4, f"the waiter read the job {reads} times: it is polling"
    assert r.llen(keys.done("default", job.id)) == 1  # the token stays for other waiters


async def test_several_waiters_all_wake(client, url):
    job = await client.enqueue("tests.sample_handlers.add", 1, 1)
    async with AsyncClient(client.config, url) as other:
        waiters = [asyncio.create_task(c.result(job.id, timeout=10)) for c in (client, other, other)]
        await drain(client.config, url)
        assert await asyncio.gather(*waiters) == [2, 2, 2]


async def test_lookup_by_queue_and_across_queues(client):
    job = await client.enqueue("tests.sample_handlers.add", 1, 2, queue="other")
    assert (await client.get_job(job.id)).queue == "other"
    assert (await client.get_job(job.id, queue="other")).id == job.id
    assert await client.get_job(job.id, queue="default") is None


async def test_results_expire_after_result_ttl(client, url, r):
    job = await client.enqueue("tests.sample_handlers.add", 1, 2, result_ttl=3)
    default = await client.enqueue("tests.sample_handlers.add", 1, 2)
    await drain(client.config, url)
    keys = Keys(client.config.key_prefix)
    assert 2000 < r.pttl(keys.job("default", job.id)) <= 3000
    assert 3_590_000 < r.pttl(keys.job("default", default.id)) <= 3_600_000


async def test_the_longest_ttls_pass_through_ack_and_bury(make_config, url, r):
    """result_ttl and dead_letter.ttl at their ceiling (100 years) are taken by Redis inside ack.lua:
    the job completes (or is buried) and its record carries that TTL."""
    config = make_config(result_ttl="36500d", dead_letter={"ttl": "36500d"})
    async with AsyncClient(config, url) as client:
        done = await client.enqueue("tests.sample_handlers.add", 1, 2, result_ttl=36500 * 86400)
        dead = await client.enqueue("tests.sample_handlers.explode", "x")
        await drain(config, url)
        assert (await client.get_job(done.id)).status is Status.COMPLETED
        assert (await client.get_job(dead.id)).status is Status.DEAD
    keys = Keys(config.key_prefix)
    century_ms = 36500 * 86400 * 1000
    assert century_ms - 60_000 < r.pttl(keys.job("default", done.id)) <= century_ms
    assert century_ms - 60_000 < r.pttl(keys.job("default", dead.id)) <= century_ms


def test_sync_client_mirrors_the_async_one(make_config, url):
    config = make_config()
    with Client(config, url) as client:
        job = client.enqueue("tests.sample_handlers.add", 20, 22)
        assert client.get_job(job.id).status is Status.QUEUED
        asyncio.run(drain(config, url))
        assert client.result(job.id, timeout=5) == 42
        assert client.wait(job.id).status is Status.COMPLETED


def test_sync_client_is_safe_across_threads(make_config, url):
    config = make_config()
    ids: list[str] = []
    with Client(config, url) as client:
        def produce() -> None:
            for i in range(20):
                ids.append(client.enqueue("tests.sample_handlers.add", i, 0).id)
        threads = [threading.Thread(target=produce) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        asyncio.run(drain(config, url))
        assert sorted(client.result(i, timeout=5) for i in ids) == sorted(list(range(20)) * 4)


def test_client_from_config_file(write_config, url):
    path = write_config()
    with Client.from_config(path) as client:
        assert client.config.key_prefix.startswith("t")
        job = client.enqueue("tests.sample_handlers.add", 1, 2)
        assert client.get_job(job.id) is not None
