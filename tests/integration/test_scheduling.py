"""Delayed jobs, priorities and weights, unique ids, rate limits and schedules, against a real server."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from pool import AsyncClient, JobSpec, Status
from pool.errors import UsageError
from pool.keys import Keys
from pool.lua import PROMOTE_SLICE
from pool.testing import async_wait_until, drain
from pool.worker.scheduler import REFRESH_S
from tests.conftest import pool_of
from tests.integration.test_worker import new_worker, running


def blocked_blmoves(r) -> int:
    """How many connections of the test server sit in BLMOVE right now."""
    return sum(1 for client in r.client_list() if client.get("cmd") == "blmove")


async def job_record(client: AsyncClient, job_id: str, queue: str | None = None):
    job = await client.get_job(job_id, queue=queue)
    assert job is not None
    return job


# -- delayed jobs -------------------------------------------------------------------------------


async def test_delayed_job_waits_in_the_delayed_set_then_starts_on_time(make_config, url, r):
    config = make_config()
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.add", 1, 2, delay=0.4)
        assert job.status is Status.DELAYED
        stored = await job_record(client, job.id)
        assert stored.status is Status.DELAYED and stored.due_ms == job.due_ms
        assert r.zscore(Keys(config.key_prefix).delayed("default"), job.id) == job.due_ms
        assert await client.result(job.id, timeout=5) == 3
        done = await job_record(client, job.id)
    assert done.started_ms >= job.due_ms
    # The worker was idle, blocked in Redis: the enqueue's wake message re-armed the scheduler's
    # timer (without it the job would wait for the 5 s refresh).
    assert done.started_ms - job.due_ms < 1000


async def test_at_takes_an_aware_datetime_and_refuses_a_naive_one(make_config, url, r):
    config = make_config()
    async with pool_of(config, url, r) as client:
        at = datetime.now(UTC) + timedelta(milliseconds=300)
        job = await client.enqueue("tests.sample_handlers.add", 2, 2, at=at)
        assert job.due_ms == int(at.timestamp() * 1000)
        assert await client.result(job.id, timeout=5) == 4
        with pytest.raises(UsageError, match="timezone-aware"):
            await client.enqueue("tests.sample_handlers.add", 1, 1, at=datetime.now())
        with pytest.raises(UsageError, match="either delay or at"):
            await client.enqueue("tests.sample_handlers.add", 1, 1, delay=1, at=at)
        with pytest.raises(UsageError, match="delay must be"):
            await client.enqueue("tests.sample_handlers.add", 1, 1, delay=-1)


async def test_a_due_time_in_the_past_runs_at_once(make_config, url, r):
    config = make_config()
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("tests.sample_handlers.add", 1, 1, at=datetime.now(UTC) - timedelta(hours=1))
        assert job.status is Status.QUEUED
        assert await client.result(job.id, timeout=5) == 2


async def test_earlier_delay_enqueued_later_is_not_held_up_by_a_later_one(make_config, url, r):
    """The scheduler sleeps until the earliest due time it knows; a new earliest one re-arms it."""
    config = make_config()
    async with pool_of(config, url, r) as client:
        late = await client.enqueue("tests.sample_handlers.add", 0, 1, delay=60)
        soon = await client.enqueue("tests.sample_handlers.add", 0, 2, delay=0.3)
        assert await client.result(soon.id, timeout=5) == 2
        assert (await job_record(client, late.id)).status is Status.DELAYED


async def test_only_one_of_two_schedulers_promotes_each_job(make_config, url, r):
    """Two workers both running the scheduler: every delayed job runs exactly once."""
    config = make_config()
    first, second = new_worker(config, url), new_worker(config, url)
    async with running(first, r), running(second, r), AsyncClient(config, url) as client:
        jobs = [await client.enqueue("tests.sample_handlers.add", i, 0, delay=0.2 + i * 0.01) for i in range(20)]
        results = [await client.result(job.id, timeout=10) for job in jobs]
    assert results == list(range(20))
    assert first.done_count + second.done_count == 20
    stats = r.hgetall(Keys(config.key_prefix).stats("default"))
    assert int(stats[b"completed"]) == 20


class CountedPromotions:
    """Stands in for a scheduler's scripts (the worker's fetcher keeps its own): counts its promote calls."""

    def __init__(self, scripts):
        self.scripts = scripts
        self.promotions = 0

    def __getattr__(self, name):
        return getattr(self.scripts, name)

    def promote(self, *args, **kwargs):
        self.promotions += 1
        return self.scripts.promote(*args, **kwargs)


async def test_a_backlog_of_several_slices_due_at_once_is_promoted_at_once_and_runs(make_config, url, r, tmp_path):
    """The scheduler calls again while its reply says more are due, instead of waiting for its timer."""
    config = make_config(concurrency=1)
    keys = Keys(config.key_prefix)
    worker = new_worker(config, url)
    count = 2 * PROMOTE_SLICE + 7  # three slices
    async with running(worker, r), AsyncClient(config, url) as client:
        scripts = worker.scheduler.scripts = CountedPromotions(worker.scheduler.scripts)
        started, release = tmp_path / "started", tmp_path / "release"
        busy = await client.enqueue("tests.sample_handlers.start_then_wait", str(started), str(release))
        await async_wait_until(lambda: _async(started.exists()), message="the job holding the only slot")
        # Given the only slot busy (so no claim promotes anything), when jobs of three slices
        # fall due at one instant, then the scheduler moves them all well within its refresh period.
        at = datetime.now(UTC) + timedelta(milliseconds=300)
        jobs = await client.enqueue_many(JobSpec("tests.sample_handlers.add", (i, 1), at=at) for i in range(count))
        await async_wait_until(lambda: _async(r.zcard(keys.delayed("default")) == 0), timeout=REFRESH_S / 3,
                               message="the delayed set drained")
        assert r.llen(keys.queue("default")) == count and scripts.promotions >= 3
        release.touch()
        assert await client.result(busy.id, timeout=10)
        results = [await client.result(job.id, timeout=30) for job in jobs]
    assert results == [i + 1 for i in range(count)]


# -- several queues -----------------------------------------------------------------------------


def run_order(journal) -> list[str]:
    """The keys of journal() jobs in the order they started (one job slot: one at a time)."""
    return [line.split()[1] for line in journal.read_text().splitlines() if line.startswith("start")]


async def test_strict_priority_runs_every_high_job_before_any_low_one(make_config, url, tmp_path):
    config = make_config(queues=["high", "low"], concurrency=1)
    journal = str(tmp_path / "journal")
    async with AsyncClient(config, url) as client:
        for i in range(8):
            await client.enqueue("tests.sample_handlers.journal", journal, f"low{i}", queue="low")
        for i in range(8):
            await client.enqueue("tests.sample_handlers.journal", journal, f"high{i}", queue="high")
        await drain(config, url)
    assert run_order(tmp_path / "journal") == [f"high{i}" for i in range(8)] + [f"low{i}" for i in range(8)]


async def test_priority_holds_when_high_jobs_arrive_while_every_slot_is_busy(make_config, url, r, tmp_path):
    config = make_config(queues=["high", "low"], concurrency=1)
    release, journal = tmp_path / "release", str(tmp_path / "journal")
    async with pool_of(config, url, r) as client:
        blocker = await client.enqueue("tests.sample_handlers.wait_for_file", str(release), queue="low")
        await async_wait_until(lambda: _status_is(client, blocker.id, Status.ACTIVE), message="blocker running")
        jobs = [await client.enqueue("tests.sample_handlers.journal", journal, f"low{i}", queue="low") for i in range(5)]
        jobs += [await client.enqueue("tests.sample_handlers.journal", journal, f"high{i}", queue="high") for i in range(5)]
        release.write_text("go")
        for job in jobs:
            await client.result(job.id, timeout=10)
    assert run_order(tmp_path / "journal") == [f"high{i}" for i in range(5)] + [f"low{i}" for i in range(5)]


async def _status_is(client: AsyncClient, job_id: str, status: Status) -> bool:
    job = await client.get_job(job_id)
    return job is not None and job.status is status


async def test_weights_split_the_slots_between_busy_queues(make_config, url, tmp_path):
    config = make_config(queues=[{"name": "a", "weight": 3}, {"name": "b", "weight": 1}], concurrency=1)
    journal = str(tmp_path / "journal")
    async with AsyncClient(config, url) as client:
        for i in range(20):
            for queue in ("a", "b"):
                await client.enqueue("tests.sample_handlers.journal", journal, f"{queue}{i}", queue=queue)
        await drain(config, url)
    first = run_order(tmp_path / "journal")[:16]
    assert sum(1 for key in first if key.startswith("a")) == 12  # 3:1, one slot at a time
    assert [key for key in first if key.startswith("a")] == [f"a{i}" for i in range(12)]  # FIFO within


async def test_worker_blocked_on_three_empty_queues_wakes_on_a_push_to_the_third(make_config, url, r):
    # A heartbeat is one heartbeat.lua call per queue: a long interval keeps beats out of the
    # count of scripts below (the first one, at start, comes before the BLMOVEs block).
    config = make_config(queues=["a", "b", "c"], heartbeat_interval="30s", heartbeat_ttl="90s",
                         shared_wait_from=0)  # (the shared wait's own: tests/integration/test_shared_wait.py)
    keys = Keys(config.key_prefix)
    async with pool_of(config, url, r) as client:
        # Nothing to do: the worker blocks in Redis on all three queues.
        await async_wait_until(lambda: _async(blocked_blmoves(r) >= 3), message="three blocked BLMOVEs")
        scripts_before, blocks_before = _calls(r, "evalsha"), _calls(r, "blmove")
        # A whole block timeout passes (each watcher blocks again) with no claim of its own: no
        # polling. Each BLMOVE carries one claim.lua in its pipeline (it starts a job that arrives
        # in the same round trip), and that is all.
        await async_wait_until(lambda: _async(_calls(r, "blmove") >= blocks_before + 3), message="a block cycle")
        blocks, scripts = _calls(r, "blmove") - blocks_before, _calls(r, "evalsha") - scripts_before
        assert scripts <= blocks + 3  # (+3: the pipelined claims of the BLMOVEs still blocked)
        job = await client.enqueue("tests.sample_handlers.add", 3, 4, queue="c")
        assert await client.result(job.id, timeout=5) == 7
        record = await job_record(client, job.id, queue="c")
        assert record.started_ms - record.enqueued_ms < 500
        assert r.llen(keys.queue("c")) == 0


async def _async(value):
    return value


def _calls(r, command: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_job_arriving_while_every_slot_is_busy_goes_to_a_free_worker(make_config, url, r, tmp_path):
    """A watcher that receives a job with no free slot hands it back for another worker."""
    config = make_config(queues=["a", "b"], concurrency=1)
    release = tmp_path / "release"
    busy, free = new_worker(config, url), new_worker(config, url)
    async with running(busy, r), AsyncClient(config, url) as client:
        blocker = await client.enqueue("tests.sample_handlers.wait_for_file", str(release), queue="a")
        await async_wait_until(lambda: _status_is(client, blocker.id, Status.ACTIVE), message="blocker running")
        async with running(free, r):
            job = await client.enqueue("tests.sample_handlers.add", 1, 1, queue="b")
            assert await client.result(job.id, timeout=5) == 2
            assert (await job_record(client, job.id, queue="b")).worker == free.worker_id
            release.write_text("go")
            await client.result(blocker.id, timeout=5)


# -- unique jobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["queued", "delayed", "active"])
async def test_enqueueing_an_existing_job_id_returns_the_existing_job(make_config, url, r, tmp_path, state):
    config = make_config()
    keys = Keys(config.key_prefix)
    release = tmp_path / "release"
    options = {"delay": 60} if state == "delayed" else {}
    async with AsyncClient(config, url) as client:
        worker = new_worker(config, url)
        async with running(worker, r) if state == "active" else _nothing():
            first = await client.enqueue("tests.sample_handlers.wait_for_file", str(release), job_id="invoice-42", **options)
            if state == "active":
                await async_wait_until(lambda: _status_is(client, "invoice-42", Status.ACTIVE), message="active")
            second = await client.enqueue("tests.sample_handlers.add", 1, 2, job_id="invoice-42")
            assert second.id == first.id == "invoice-42"
            assert second.handler == "tests.sample_handlers.wait_for_file"  # the existing job, unchanged
            assert second.status.value == state
            assert second.created_ms == first.created_ms
            in_queue = r.lrange(keys.queue("default"), 0, -1).count(b"invoice-42")
            in_delayed = 1 if r.zscore(keys.delayed("default"), "invoice-42") is not None else 0
            assert in_queue + in_delayed == (0 if state == "active" else 1)
            release.write_text("done")
            if state == "active":
                assert await client.result("invoice-42", timeout=5) == "done"


class _nothing:
    async def __aenter__(self):
        return None

    async def __aexit__(self, *exc):
        return None


# -- rate limits --------------------------------------------------------------------------------


async def test_rate_limit_makes_jobs_wait_instead_of_failing(make_config, url, r):
    config = make_config(queues=[{"name": "default", "rate_limit": "3/500ms"}], concurrency=4)
    async with pool_of(config, url, r) as client:
        jobs = [await client.enqueue("tests.sample_handlers.add", i, 0) for i in range(9)]
        assert [await client.result(job.id, timeout=10) for job in jobs] == list(range(9))
        starts = sorted([(await job_record(client, job.id)).started_ms for job in jobs])
    # Never more than 3 starts in any 500 ms (a few ms of slack: the window is judged by the
    # server's clock, the start times are the worker's).
    assert all(starts[i + 3] - starts[i] >= 490 for i in range(len(starts) - 3)), starts


# -- schedules ----------------------------------------------------------------------------------


async def test_interval_schedule_enqueues_each_tick_once(make_config, url, r, tmp_path):
    journal = tmp_path / "journal"
    schedule = {"handler": "tests.sample_handlers.journal", "every": "200ms", "args": [str(journal), "tick"]}
    config = make_config(schedules={"beat": schedule})
    keys = Keys(config.key_prefix)
    first, second = new_worker(config, url), new_worker(config, url)  # two schedulers race
    async with running(first, r), running(second, r):
        await async_wait_until(lambda: _async(journal.exists() and journal.read_text().count("end tick") >= 4),
                               message="four ticks run")
    ids = [k.decode().rsplit(":", 1)[1] for k in r.scan_iter(keys.job("default", "beat@*"))]
    ticks = sorted(int(i.split("@")[1]) for i in ids)
    assert all(b - a == 200 for a, b in itertools.pairwise(ticks)), ticks  # none skipped
    assert journal.read_text().count("start tick") == len(ticks)  # each ran once
    assert int(r.hget(keys.schedule("default", "beat"), "last_ms")) == ticks[-1]


async def test_restart_catches_up_missed_ticks_when_asked(make_config, url, r):
    every = 1000
    for catch_up, expect_missed in ((True, 5), (False, 0)):
        now = int(datetime.now(UTC).timestamp() * 1000)
        last = (now // every - 5) * every  # five ticks missed since
        name = f"s{int(catch_up)}"
        schedule = {"handler": "tests.sample_handlers.add", "every": "1s", "args": [1, 1],
                    "catch_up": catch_up, "grace": "0s"}
        config = make_config(schedules={name: schedule})
        keys = Keys(config.key_prefix)
        r.hset(keys.schedule("default", name), "last_ms", last)
        def fired_ticks(k=keys, n=name) -> list[int]:
            return sorted(int(key.decode().rsplit("@", 1)[1]) for key in r.scan_iter(k.job("default", f"{n}@*")))

        async with pool_of(config, url, r):
            await async_wait_until(lambda t=now: _async(any(tick > t for tick in fired_ticks())),
                                   message="a tick after the restart", timeout=5)
        fired = fired_ticks()
        missed = [t for t in fired if t <= now]
        assert len(missed) == expect_missed, (catch_up, fired)
        if catch_up:
            assert missed == [last + every * i for i in range(1, 6)]


async def test_weights_hold_when_several_slots_are_free_at_once(make_config, url, tmp_path):
    config = make_config(queues=[{"name": "a", "weight": 3}, {"name": "b", "weight": 1}], concurrency=4)
    journal = str(tmp_path / "journal")
    async with AsyncClient(config, url) as client:
        for i in range(40):
            for queue in ("a", "b"):
                await client.enqueue("tests.sample_handlers.journal", journal, f"{queue}{i}", 5, queue=queue)
        await drain(config, url)
    first = run_order(tmp_path / "journal")[:40]
    assert 28 <= sum(1 for key in first if key.startswith("a")) <= 32  # 3:1 of 40 is 30


async def test_a_wake_message_arriving_during_a_promotion_is_not_lost(make_config, url, r):
    """The scheduler's claim reply (nothing delayed) is older than a due time learned meanwhile."""
    config = make_config()
    worker = new_worker(config, url)
    async with running(worker, r), AsyncClient(config, url) as client:
        scheduler = worker.scheduler
        late: list = []

        class CrossedScripts:  # the scheduler's scripts only; the worker's fetcher keeps its own
            def __init__(self, scripts):
                self.scripts = scripts

            def __getattr__(self, name):
                return getattr(self.scripts, name)

            async def promote(self, *args, **kwargs):
                reply = await self.scripts.promote(*args, **kwargs)
                if not late:  # the first promotion: a job is enqueued while its reply is on the way
                    late.append(await client.enqueue("tests.sample_handlers.add", 5, 5, delay=0.3))
                    await async_wait_until(lambda: _async("default" in scheduler._learned), message="wake message")
                return reply

        scheduler.scripts = CrossedScripts(scheduler.scripts)
        await client.enqueue("tests.sample_handlers.add", 1, 1, delay=0.05)  # triggers a promotion
        await async_wait_until(lambda: _async(bool(late)), message="the crossing enqueue")
        assert await client.result(late[0].id, timeout=5) == 10
        record = await job_record(client, late[0].id)
    assert record.started_ms - record.due_ms < 1000  # not left for the 5 s refresh


async def test_backup_scheduler_promotes_when_the_first_worker_is_down(make_config, url, r):
    config = make_config()
    backup = new_worker(config, url, scheduler=False)  # as worker-2 while worker-1 respawns
    async with running(backup, r), AsyncClient(config, url) as client:
        job = await client.enqueue("tests.sample_handlers.add", 2, 3, delay=0.1)
        assert await client.result(job.id, timeout=10) == 5
        record = await job_record(client, job.id)
    assert record.started_ms - record.due_ms >= 900  # a backup steps in a second late


async def test_many_schedules_and_queues_do_not_exhaust_the_connection_pool(make_config, url, r, caplog):
    schedules = {f"s{i}": {"handler": "tests.sample_handlers.add", "every": "500ms", "args": [i, 0]} for i in range(10)}
    config = make_config(queues=["a", "b"], concurrency=1, schedules=schedules)
    keys = Keys(config.key_prefix)
    async with pool_of(config, url, r):
        await async_wait_until(lambda: _async(r.hlen(keys.stats("a")) and int(r.hget(keys.stats("a"), "completed") or 0) >= 30),
                               message="30 scheduled jobs done", timeout=20)
    assert "Too many connections" not in caplog.text
    assert "lost Redis" not in caplog.text
