"""A worker in-process against the real server: handlers, timeouts, failures, drain, outages."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator

import pytest

from pool import AsyncClient, CorruptJob, Status
from pool.errors import ExitCode
from pool.handlers import load_registry
from pool.keys import Keys, make_worker_id
from pool.testing import async_wait_until, drain
from pool.worker import Worker


@pytest.fixture(params=[0, 1], ids=["watchers", "shared-wait"])
def config(make_config, request):
    """Each test on this config runs with per-queue BLMOVE watchers and with the shared wait."""
    return make_config(queues=["default", "other"], shared_wait_from=request.param)


@pytest.fixture
async def client(config, url):
    async with AsyncClient(config, url) as c:
        yield c


def new_worker(config, url, **kwargs) -> Worker:
    registry = load_registry(config.handlers, config.base_dir)
    return Worker(config, registry, make_worker_id(secrets.token_hex(3)), url=url, **kwargs)


@contextlib.asynccontextmanager
async def running(worker: Worker, r) -> AsyncIterator[Worker]:
    """Run ``worker`` in the background until the block ends; enter once it has registered."""
    task = asyncio.create_task(worker.run())
    key = Keys(worker.config.key_prefix).worker(worker.worker_id)

    async def registered() -> bool:
        if task.done():
            task.result()  # surface a crash instead of timing out
        return bool(r.exists(key))

    try:
        await async_wait_until(registered, timeout=5, message="worker registration")
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


async def run_one(client, url, handler, *args, **options):
    job = await client.enqueue(handler, *args, **options)
    await drain(client.config, url)
    return await client.get_job(job.id)


async def test_sync_and_async_handlers_complete(client, url):
    sync_job = await client.enqueue("tests.sample_handlers.add", 1, 2)
    async_job = await client.enqueue("tests.sample_handlers.async_add", 3, 4, queue="other")
    worker = await drain(client.config, url)
    assert await client.result(sync_job.id, timeout=1) == 3
    assert await client.result(async_job.id, timeout=1) == 7
    assert worker.done_count == 2


async def test_record_tells_the_whole_story(client, url):
    job = await run_one(client, url, "tests.sample_handlers.add", 1, 2)
    assert job.status is Status.COMPLETED
    assert job.attempts == 1
    assert job.created_ms <= job.enqueued_ms <= job.started_ms <= job.finished_ms
    assert job.worker.count(":") == 2


async def test_plain_functions_run_in_the_thread_pool(client, url):
    job = await run_one(client, url, "tests.sample_handlers.thread_name")
    assert job.result.startswith("pool-job")


async def test_blocking_handler_does_not_block_the_event_loop(client, url):
    """Two blocking 0.5 s handlers and one async job: the async one finishes first."""
    blockers = [await client.enqueue("tests.sample_handlers.sync_sleep", 0.5) for _ in range(2)]
    quick = await client.enqueue("tests.sample_handlers.async_add", 1, 1)
    await drain(client.config, url)
    jobs = [await client.get_job(j.id) for j in (*blockers, quick)]
    assert all(j.status is Status.COMPLETED for j in jobs)
    assert jobs[2].finished_ms < min(j.finished_ms for j in jobs[:2])


async def test_async_handler_past_its_timeout_fails_with_timeout_error(client, url):
    job = await run_one(client, url, "tests.sample_handlers.async_sleep", 10, timeout=0.2)
    assert job.status is Status.DEAD
    assert job.error == "JobTimeout: job exceeded its timeout of 0.2s"


async def test_sync_handler_past_its_timeout_fails_the_job(client, url):
    job = await run_one(client, url, "tests.sample_handlers.sync_sleep", 1.0, timeout=0.2)
    assert job.status is Status.DEAD
    assert job.error == "JobTimeout: job exceeded its timeout of 0.2s"


async def test_default_timeout_comes_from_the_config(make_config, url):
    config = make_config(timeout="200ms")
    async with AsyncClient(config, url) as client:
        job = await run_one(client, url, "tests.sample_handlers.async_sleep", 10)
    assert job.error == "JobTimeout: job exceeded its timeout of 0.2s"


async def test_handler_exception_fails_the_job_not_the_worker(client, url):
    bad = await client.enqueue("tests.sample_handlers.async_explode", "missing key")
    good = await client.enqueue("tests.sample_handlers.add", 1, 1)
    worker = await drain(client.config, url)
    failed = await client.get_job(bad.id)
    assert failed.status is Status.DEAD
    assert failed.error == "KeyError: 'missing key'"
    assert "async_explode" in failed.traceback
    assert await client.result(good.id, timeout=1) == 2
    assert (worker.done_count, worker.failed_count) == (1, 1)


async def test_handler_calling_sys_exit_fails_only_its_job(client, url):
    bad = await client.enqueue("tests.sample_handlers.exits", 3)
    good = await client.enqueue("tests.sample_handlers.add", 1, 1)
    worker = await drain(client.config, url)
    assert (await client.get_job(bad.id)).error == "SystemExit: 3"
    assert await client.result(good.id, timeout=1) == 2
    assert not worker.crashed


async def test_corrupt_record_fails_its_job_instead_of_crashing(client, url, r):
    job = await client.enqueue("tests.sample_handlers.add", 1, 2)
    r.hset(Keys(client.config.key_prefix).job("default", job.id), "args", "{not json")
    worker = await drain(client.config, url)
    raw = r.hgetall(Keys(client.config.key_prefix).job("default", job.id))
    assert raw[b"status"] == b"dead"
    assert raw[b"error"].startswith(f"CorruptJob: job {job.id}: its record cannot be decoded".encode())
    with pytest.raises(CorruptJob, match=f"job {job.id}: its record cannot be decoded"):
        await client.get_job(job.id)
    assert (worker.failed_count, worker.crashed) == (1, False)


async def test_heartbeat_failing_for_another_reason_stops_the_process(config, url, client):
    """Anything but an outage in the heartbeat ends the worker with crashed=True (its supervisor respawns it)."""
    worker = new_worker(config, url)

    async def broken_heartbeat() -> None:
        raise RuntimeError("heartbeat bug")

    worker._heartbeat = broken_heartbeat
    await asyncio.wait_for(worker.run(), 10)
    assert worker.crashed


async def test_unregistered_handler_is_refused_with_a_clear_error(client, url):
    job = await run_one(client, url, "os.system", "echo pwned")
    assert job.status is Status.DEAD
    assert job.error.startswith("UnknownHandler: handler 'os.system' is not registered in this pool (registered: ")
    assert "tests.sample_handlers.add" in job.error


async def test_unserialisable_result_fails_the_job(client, url):
    job = await run_one(client, url, "tests.sample_handlers.unserialisable_result")
    assert job.status is Status.DEAD
    assert job.error.startswith("SerializationError: the result of tests.sample_handlers.unserialisable_result is not JSON-serialisable")


async def test_concurrency_bounds_jobs_in_flight(make_config, url):
    config = make_config(concurrency=3)
    async with AsyncClient(config, url) as client:
        jobs = [await client.enqueue("tests.sample_handlers.track_concurrency", 0.05) for _ in range(12)]
        await drain(config, url)
        peaks = [await client.result(j.id, timeout=1) for j in jobs]
    assert max(peaks) == 3


async def test_worker_registers_and_heartbeats_then_deregisters(config, url, r):
    worker = new_worker(config, url)
    task = asyncio.create_task(worker.run())
    keys = Keys(config.key_prefix)

    async def registered():
        return r.hgetall(keys.worker(worker.worker_id))

    entry = await async_wait_until(registered, timeout=5, message="worker registration")
    assert entry[b"state"] == b"idle"
    assert entry[b"queues"] == b"default,other"
    assert 0 < r.pttl(keys.worker(worker.worker_id)) <= config.heartbeat_ttl_s * 1000
    assert r.sismember(keys.workers(), worker.worker_id)
    worker.stop()
    await asyncio.wait_for(task, 10)
    assert not r.exists(keys.worker(worker.worker_id))
    assert not r.sismember(keys.workers(), worker.worker_id)


async def test_blocked_worker_wakes_on_enqueue(config, url, client, r):
    """An idle worker blocks in BLMOVE and picks a new job up within milliseconds."""
    async with running(new_worker(config, url), r):
        job = await client.enqueue("tests.sample_handlers.add", 5, 5, queue="other")
        assert await client.result(job.id, timeout=5) == 10


async def test_graceful_stop_lets_running_jobs_finish(config, url, client, tmp_path):
    worker = new_worker(config, url)
    task = asyncio.create_task(worker.run())
    started = tmp_path / "started"
    job = await client.enqueue("tests.sample_handlers.touch_then_sleep", str(started), 0.5)
    await async_wait_until(_exists(started), timeout=5, message="job start")
    worker.stop()
    await asyncio.wait_for(task, 10)
    assert (await client.get_job(job.id)).status is Status.COMPLETED


async def test_job_outliving_shutdown_timeout_is_requeued(make_config, url, tmp_path, r):
    config = make_config(shutdown_timeout="100ms")
    worker = new_worker(config, url)
    task = asyncio.create_task(worker.run())
    started = tmp_path / "started"
    async with AsyncClient(config, url) as client:
        job = await client.enqueue("tests.sample_handlers.touch_then_sleep", str(started), 30)
        await async_wait_until(_exists(started), timeout=5, message="job start")
        worker.stop()
        await asyncio.wait_for(task, 10)
        stored = await client.get_job(job.id)
    keys = Keys(config.key_prefix)
    assert stored.status is Status.QUEUED
    assert r.lrange(keys.queue("default"), 0, -1) == [job.id.encode()]
    assert not r.exists(keys.active("default", worker.worker_id), keys.running("default", worker.worker_id))


async def test_second_stop_cancels_running_jobs_at_once(config, url, client, tmp_path, r):
    worker = new_worker(config, url)
    task = asyncio.create_task(worker.run())
    started = tmp_path / "started"
    job = await client.enqueue("tests.sample_handlers.touch_then_sleep", str(started), 30)
    await async_wait_until(_exists(started), timeout=5, message="job start")
    worker.stop()
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert (await client.get_job(job.id)).status is Status.QUEUED


async def test_second_stop_during_the_drain_cancels_at_once(config, url, client, tmp_path):
    """The first stop waits for running jobs; a second one, even mid-wait, cancels them now."""
    worker = new_worker(config, url)
    task = asyncio.create_task(worker.run())
    started = tmp_path / "started"
    job = await client.enqueue("tests.sample_handlers.touch_then_sleep", str(started), 30)
    await async_wait_until(_exists(started), timeout=5, message="job start")
    worker.stop()
    await async_wait_until(_draining(worker), timeout=5, message="the drain to begin")
    worker.stop()
    await asyncio.wait_for(task, 3)
    assert (await client.get_job(job.id)).status is Status.QUEUED


def _draining(worker):
    async def check() -> bool:
        return worker.stopping.is_set() and not any(t.get_name().startswith("fetch:") and not t.done()
                                                     for t in asyncio.all_tasks())
    return check


async def test_stuck_thread_does_not_starve_later_plain_jobs(make_config, url):
    """A sync job stuck past its timeout keeps its thread; the next sync job still gets one."""
    config = make_config(concurrency=1, timeout_grace="30s")
    async with AsyncClient(config, url) as client:
        stuck = await client.enqueue("tests.sample_handlers.sync_sleep", 1.5, timeout=0.1)
        after = await client.enqueue("tests.sample_handlers.add", 1, 2, timeout=1)
        await drain(config, url)
        assert (await client.get_job(stuck.id)).error == "JobTimeout: job exceeded its timeout of 0.1s"
        assert await client.result(after.id, timeout=1) == 3


async def test_one_slot_serves_several_queues(make_config, url, r):
    """With concurrency 1, a fetcher blocked on an empty queue does not hold the slot."""
    config = make_config(concurrency=1, queues=["a", "b"])
    async with running(new_worker(config, url), r), AsyncClient(config, url) as client:
        job = await client.enqueue("tests.sample_handlers.add", 2, 2, queue="b")
        assert await client.result(job.id, timeout=5) == 4


async def test_worker_survives_its_connections_being_killed(config, url, client, r):
    """CLIENT KILL drops every connection mid-run: the worker reconnects and finishes every job."""
    async with running(new_worker(config, url), r):
        first = [await client.enqueue("tests.sample_handlers.async_sleep", 0.05) for _ in range(20)]
        await async_wait_until(_status_count(client, first, Status.COMPLETED, 5), timeout=10, message="first jobs")
        r.client_kill_filter(_type="normal", skipme=True)
        second = [await client.enqueue("tests.sample_handlers.add", i, 1) for i in range(20)]
        results = [await client.result(j.id, timeout=15) for j in second]
        assert results == [i + 1 for i in range(20)]
        for job in first:
            assert await client.result(job.id, timeout=15) == 0.05


async def test_lost_claim_reply_is_reconciled(config, url, client, r):
    """An id moved into the worker's landing list without the worker knowing is still run."""
    worker = new_worker(config, url)
    keys = Keys(config.key_prefix)
    job = await client.enqueue("tests.sample_handlers.add", 7, 7)
    # As if the server executed BLMOVE but the reply was lost on the way back:
    r.lmove(keys.queue("default"), keys.active("default", worker.worker_id), "RIGHT", "LEFT")
    async with running(worker, r):
        await worker.fetcher._reconcile()
        assert await client.result(job.id, timeout=5) == 14


