"""Every branch of every Lua script, against the real server."""

from __future__ import annotations

import threading

import pytest

from pool.keys import Keys
from pool.scripts import AlreadyReclaimed, JobNotActive, Scripts, WorkerAlive, check

W = "host:1:abc"


@pytest.fixture
def keys(prefix):
    return Keys(prefix)


@pytest.fixture
def scripts(r, keys):
    return Scripts(r, keys)


def enqueue(scripts, queue, *ids, now=1000):
    jobs = [(i, ["id", i, "handler", "m.f", "queue", queue, "status", "queued", "attempts", 0]) for i in ids]
    return scripts.enqueue(queue, jobs, now)


def test_enqueue_creates_hash_and_pushes_id(r, keys, scripts):
    assert enqueue(scripts, "q", "a", "b") == [1, 1]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"b", b"a"]  # LPUSH: oldest at the claim end
    assert r.hget(keys.job("q", "a"), "enqueued_ms") == b"1000"


def test_enqueue_of_existing_id_changes_nothing(r, keys, scripts):
    enqueue(scripts, "q", "a")
    r.hset(keys.job("q", "a"), "status", "active")
    assert enqueue(scripts, "q", "a", "c") == [0, 1]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"c", b"a"]
    assert r.hget(keys.job("q", "a"), "status") == b"active"


def test_claim_moves_up_to_k_in_fifo_order_and_marks_active(r, keys, scripts):
    enqueue(scripts, "q", "a", "b", "c")
    claimed = scripts.claim("q", W, 2000, 2)
    ids = [dict(zip(c[::2], c[1::2], strict=False))[b"id"] for c in claimed]
    assert ids == [b"a", b"b"]
    record = r.hgetall(keys.job("q", "a"))
    assert (record[b"status"], record[b"attempts"], record[b"worker"], record[b"started_ms"]) == (b"active", b"1", W.encode(), b"2000")
    assert r.lrange(keys.queue("q"), 0, -1) == [b"c"]
    assert set(r.lrange(keys.active("q", W), 0, -1)) == {b"a", b"b"}


def test_claim_on_empty_queue_returns_nothing(scripts):
    assert scripts.claim("q", W, 1, 5) == []


def test_claim_starts_an_id_already_moved_by_blmove(r, keys, scripts):
    enqueue(scripts, "q", "a", "b")
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")
    claimed = scripts.claim("q", W, 5, 0, moved_id="a")
    assert [dict(zip(c[::2], c[1::2], strict=False))[b"id"] for c in claimed] == [b"a"]
    assert r.hget(keys.job("q", "a"), "status") == b"active"
    assert r.llen(keys.queue("q")) == 1


def test_claim_drops_an_id_whose_record_is_gone(r, keys, scripts):
    r.lpush(keys.queue("q"), "ghost")
    claimed = scripts.claim("q", W, 5, 1)
    assert claimed == [[b"id", b"ghost", b"missing", b"1"]]
    assert r.llen(keys.active("q", W)) == 0


def test_ack_writes_outcome_and_releases_in_one_step(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1)
    assert scripts.ack("q", W, "a", "completed", 9000, 60_000, ["result", b"42"]) == 1
    record = r.hgetall(keys.job("q", "a"))
    assert (record[b"status"], record[b"result"], record[b"finished_ms"]) == (b"completed", b"42", b"9000")
    assert r.llen(keys.active("q", W)) == 0
    assert 59_000 < r.pttl(keys.job("q", "a")) <= 60_000
    assert r.lrange(keys.done("q", "a"), 0, -1) == [b"completed"]
    assert 59_000 < r.pttl(keys.done("q", "a")) <= 60_000
    assert r.hget(keys.stats("q"), "completed") == b"1"


def test_ack_uses_the_jobs_own_result_ttl(r, keys, scripts):
    enqueue(scripts, "q", "a")
    r.hset(keys.job("q", "a"), "result_ttl_ms", 5000)
    scripts.claim("q", W, 5, 1)
    scripts.ack("q", W, "a", "failed", 9000, 60_000, ["error", "E"])
    assert 4000 < r.pttl(keys.job("q", "a")) <= 5000
    assert r.hget(keys.stats("q"), "failed") == b"1"


def test_ack_retried_after_lost_reply_is_recognised(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1)
    scripts.ack("q", W, "a", "completed", 9000, 60_000, ["result", b"1"])
    assert scripts.ack("q", W, "a", "completed", 9001, 60_000, ["result", b"1"]) == 0
    assert r.hget(keys.stats("q"), "completed") == b"1"  # not counted twice


def test_ack_of_job_no_longer_active_writes_nothing(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1)
    scripts.requeue("q", W, "stop", 5, 1)
    code = scripts.ack("q", W, "a", "completed", 9000, 60_000, ["result", b"1"])
    assert code == -1
    with pytest.raises(JobNotActive):
        check("ack", code)
    assert r.hget(keys.job("q", "a"), "status") == b"queued"
    assert r.hget(keys.job("q", "a"), "result") is None


def ids_of(claimed):
    return [dict(zip(c[::2], c[1::2], strict=True))[b"id"] for c in claimed]


