"""The shared wait (pool/worker/ready_wait.py): one BLPOP per worker process over the ready tokens
of its empty queues, in-process against the real server."""

from __future__ import annotations

import time

from pool import AsyncClient, Status
from pool.keys import Keys
from pool.testing import async_wait_until
from tests.integration.test_worker import new_worker, running


async def _until(check, message: str, timeout: float = 5.0) -> None:
    """async_wait_until for a plain (synchronous) predicate."""
    async def predicate() -> bool:
        return bool(check())

    await async_wait_until(predicate, timeout=timeout, message=message)


def _blocked(r, command: str) -> int:
    """How many connections of the server are blocked in ``command`` now."""
    return sum(1 for c in r.client_list() if "b" in c["flags"] and c["cmd"] == command)


async def test_a_process_serving_50_queues_holds_one_blocking_connection_and_starts_a_job_at_once(
        make_config, url, r):
    """50 queues cost one blocked BLPOP and a handful of connections, and a job pushed onto the
    last queue (the last key of that BLPOP) starts within milliseconds."""
    config = make_config(queues=[f"q{n}" for n in range(50)])  # the default shared_wait_from (8)
    before = len(r.client_list())
    async with running(new_worker(config, url), r), AsyncClient(config, url) as client:
        await _until(lambda: _blocked(r, "blpop") == 1, message="the shared BLPOP")
        assert _blocked(r, "blmove") == 0
        # this test's r, the client (lazily: at most one so far) and the worker's own few
        assert len(r.client_list()) - before <= 8
        enqueued_at = time.monotonic()
        job = await client.enqueue("tests.sample_handlers.add", 1, 2, queue="q49")
        assert await client.result(job.id, timeout=5) == 3
        assert time.monotonic() - enqueued_at < 1.0  # well inside one block timeout (2 s)
        assert len(r.client_list()) - before <= 8


async def _busy_with(client, tmp_path, queue: str = "a"):
    """A job on ``queue`` that holds its slot until the returned release file is written."""
    started, release = tmp_path / f"started-{queue}", tmp_path / f"release-{queue}"
    job = await client.enqueue("tests.sample_handlers.start_then_wait", str(started), str(release), queue=queue)
    await _until(started.exists, message="the long job started")
    return job, release


async def test_a_token_popped_while_every_slot_is_busy_is_given_back_and_the_job_runs_after(
        make_config, url, r, tmp_path):
    """A job on B arriving while the only slot runs a job from A waits in its queue (its token
    given back, not held) and runs once A's job finishes."""
    config = make_config(queues=["a", "b"], concurrency=1, shared_wait_from=1)
    keys = Keys(config.key_prefix)
    worker = new_worker(config, url)
    async with running(worker, r), AsyncClient(config, url) as client:
        first, release = await _busy_with(client, tmp_path)
        second = await client.enqueue("tests.sample_handlers.add", 2, 3, queue="b")
        # the process popped b's token (it waits on b no more) and put it back for another process
        await _until(lambda: not worker.fetcher._shared.is_waiting("b") and r.llen(keys.ready("b")) == 1,
                     message="the token given back")
        assert (await client.get_job(second.id)).status == Status.QUEUED
        release.write_text("go")
        assert await client.result(first.id, timeout=5) is not None
        assert await client.result(second.id, timeout=5) == 5


async def test_a_token_given_back_by_a_busy_process_is_taken_by_an_idle_one(make_config, url, r, tmp_path):
    """No job waits behind a busy process: the idle one takes B's job while A's still runs."""
    config = make_config(queues=["a", "b"], concurrency=1, shared_wait_from=1)
    keys = Keys(config.key_prefix)
    busy = new_worker(config, url)
    async with running(busy, r), AsyncClient(config, url) as client:
        first, release = await _busy_with(client, tmp_path)
        second = await client.enqueue("tests.sample_handlers.add", 2, 3, queue="b")
        await _until(lambda: not busy.fetcher._shared.is_waiting("b") and r.llen(keys.ready("b")) == 1,
                     message="the token given back")
        idle = new_worker(config, url)
        async with running(idle, r):
            assert await client.result(second.id, timeout=5) == 5
            assert (await client.get_job(first.id)).status == Status.ACTIVE  # still running
            assert (await client.get_job(second.id)).worker == idle.worker_id
        release.write_text("go")
        assert await client.result(first.id, timeout=5) is not None


async def test_an_idle_process_waiting_on_a_queue_takes_a_job_a_busy_one_gave_back(make_config, url, r, tmp_path):
    """Both processes wait on B; whichever pops B's token, the job runs now on the idle one."""
    config = make_config(queues=["a", "b"], concurrency=1, shared_wait_from=1)
    one, two = new_worker(config, url), new_worker(config, url)
    async with running(one, r), running(two, r), AsyncClient(config, url) as client:
        await _until(lambda: _blocked(r, "blpop") >= 2, message="both waiting")
        first, release = await _busy_with(client, tmp_path)
        second = await client.enqueue("tests.sample_handlers.add", 2, 3, queue="b")
        assert await client.result(second.id, timeout=5) == 5
        assert (await client.get_job(second.id)).worker != (await client.get_job(first.id)).worker
        release.write_text("go")
        assert await client.result(first.id, timeout=5) is not None


async def test_a_queue_found_empty_again_joins_the_wait_in_flight_at_once(make_config, url, r):
    """After its job, the queue is empty again and joins the BLPOP at once (the process ends the
    BLPOP in flight with its interrupt list) instead of after the block timeout (2 s)."""
    config = make_config(queues=["a", "b"], shared_wait_from=1)
    async with running(new_worker(config, url), r), AsyncClient(config, url) as client:
        await _until(lambda: _blocked(r, "blpop") == 1, message="the shared BLPOP")
        for n in range(3):
            enqueued_at = time.monotonic()
            job = await client.enqueue("tests.sample_handlers.add", n, 1, queue="a")
            assert await client.result(job.id, timeout=5) == n + 1
            assert time.monotonic() - enqueued_at < 1.0


async def test_an_interrupted_wait_leaves_no_interrupt_list_behind(make_config, url, r):
    """The process ends its BLPOP by pushing onto its own list (never by cancelling it), and
    deletes that list when it stops."""
    config = make_config(queues=["a", "b"], shared_wait_from=1)
    worker = new_worker(config, url)
    keys = Keys(config.key_prefix)
    async with running(worker, r):
        await _until(lambda: _blocked(r, "blpop") == 1, message="the shared BLPOP")
    assert _blocked(r, "blpop") == 0
    assert not r.exists(keys.wait_interrupt(worker.worker_id))


async def test_a_fetcher_that_fails_ends_its_shared_wait_instead_of_hanging(make_config, url, r, monkeypatch):
    """A claim pass failing for a reason other than an outage ends the process (it is respawned);
    the shared BLPOP ends with it even though no stop was asked."""
    config = make_config(queues=["a", "b"], shared_wait_from=1)
    worker = new_worker(config, url)
    async with running(worker, r), AsyncClient(config, url) as client:
        await _until(lambda: _blocked(r, "blpop") == 1, message="the shared BLPOP")

        async def broken(*args, **kwargs):
            raise RuntimeError("a bug in the claim pass")

        monkeypatch.setattr(worker.fetcher, "_claim_pass", broken)
        await client.enqueue("tests.sample_handlers.add", 1, 1, queue="a")  # the token wakes the pass
        await _until(lambda: worker.crashed, message="the process failing")
        await _until(lambda: _blocked(r, "blpop") == 0, message="the BLPOP ended")