async def test_stale_claim_landing_later_is_found_by_periodic_reconcile(config, url, client, r, monkeypatch):
    """A claim that reaches the server after its client gave up moves an id nobody waits for."""
    monkeypatch.setattr("pool.worker.fetcher.RECONCILE_INTERVAL_S", 0.3)
    worker = new_worker(config, url)
    keys = Keys(config.key_prefix)
    async with running(worker, r):
        worker.fetcher._lost()  # the client gave up on a claim (an error): it may land later
        # enqueue and move in one MULTI, so the worker's own BLMOVE cannot take the job first
        with r.pipeline(transaction=True) as pipe:
            fields = ["id", "stale", "handler", "tests.sample_handlers.add", "queue", "default",
                      "args", "[5,6]", "kwargs", "{}", "status", "queued", "attempts", 0, "created_ms", 1]
            pipe.hset(keys.job("default", "stale"), mapping=dict(zip(fields[::2], fields[1::2], strict=True)))
            pipe.lpush(keys.active("default", worker.worker_id), "stale")
            pipe.execute()
        assert await client.result("stale", timeout=5) == 11


async def test_an_id_left_landing_is_run_by_the_watcher_s_next_claim_not_the_next_reconcile(
        make_config, url, r, monkeypatch):
    """A watcher's BLMOVE that times out sends a claim that starts an id left in the landing list:
    the worker runs what that reply holds instead of leaving it to the periodic reconcile."""
    config = make_config(queues=["default", "other"], shared_wait_from=0)  # (no watchers in shared wait)
    monkeypatch.setattr("pool.worker.fetcher.RECONCILE_INTERVAL_S", 60)
    worker = new_worker(config, url)
    keys = Keys(config.key_prefix)
    async with running(worker, r), AsyncClient(config, url) as client:
        with r.pipeline(transaction=True) as pipe:
            fields = ["id", "left", "handler", "tests.sample_handlers.add", "queue", "default",
                      "args", "[2,3]", "kwargs", "{}", "status", "queued", "attempts", 0, "created_ms", 1]
            pipe.hset(keys.job("default", "left"), mapping=dict(zip(fields[::2], fields[1::2], strict=True)))
            pipe.lpush(keys.active("default", worker.worker_id), "left")
            pipe.execute()
        assert await client.result("left", timeout=10) == 5  # a BLMOVE times out within 2 s


