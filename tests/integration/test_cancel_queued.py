"""Cancelling a queued job: finished at once, its id left in the queue (marked stale) and dropped
by whoever meets it, so that cancel costs the same however deep the queue is."""

from __future__ import annotations

import pytest

from pool import AsyncClient, JobCancelled, Status
from pool.keys import Keys
from pool.status import snapshot
from tests.conftest import pool_of

W = "host:1:abc"


def enqueue(scripts, *ids, due_ms=0, now=1000):
    jobs = [(i, due_ms, ["id", i, "handler", "m.f", "queue", "q", "status", "queued", "attempts", 0]) for i in ids]
    return scripts.enqueue("q", jobs, now)


def ids_of(reply):
    return [dict(zip(c[::2], c[1::2], strict=True)).get(b"id") for c in reply[1]]


def cancel(scripts, job_id, now=9000):
    return scripts.cancel("q", job_id, now, 60_000, None)


def expire(r, keys, job_id):
    """As the end of the cancelled job's result TTL does."""
    r.delete(keys.job("q", job_id), keys.done("q", job_id))


def test_a_job_cancelled_mid_queue_never_starts_and_its_slot_goes_to_the_next(r, keys, scripts):
    enqueue(scripts, "a", "b", "c", "d", "e")  # a starts first
    assert [cancel(scripts, job_id) for job_id in ("b", "c")] == [1, 1]
    assert r.hget(keys.job("q", "b"), "status") == b"cancelled"  # at once, not when reached
    assert r.lrange(keys.done("q", "b"), 0, -1) == [b"cancelled"]
    assert ids_of(scripts.claim("q", W, 9001, 3, 0, rate=(3, 60_000))) == [b"a", b"d", b"e"]
    assert r.zcard(keys.rate("q")) == 3  # the dropped ids took no room in the rate window
    assert not r.exists(keys.queue("q"), keys.stale("q"))
    assert sorted(r.zrange(keys.running("q", W), 0, -1)) == [b"a", b"d", b"e"]
    assert (r.hget(keys.job("q", "b"), "status"), r.hget(keys.stats("q"), "cancelled")) == (b"cancelled", b"2")


def test_a_claim_drops_at_most_a_thousand_stale_ids_and_the_next_goes_on(r, keys, scripts):
    ids = [f"j{i}" for i in range(1003)]
    enqueue(scripts, *ids)
    for job_id in ids[1:-1]:
        assert cancel(scripts, job_id) == 1
    assert ids_of(scripts.claim("q", W, 9001, 2, 0)) == [b"j0"]  # then 1,000 stale ids: the call ends
    assert ids_of(scripts.claim("q", W, 9002, 2, 0)) == [b"j1002"]
    assert r.hget(keys.job("q", "j1"), "status") == b"cancelled"


@pytest.mark.parametrize("head", [True, False], ids=["blmove-and-claim", "blmove-then-claim"])
def test_a_job_cancelled_after_a_blmove_moved_it_is_cancelled_at_once_and_never_starts(r, keys, scripts, head):
    enqueue(scripts, "a", "b")
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")  # the watcher's BLMOVE took 'a'
    assert cancel(scripts, "a") == 1  # cancelled, not only requested
    assert r.hget(keys.job("q", "a"), "status") == b"cancelled"
    moved = {"head": True} if head else {"moved_id": "a"}
    assert ids_of(scripts.claim("q", W, 9001, 0, 0, **moved)) == []
    assert r.llen(keys.active("q", W)) == 0
    assert ids_of(scripts.claim("q", W, 9002, 1, 0)) == [b"b"]
    assert r.hget(keys.job("q", "a"), "status") == b"cancelled"


def test_a_stale_id_handed_back_or_requeued_is_dropped_not_put_back(r, keys, scripts):
    enqueue(scripts, "a", "b", "c")
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")  # 'a': BLMOVE, every slot busy
    r.lmove(keys.queue("q"), keys.active("q", "other:2:x"), "RIGHT", "LEFT")  # 'b', then its worker died
    assert cancel(scripts, "a") == cancel(scripts, "b") == 1
    assert scripts.handback("q", W, "a") == 1
    assert scripts.requeue("q", "other:2:x", "died", 5, 9001) == [0, 0]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"c"]
    assert {r.hget(keys.job("q", i), "status") for i in ("a", "b")} == {b"cancelled"}  # not 'queued' again


