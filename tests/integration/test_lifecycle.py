"""After a job runs: retries with backoff, the dead-letter queue, events and cancellation."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from pool import AsyncClient, JobCancelled, JobFailed, Status
from pool.keys import Keys
from pool.testing import async_wait_until
from tests.conftest import cli_env, pool_cli, pool_of


def retries(**settings):
    return {"max_retries": 3, "backoff": "100ms", "backoff_max": "10s", **settings}


async def test_flaky_job_succeeds_on_its_third_try_with_growing_delays(make_config, url, r, tmp_path):
    config = make_config(retries=retries())
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.flaky", str(tmp_path / "n"), 2)
        assert await client.result(job.id, timeout=15) == 3
        done = await client.get_job(job.id)
    assert (done.status, done.attempts) == (Status.COMPLETED, 3)
    first, second = done.history
    assert [h["outcome"] for h in done.history] == ["retrying", "retrying"]
    assert first["error"] == "ConnectionError: attempt 1 failed"
    gap_1 = second["started_ms"] - first["finished_ms"]
    gap_2 = done.started_ms - second["finished_ms"]
    assert 70 <= gap_1 < gap_2, (gap_1, gap_2)  # ~100 ms, then ~200 ms


async def test_retrying_job_shows_its_status_attempts_and_last_error(make_config, url, r, tmp_path):
    config = make_config(retries=retries(backoff="30s"))
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.flaky", str(tmp_path / "n"), 5)

        async def waiting():
            found = await client.get_job(job.id)
            return found if found.status is Status.RETRYING else None

        found = await async_wait_until(waiting, timeout=10, message="the job to wait for its retry")
    assert (found.attempts, found.error) == (1, "ConnectionError: attempt 1 failed")
    assert found.due_ms > found.updated_ms
    assert r.zscore(Keys(config.key_prefix).delayed("default"), job.id) == found.due_ms


async def test_permanent_error_goes_straight_to_the_dead_set(make_config, url, r, tmp_path):
    config = make_config(retries=retries(), handlers=[
        "tests.sample_handlers", {"path": "tests.sample_handlers.flaky", "fail_on": ["ValueError"]}])
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.flaky", str(tmp_path / "n"), 1, "ValueError")
        dead = await client.wait(job.id, timeout=10)
    assert (dead.status, dead.attempts, dead.error) == (Status.DEAD, 1, "ValueError: attempt 1 failed")
    assert "raise" in dead.traceback
    assert r.zscore(Keys(config.key_prefix).dead("default"), job.id) is not None


async def test_retry_on_limits_which_errors_retry(make_config, url, r, tmp_path):
    config = make_config(retries=retries(retry_on=["ConnectionError"]))
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.flaky", str(tmp_path / "n"), 1, "KeyError")
        assert (await client.wait(job.id, timeout=10)).attempts == 1  # KeyError: no retry


async def test_handler_can_ask_for_a_retry_with_a_delay(make_config, url, r, tmp_path):
    config = make_config(retries=retries(max_retries=1))
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.ask_for_retry", str(tmp_path / "n"), 0.3)
        assert await client.result(job.id, timeout=10) == 2
        done = await client.get_job(job.id)
    assert done.history[0]["error"] == "Retry: not ready yet"
    assert done.started_ms - done.history[0]["finished_ms"] >= 250


async def test_decorator_and_job_override_set_retries(make_config, url, r, tmp_path):
    config = make_config()  # the pool default: no retries
    async with pool_of(config, url, r) as client:
        decorated = await client.enqueue("tests.sample_handlers.decorated_flaky", str(tmp_path / "a"), 2)
        assert await client.result(decorated.id, timeout=10) == 3
        per_job = await client.enqueue("tests.sample_handlers.flaky", str(tmp_path / "b"), 1, max_retries=0)
        assert (await client.wait(per_job.id, timeout=10)).status is Status.DEAD


async def test_without_dead_letter_exhausted_jobs_end_as_failed(make_config, url, r, tmp_path):
    config = make_config(retries=retries(max_retries=0, dead_letter=False))
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.explode", "no")
        failed = await client.wait(job.id, timeout=10)
        with pytest.raises(JobFailed, match="ValueError: no"):
            failed.outcome()
    assert failed.status is Status.FAILED
    assert r.zcard(Keys(config.key_prefix).dead("default")) == 0


async def test_result_over_the_limit_is_refused(make_config, url, r):
    config = make_config(max_result_size="1KiB", retries=retries())
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.big_result", 5000)
        dead = await client.wait(job.id, timeout=10)
    assert dead.attempts == 1  # no retry can fix it
    assert dead.error.startswith("ResultTooLarge: the result of tests.sample_handlers.big_result is 5002 bytes")


async def test_timeouts_count_as_failures_for_retries(make_config, url, r):
    config = make_config(retries=retries(max_retries=1, backoff="10ms"))
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.async_sleep", 5, timeout=0.1)
        dead = await client.wait(job.id, timeout=10)
    assert (dead.status, dead.attempts) == (Status.DEAD, 2)
    assert [h["error"] for h in dead.history] == ["JobTimeout: job exceeded its timeout of 0.1s"] * 2


async def test_events_are_published_for_each_outcome(make_config, url, r, tmp_path):
    config = make_config(handlers=["tests.sample_handlers", {"path": "tests.sample_handlers.explode",
                                                            "dead_letter": False}],
                         retries=retries(max_retries=1, backoff="10ms"))
    async with pool_of(config, url, r) as client:
        received: list[dict] = []

        async def listen() -> None:
            async for event in client.events(["default", "elsewhere"]):
                received.append(event)

        listener = asyncio.create_task(listen())
        try:
            keys = Keys(config.key_prefix)
            await async_wait_until(_subscribed(r, keys.events("default")), timeout=5)
            ok = await client.enqueue("tests.sample_handlers.add", 1, 2)
            failed = await client.enqueue("tests.sample_handlers.explode", "boom")
            dead = await client.enqueue("tests.sample_handlers.async_explode", "k")
            # a queue no worker serves, so that the job is still waiting when it is cancelled
            cancelled = await client.enqueue("tests.sample_handlers.add", 1, 1, queue="elsewhere")
            assert await client.cancel(cancelled.id, queue="elsewhere") == "cancelled"
            for job in (ok, failed, dead):
                await client.wait(job.id, timeout=10)

            async def all_seen() -> bool:
                return len(received) >= 5
            await async_wait_until(all_seen, timeout=5, message="five events")
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    by_job = {(e["id"], e["status"]) for e in received}
    assert by_job >= {(ok.id, "completed"), (failed.id, "failed"), (dead.id, "retrying"), (dead.id, "dead"),
                      (cancelled.id, "cancelled")}
    completed = next(e for e in received if e["id"] == ok.id)
    assert (completed["handler"], completed["result"], completed["attempt"]) == ("tests.sample_handlers.add", 3, 1)
    assert completed["run_ms"] >= 0
    assert next(e for e in received if e["id"] == failed.id)["error"] == "ValueError: boom"


def _subscribed(r, channel):
    async def check() -> bool:
        return r.pubsub_numsub(channel)[0][1] >= 1
    return check


async def test_events_resume_after_the_connection_drops(make_config, url, r):
    config = make_config()
    async with AsyncClient(config, url) as client:
        stream = client.events()
        first = asyncio.create_task(stream.__anext__())
        channel = Keys(config.key_prefix).events("default")
        await async_wait_until(_subscribed(r, channel), timeout=5)
        r.client_kill_filter(_type="pubsub")

        async def resubscribed() -> bool:  # CLIENT KILL is synchronous: a subscriber now is a new one
            return r.pubsub_numsub(channel)[0][1] >= 1
        await async_wait_until(resubscribed, timeout=10, message="the listener to resubscribe")
        r.publish(channel, b'{"id":"x","status":"completed"}')
        assert (await asyncio.wait_for(first, 10))["id"] == "x"
        await stream.aclose()


async def test_cancel_a_queued_job(make_config, url):
    async with AsyncClient(make_config(), url) as client:
        job = await client.enqueue("tests.sample_handlers.add", 1, 2)
        assert await client.cancel(job.id) == "cancelled"
        with pytest.raises(JobCancelled):
            await client.result(job.id, timeout=5)
        assert await client.cancel(job.id) == "finished"


async def test_cancel_a_job_waiting_to_retry(make_config, url, r, tmp_path):
    config = make_config(retries=retries(backoff="30s"))
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.flaky", str(tmp_path / "n"), 5)

        async def retrying() -> bool:
            return (await client.get_job(job.id)).status is Status.RETRYING

        await async_wait_until(retrying, timeout=10)
        assert await client.cancel(job.id) == "cancelled"
        assert (await client.get_job(job.id)).status is Status.CANCELLED
    assert r.zcard(Keys(config.key_prefix).delayed("default")) == 0


async def test_cancel_a_running_job(make_config, url, r, tmp_path):
    config = make_config(heartbeat_interval="100ms", heartbeat_ttl="1s")
    async with pool_of(config, url, r) as client:
        started = tmp_path / "started"
        job = await client.enqueue("tests.sample_handlers.touch_then_sleep", str(started), 30)
        await async_wait_until(_exists(started), timeout=5)
        assert await client.cancel(job.id) == "requested"
        cancelled = await client.wait(job.id, timeout=5)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.error == "Cancelled: cancelled while running"


def _exists(path):
    async def check() -> bool:
        return path.exists()
    return check


async def test_dead_letter_queue_end_to_end(make_config, write_config, url, r, tmp_path):
    """list, show, retry (the job then completes), purge: with the CLI, as an operator would."""
    marker = tmp_path / "fixed"
    config = make_config()
    path = write_config()
    async with pool_of(config, url, r) as client:
        fixable = await client.enqueue("tests.sample_handlers.fail_until_exists", str(marker))
        hopeless = await client.enqueue("tests.sample_handlers.explode", "never")
        for job in (fixable, hopeless):
            assert (await client.wait(job.id, timeout=10)).status is Status.DEAD
        listed = pool_cli("dead", "list", str(path))
        assert fixable.id in listed.stdout and hopeless.id in listed.stdout
        assert "FileNotFoundError" in listed.stdout
        as_json = [json.loads(line) for line in pool_cli("dead", "list", str(path), "--json").stdout.splitlines()]
        assert {j["id"] for j in as_json} == {fixable.id, hopeless.id}
        shown = json.loads(pool_cli("dead", "show", str(path), fixable.id, "--json").stdout)
        assert shown["history"][0]["outcome"] == "dead"
        # the operator fixes the cause, then retries the job from the dead set
        marker.write_text("here")
        assert pool_cli("dead", "retry", str(path), fixable.id).stdout.strip() == "retried 1 dead job(s)"
        assert await client.result(fixable.id, timeout=10) == "found"
        revived = await client.get_job(fixable.id)
        assert (revived.id, revived.attempts) == (fixable.id, 1)  # same id, attempts counted afresh
        assert pool_cli("dead", "purge", str(path), "--all").stdout.strip() == "purged 1 dead job(s)"
        assert await client.get_job(hopeless.id) is None
        assert pool_cli("dead", "list", str(path)).stdout.strip() == "no dead jobs"


async def test_result_awaited_from_another_process(make_config, write_config, url, r):
    config = make_config()
    path = write_config()
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.async_sleep", 0.5)
        program = ("import sys; from pool import Client\n"
                   "print(Client.from_config(sys.argv[1]).result(sys.argv[2], timeout=10))")
        waiter = await asyncio.create_subprocess_exec(
            sys.executable, "-c", program, str(path), job.id, stdout=subprocess.PIPE, env=cli_env())
        out, _ = await asyncio.wait_for(waiter.communicate(), 20)
    assert out.decode().strip() == "0.5"


async def test_pool_events_and_pool_cancel_on_the_command_line(make_config, write_config, url, r):
    config = make_config()
    path = write_config()
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pool", "events", str(path), "--count", "2", stdout=subprocess.PIPE, env=cli_env())
    try:
        await async_wait_until(_subscribed(r, Keys(config.key_prefix).events("default")), timeout=10)
        async with AsyncClient(config, url) as client:
            waiting = await client.enqueue("tests.sample_handlers.add", 1, 1)
            cancelled = await asyncio.to_thread(pool_cli, "cancel", str(path), waiting.id)
            assert cancelled.stdout.strip() == f"cancelled {waiting.id}"
            again = await asyncio.to_thread(pool_cli, "cancel", str(path), waiting.id)
            assert again.returncode == 1 and "has already finished" in again.stdout
        async with pool_of(config, url, r) as client:
            done = await client.enqueue("tests.sample_handlers.add", 2, 3)
            await client.wait(done.id, timeout=10)
        out, _ = await asyncio.wait_for(tail.communicate(), 10)
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
    lines = out.decode().splitlines()
    assert len(lines) == 2 and tail.returncode == 0
    assert f"cancelled  tests.sample_handlers.add  {waiting.id}" in lines[0]
    assert f"completed  tests.sample_handlers.add  {done.id}" in lines[1] and lines[1].endswith("-> 5")