async def test_max_jobs_per_process_recycles_the_worker(make_config, url, r):
    config = make_config(concurrency=1, max_jobs_per_process=3)
    async with AsyncClient(config, url) as client:
        for i in range(5):
            await client.enqueue("tests.sample_handlers.add", i, 0)
        worker = new_worker(config, url)
        await asyncio.wait_for(worker.run(), 10)  # stops by itself
    assert worker.exit_code == ExitCode.RECYCLE
    assert worker.recycle_reason == "ran 3 jobs (max_jobs_per_process)"
    assert worker.done_count == 3
    assert r.llen(Keys(config.key_prefix).queue("default")) == 2


async def test_max_jobs_per_process_counts_a_rejected_record(make_config, url, r):
    """A job that never reaches its handler (a corrupt record) still uses up one of the starts."""
    config = make_config(concurrency=1, max_jobs_per_process=2)
    keys = Keys(config.key_prefix)
    async with AsyncClient(config, url) as client:
        await client.enqueue("tests.sample_handlers.add", 1, 2)
        corrupt = await client.enqueue("tests.sample_handlers.add", 1, 2)  # the last start
        r.hset(keys.job("default", corrupt.id), "args", "{not json")
        for i in range(2):
            await client.enqueue("tests.sample_handlers.add", i, 0)
        worker = new_worker(config, url)
        await asyncio.wait_for(worker.run(), 10)  # stops by itself
    assert worker.exit_code == ExitCode.RECYCLE
    assert (worker.done_count, worker.failed_count) == (1, 1)
    assert r.llen(keys.queue("default")) == 2