def test_an_id_enqueued_again_after_its_cancelled_record_expired_runs_once(r, keys, scripts):
    enqueue(scripts, "x", "a", "y")
    assert cancel(scripts, "a") == 1
    expire(r, keys, "a")
    assert enqueue(scripts, "a", now=9500) == [1]  # a new job under the same id
    assert r.lrange(keys.queue("q"), 0, -1).count(b"a") == 1  # it took over the stale entry
    claimed = ids_of(scripts.claim("q", W, 9600, 5, 0))
    assert sorted(claimed) == [b"a", b"x", b"y"]
    assert r.hget(keys.job("q", "a"), "attempts") == b"1"
    assert scripts.ack("q", W, "a", "completed", 9700, 60_000, ["result", b"1"]) == 1
    assert ids_of(scripts.claim("q", W, 9800, 5, 0)) == []
    assert not r.exists(keys.stale("q")) and r.lrange(keys.active("q", W), 0, -1).count(b"a") == 0


@pytest.mark.parametrize("reached", [True, False], ids=["stale-entry-reached-first", "promoted-first"])
def test_an_id_enqueued_again_with_a_delay_after_its_cancelled_record_expired_runs_once(r, keys, scripts, reached):
    enqueue(scripts, "x", "a", "y")
    assert cancel(scripts, "a") == 1
    expire(r, keys, "a")
    assert enqueue(scripts, "a", due_ms=20_000, now=9500) == [1]
    if reached:
        assert ids_of(scripts.claim("q", W, 10_000, 5, 0)) == [b"x", b"y"]  # the stale entry is dropped
        assert ids_of(scripts.claim("q", W, 20_000, 5, 0)) == [b"a"]  # promoted and started
    else:
        claimed = ids_of(scripts.claim("q", W, 20_000, 5, 0))  # promoted first: takes over the entry
        assert sorted(claimed) == [b"a", b"x", b"y"]
    assert r.hget(keys.job("q", "a"), "attempts") == b"1"
    assert ids_of(scripts.claim("q", W, 30_000, 5, 0)) == []
    assert not r.exists(keys.queue("q"), keys.stale("q"))


def test_a_dead_job_sent_back_or_a_schedule_tick_under_a_stale_id_gets_one_entry(r, keys, scripts):
    enqueue(scripts, "a", "tick", "b")
    assert cancel(scripts, "tick") == 1
    expire(r, keys, "tick")
    assert scripts.fire("q", "nightly", 1, 9500, "tick", ["id", "tick", "handler", "m.f", "status", "queued"]) == 1
    assert r.lrange(keys.queue("q"), 0, -1).count(b"tick") == 1
    assert sorted(ids_of(scripts.claim("q", W, 9600, 5, 0))) == [b"a", b"b", b"tick"]


async def test_cancel_mid_queue_is_reported_at_once_and_left_out_of_counts_and_listings(make_config, url, r):
    config = make_config()
    async with AsyncClient(config, url) as client:
        jobs = [await client.enqueue("tests.sample_handlers.add", i, 1) for i in range(6)]
        middle = jobs[2]
        assert await client.cancel(middle.id) == "cancelled"
        assert (await client.get_job(middle.id)).status is Status.CANCELLED
        with pytest.raises(JobCancelled):
            await client.result(middle.id, timeout=5)
        page = await client.jobs(status="queued")
        assert [job.id for job in page.jobs] == [job.id for job in jobs if job is not middle]
        assert page.total == 5
        first, second = await client.jobs(status="queued", limit=5), await client.jobs(status="queued", offset=5, limit=5)
        assert (len(first.jobs), first.more, [job.id for job in second.jobs]) == (4, True, [jobs[5].id])
        cancelled = await client.jobs(status="cancelled")
        assert [job.id for job in cancelled.jobs] == [middle.id]
    assert r.llen(Keys(config.key_prefix).queue("default")) == 6  # its entry is still there
    assert snapshot(r, config, url)["queues"]["default"]["queued"] == 5


async def test_a_pool_never_runs_a_job_cancelled_while_it_waited(make_config, url, r, tmp_path):
    config = make_config(concurrency=2)
    async with AsyncClient(config, url) as client:
        marks = [tmp_path / f"ran-{i}" for i in range(8)]
        jobs = [await client.enqueue("tests.sample_handlers.touch_then_sleep", str(mark), 0) for mark in marks]
        for job in jobs[1:7:2]:
            assert await client.cancel(job.id) == "cancelled"
    async with pool_of(config, url, r) as client:
        for job in [job for i, job in enumerate(jobs) if i not in (1, 3, 5)]:
            assert (await client.wait(job.id, timeout=15)).status is Status.COMPLETED
    assert [i for i, mark in enumerate(marks) if not mark.exists()] == [1, 3, 5]
    keys = Keys(config.key_prefix)
    assert not r.exists(keys.queue("default"), keys.stale("default"))