@pytest.mark.parametrize("mode", ["stop", "died"])
def test_requeue_puts_jobs_back_at_the_head_oldest_first(r, keys, scripts, mode):
    enqueue(scripts, "q", "a", "b", "c")
    scripts.claim("q", W, 5, 2)  # a, b active; c waiting
    enqueue(scripts, "q", "d")
    assert scripts.requeue("q", W, mode, 5, 1) == [2, 0]
    # Claim order after requeue: a, b (requeued first), then c, d.
    assert ids_of(scripts.claim("q", "other:2:x", 5, 10)) == [b"a", b"b", b"c", b"d"]
    assert r.llen(keys.active("q", W)) == 0


def test_requeue_of_empty_list_moves_nothing(scripts):
    assert scripts.requeue("q", W, "stop", 5, 1) == [0, 0]


def test_claim_counts_a_delivery_and_a_clean_stop_gives_it_back(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1)
    assert r.hget(keys.job("q", "a"), "deliveries") == b"1"
    scripts.requeue("q", W, "stop", 5, 1)
    assert r.hmget(keys.job("q", "a"), "deliveries", "status", "attempts") == [b"0", b"queued", b"1"]
    assert r.hget(keys.stats("q"), "reclaimed") is None


def test_death_keeps_the_delivery_and_is_counted(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1)
    scripts.requeue("q", W, "died", 5, 1)
    assert r.hget(keys.job("q", "a"), "deliveries") == b"1"
    assert r.hget(keys.stats("q"), "reclaimed") == b"1"


def test_poison_job_goes_to_the_dead_set_after_max_deliveries(r, keys, scripts):
    enqueue(scripts, "q", "poison", "innocent")
    # The innocent job shares the dying worker twice; the poison job kills it three times.
    for round_, count in enumerate([2, 2, 1]):
        scripts.claim("q", W, 5, count)
        requeued, buried = scripts.requeue("q", W, "died", 3, 7000 + round_)
    assert (requeued, buried) == (0, 1)
    assert r.zrange(keys.dead("q"), 0, -1, withscores=True) == [(b"poison", 7002.0)]
    record = r.hgetall(keys.job("q", "poison"))
    assert record[b"status"] == b"dead"
    assert record[b"error"] == (b"PoisonJob: delivered 3 times and its worker died each time before "
                                b"acknowledging it (max_deliveries is 3)")
    assert r.lrange(keys.done("q", "poison"), 0, -1) == [b"dead"]
    assert r.hget(keys.stats("q"), "dead") == b"1"
    assert r.lrange(keys.queue("q"), 0, -1) == [b"innocent"]
    assert r.hget(keys.job("q", "innocent"), "deliveries") == b"2"


def test_a_clean_stop_never_buries(r, keys, scripts):
    enqueue(scripts, "q", "a")
    r.hset(keys.job("q", "a"), "deliveries", 10)
    scripts.claim("q", W, 5, 1)
    assert scripts.requeue("q", W, "stop", 3, 1) == [1, 0]


def test_reclaim_refuses_a_live_worker(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1)
    r.sadd(keys.queue_workers("q"), W)
    r.set(keys.alive("q", W), "busy", px=10_000)
    code = scripts.requeue("q", W, "reclaim", 5, 1)
    assert code == -1
    with pytest.raises(WorkerAlive):
        check("requeue", code)
    assert r.llen(keys.active("q", W)) == 1


def test_reclaim_of_an_expired_worker_happens_once(r, keys, scripts):
    enqueue(scripts, "q", "a", "b")
    scripts.claim("q", W, 5, 2)
    r.sadd(keys.queue_workers("q"), W)  # registered, liveness key expired (never set here)
    assert scripts.requeue("q", W, "reclaim", 5, 1) == [2, 0]
    code = scripts.requeue("q", W, "reclaim", 5, 1)
    assert code == -2
    with pytest.raises(AlreadyReclaimed):
        check("requeue", code)
    assert not r.sismember(keys.queue_workers("q"), W)
    assert r.llen(keys.queue("q")) == 2


def test_concurrent_reclaimers_requeue_each_job_exactly_once(url, keys, r):
    """Eight clients reclaim the same dead worker at the same moment: one wins, jobs move once."""
    import redis as redis_module

    scripts = Scripts(r, keys)
    ids = [f"j{i}" for i in range(50)]
    enqueue(scripts, "q", *ids)
    scripts.claim("q", W, 5, 50)
    r.sadd(keys.queue_workers("q"), W)
    barrier = threading.Barrier(8)
    replies = []

    def reclaim() -> None:
        client = redis_module.Redis.from_url(url)
        own = Scripts(client, keys)
        barrier.wait()
        replies.append(own.requeue("q", W, "reclaim", 5, 1))
        client.close()

    threads = [threading.Thread(target=reclaim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(replies, key=str) == sorted([[50, 0]] + [-2] * 7, key=str)
    assert sorted(r.lrange(keys.queue("q"), 0, -1)) == sorted(i.encode() for i in ids)
    assert r.hget(keys.stats("q"), "reclaimed") == b"50"


def test_all_keys_of_a_queue_share_one_hash_tag(keys):
    tagged = [keys.queue("img"), keys.active("img", W), keys.job("img", "x"), keys.done("img", "x"),
              keys.stats("img"), keys.dead("img"), keys.queue_workers("img"), keys.alive("img", W)]
    assert all("{img}" in key for key in tagged)