async def test_max_memory_per_process_recycles_the_worker(make_config, url):
    config = make_config(max_memory_per_process=1024)  # any real process is larger
    worker = new_worker(config, url)
    await asyncio.wait_for(worker.run(), 10)
    assert worker.exit_code == ExitCode.RECYCLE
    assert "over max_memory_per_process" in worker.recycle_reason


async def test_thread_stuck_past_timeout_and_grace_recycles_the_worker(make_config, url):
    config = make_config(timeout_grace="200ms")
    worker = new_worker(config, url)
    task = asyncio.create_task(worker.run())
    async with AsyncClient(config, url) as client:
        job = await client.enqueue("tests.sample_handlers.sync_sleep", 1.5, timeout=0.1)
        await asyncio.wait_for(task, 10)  # the worker recycles itself
        assert (await client.get_job(job.id)).error == "JobTimeout: job exceeded its timeout of 0.1s"
    assert worker.exit_code == ExitCode.RECYCLE
    assert "cannot be cancelled" in worker.recycle_reason


async def test_cancel_request_for_a_claimed_job_not_yet_started_is_kept(config, url, client):
    """A request that arrives before its job starts (waiting for a slot) cancels it as it starts."""
    worker = new_worker(config, url, burst=True)
    job = await client.enqueue("tests.sample_handlers.add", 1, 1)
    worker._cancel_running([job.id])  # as the heartbeat would, before the job was started
    await asyncio.wait_for(worker.run(), 10)
    cancelled = await client.get_job(job.id)
    assert (cancelled.status, cancelled.error) == (Status.CANCELLED, "Cancelled: cancelled while running")


async def test_handler_raising_cancelled_error_fails_its_job(client, url):
    job = await run_one(client, url, "tests.sample_handlers.raise_cancelled")
    assert job.status is Status.DEAD
    assert job.error == "CancelledError: the handler raised asyncio.CancelledError"


async def test_cancelled_thread_job_that_keeps_running_recycles_the_worker(make_config, url, r, tmp_path):
    """A plain function cannot be stopped: its thread is abandoned and watched like a timeout."""
    config = make_config(timeout_grace="300ms")
    worker = new_worker(config, url)
    task = asyncio.create_task(worker.run())
    started = tmp_path / "started"
    async with AsyncClient(config, url) as client:
        job = await client.enqueue("tests.sample_handlers.touch_then_block", str(started), 2)
        await async_wait_until(_exists(started), timeout=5)
        worker._cancel_running([job.id])
        await asyncio.wait_for(task, 10)  # recycles itself
        assert (await client.get_job(job.id)).status is Status.CANCELLED
    assert "cannot be cancelled" in worker.recycle_reason


def _exists(path):
    async def check() -> bool:
        return path.exists()
    return check


def _status_count(client, jobs, status, count):
    async def check() -> bool:
        found = [await client.get_job(j.id) for j in jobs]
        return sum(1 for j in found if j.status is status) >= count
    return check


def test_handlers_never_run_on_the_event_loop_thread():
    assert threading.current_thread() is threading.main_thread()


async def test_acks_of_jobs_finishing_together_share_round_trips(make_config, url, r):
    config = make_config(concurrency=40)
    async with AsyncClient(config, url) as client:
        # 40 quick jobs waiting before the worker starts: claimed together, finished together
        jobs = [await client.enqueue("tests.sample_handlers.async_add", i, 1) for i in range(40)]
        async with running(new_worker(config, url), r) as worker:
            results = [await client.result(job.id, timeout=10) for job in jobs]
            assert results == [i + 1 for i in range(40)]
            # 40 acks, each its own ack.lua call, in a few round trips
            assert worker.acks.acks == 40
            assert worker.acks.batches <= 4, worker.acks.batches


async def test_stalled_acks_stop_claiming_at_twice_the_concurrency(make_config, url, r):
    """Outcomes waiting for Redis free their slots, but only so far: a process whose acks stall
    holds at most 2 x concurrency jobs, so a kill then runs at most that many again."""
    config = make_config(concurrency=2)
    keys = Keys(config.key_prefix)
    attempts, cut = [], asyncio.Event()

    def ack_path_of(worker):
        send = worker.acks._send

        async def cuttable(by_queue):  # while cut, the ack path alone has lost Redis
            if cut.is_set():
                attempts.append(by_queue)
                raise ConnectionError("ack path cut")
            return await send(by_queue)
        return cuttable

    async with AsyncClient(config, url) as client, running(new_worker(config, url), r) as worker:
        worker.acks._send = ack_path_of(worker)
        cut.set()

        async def stalled() -> bool:
            return len(worker.slots.acking) == 4 and len(attempts) >= 3

        try:
            jobs = [await client.enqueue("tests.sample_handlers.async_add", i, 1) for i in range(20)]
            await async_wait_until(stalled, timeout=10, message="4 outcomes waiting and their ack retried")
            assert r.zcard(keys.running("default", worker.worker_id)) == 4
            assert r.llen(keys.queue("default")) == 16
        finally:
            cut.clear()
        results = [await client.result(job.id, timeout=10) for job in jobs]
    assert results == [i + 1 for i in range(20)]
