"""Every branch of every Lua script, against the real server."""

from __future__ import annotations

import threading

import orjson
import pytest

from pool.jobs import Job
from pool.lua import (
    PROMOTE_SLICE,
    Ack,
    AlreadyReclaimed,
    JobNotActive,
    Scripts,
    WorkerAlive,
    check,
    solo_threshold,
)

W = "host:1:abc"


def enqueue(scripts, queue, *ids, now=1000):
    jobs = [(i, 0, ["id", i, "handler", "m.f", "queue", queue, "status", "queued", "attempts", 0]) for i in ids]
    return scripts.enqueue(queue, jobs, now)


def test_enqueue_creates_hash_and_pushes_id(r, keys, scripts):
    assert enqueue(scripts, "q", "a", "b") == [1, 1]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"b", b"a"]  # LPUSH: oldest at the claim end
    assert r.hget(keys.job("q", "a"), "enqueued_ms") == b"1000"


def test_enqueue_of_existing_id_changes_nothing_and_answers_its_record(r, keys, scripts):
    enqueue(scripts, "q", "a")
    r.hset(keys.job("q", "a"), "status", "active")
    stored, created = enqueue(scripts, "q", "a", "c")
    assert created == 1
    assert dict(zip(stored[::2], stored[1::2], strict=True)) == r.hgetall(keys.job("q", "a"))
    assert r.lrange(keys.queue("q"), 0, -1) == [b"c", b"a"]
    assert r.hget(keys.job("q", "a"), "status") == b"active"


def test_claim_moves_up_to_k_in_fifo_order_and_marks_active(r, keys, scripts):
    enqueue(scripts, "q", "a", "b", "c")
    assert ids_of(scripts.claim("q", W, 2000, 2, 0)) == [b"a", b"b"]
    record = r.hgetall(keys.job("q", "a"))
    assert (record[b"status"], record[b"attempts"], record[b"worker"], record[b"started_ms"]) == (b"active", b"1", W.encode(), b"2000")
    assert r.lrange(keys.queue("q"), 0, -1) == [b"c"]
    assert r.zrange(keys.running("q", W), 0, -1, withscores=True) == [(b"a", 2000.0), (b"b", 2000 + 1 / 1024)]
    assert r.llen(keys.active("q", W)) == 0  # the landing list holds only moved, unstarted ids


def test_claim_on_empty_queue_returns_nothing(scripts):
    assert scripts.claim("q", W, 1, 5, 0) == [-1, [], 0]


def test_claim_starts_an_id_already_moved_by_blmove(r, keys, scripts):
    enqueue(scripts, "q", "a", "b")
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")
    assert ids_of(scripts.claim("q", W, 5, 0, 0, moved_id="a")) == [b"a"]
    assert r.hget(keys.job("q", "a"), "status") == b"active"
    assert r.llen(keys.queue("q")) == 1


def test_claim_drops_an_id_whose_record_is_gone(r, keys, scripts):
    r.lpush(keys.queue("q"), "ghost")
    assert records(scripts.claim("q", W, 5, 1, 0)) == [[b"id", b"ghost", b"missing", b"1"]]
    assert r.llen(keys.active("q", W)) == 0


def test_ack_writes_outcome_and_releases_in_one_step(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1, 0)
    assert scripts.ack("q", W, "a", "completed", 9000, 60_000, ["result", b"42"]) == 1
    record = r.hgetall(keys.job("q", "a"))
    assert (record[b"status"], record[b"result"], record[b"finished_ms"]) == (b"completed", b"42", b"9000")
    assert r.llen(keys.active("q", W)) == 0
    assert 59_000 < r.pttl(keys.job("q", "a")) <= 60_000
    assert r.lrange(keys.done("q", "a"), 0, -1) == [b"completed"]
    assert 59_000 < r.pttl(keys.done("q", "a")) <= 60_000
    assert r.hget(keys.stats("q"), "completed") == b"1"


def test_ack_keeps_a_finished_job_for_the_ttl_it_is_given(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1, 0)
    scripts.ack("q", W, "a", "failed", 9000, 5000, ["error", "E"])
    assert 4000 < r.pttl(keys.job("q", "a")) <= 5000
    assert 4000 < r.pttl(keys.done("q", "a")) <= 5000
    assert r.hget(keys.stats("q"), "failed") == b"1"


def test_one_ack_call_writes_each_outcome_and_counts_them_once(r, keys, scripts):
    """A batch: each ack is written as if alone, the totals and recent lists once for all."""
    enqueue(scripts, "q", "a", "b", "c", "d", "e")
    scripts.claim("q", W, 5, 5, 0)
    acks = [
        Ack("a", "completed", 9000, 60_000, ["result", b"1"]),
        Ack("b", "retrying", 9000, 60_000, ["error", "E"], due_ms=99_000, history=b'{"n":1}'),
        Ack("zz", "completed", 9000, 60_000, ["result", b"2"]),  # not active here: -1, nothing written
        Ack("c", "completed", 9001, 60_000, ["result", b"3"]),
        Ack("d", "dead", 9002, 50_000, ["error", "E"]),
        Ack("e", "failed", 9003, 60_000, ["error", "E"]),
    ]
    assert scripts.ack_many("q", W, acks) == [1, 1, -1, 1, 1, 1]
    assert r.lrange(keys.active("q", W), 0, -1) == []
    assert r.hgetall(keys.stats("q")) == {b"completed": b"2", b"retrying": b"1", b"dead": b"1", b"failed": b"1"}
    assert r.lrange(keys.recent("q", "completed"), 0, -1) == [b"c", b"a"]  # newest first
    assert r.lrange(keys.recent("q", "failed"), 0, -1) == [b"e"]
    assert r.zrange(keys.delayed("q"), 0, -1) == [b"b"] and r.zrange(keys.dead("q"), 0, -1) == [b"d"]
    assert r.hmget(keys.job("q", "c"), "status", "result", "finished_ms") == [b"completed", b"3", b"9001"]
    assert r.hmget(keys.job("q", "b"), "status", "due_ms", "failures", "history") == [
        b"retrying", b"99000", b"1", b'[{"n":1}]']
    assert not r.exists(keys.job("q", "zz")) and r.lrange(keys.done("q", "a"), 0, -1) == [b"completed"]
    # the whole batch again (a lost reply): nothing is written twice
    assert scripts.ack_many("q", W, acks) == [0, 0, -1, 0, 0, 0]
    assert r.hget(keys.stats("q"), "completed") == b"2"


def test_ack_clears_an_earlier_attempts_error_only_when_told(r, keys, scripts):
    enqueue(scripts, "q", "a", "b")
    scripts.claim("q", W, 5, 2, 0)
    r.hset(keys.job("q", "a"), mapping={"error": "old", "traceback": "T"})
    r.hset(keys.job("q", "b"), mapping={"error": "old", "traceback": "T"})
    scripts.ack("q", W, "a", "completed", 9000, 60_000, ["result", b"1"], clear=True)
    scripts.ack("q", W, "b", "completed", 9000, 60_000, ["result", b"1"])
    assert r.hmget(keys.job("q", "a"), "error", "traceback") == [None, None]
    assert r.hmget(keys.job("q", "b"), "error", "traceback") == [b"old", b"T"]  # the caller knew better


def test_ack_retried_after_lost_reply_is_recognised(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1, 0)
    scripts.ack("q", W, "a", "completed", 9000, 60_000, ["result", b"1"])
    assert scripts.ack("q", W, "a", "completed", 9001, 60_000, ["result", b"1"]) == 0
    assert r.hget(keys.stats("q"), "completed") == b"1"  # not counted twice


def test_ack_of_job_no_longer_active_writes_nothing(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1, 0)
    scripts.requeue("q", W, "stop", 5, 1)
    code = scripts.ack("q", W, "a", "completed", 9000, 60_000, ["result", b"1"])
    assert code == -1
    with pytest.raises(JobNotActive):
        check("ack", code)
    assert r.hget(keys.job("q", "a"), "status") == b"queued"
    assert r.hget(keys.job("q", "a"), "result") is None


def records(reply):
    """The claimed records of a claim.lua reply ([next_due_ms, claimed])."""
    return reply[1]


def ids_of(reply):
    return [dict(zip(c[::2], c[1::2], strict=True))[b"id"] for c in records(reply)]


@pytest.mark.parametrize("mode", ["stop", "died"])
def test_requeue_puts_jobs_back_at_the_head_oldest_first(r, keys, scripts, mode):
    enqueue(scripts, "q", "a", "b", "c")
    scripts.claim("q", W, 5, 2, 0)  # a, b active; c waiting
    enqueue(scripts, "q", "d")
    assert scripts.requeue("q", W, mode, 5, 1) == [2, 0]
    # Claim order after requeue: a, b (requeued first), then c, d. After a death a and b are
    # redelivered jobs, which are claimed one at a time.
    order: list[bytes] = []
    while batch := ids_of(scripts.claim("q", "other:2:x", 5, 10, 0)):
        order += batch
        r.delete(keys.active("q", "other:2:x"))  # as if acked, without touching the records
    assert order == [b"a", b"b", b"c", b"d"]
    assert r.llen(keys.active("q", W)) == 0


def test_requeue_of_empty_list_moves_nothing(scripts):
    assert scripts.requeue("q", W, "stop", 5, 1) == [0, 0]


def test_claim_counts_a_delivery_and_a_clean_stop_gives_it_back(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1, 0)
    assert r.hget(keys.job("q", "a"), "deliveries") == b"1"
    scripts.requeue("q", W, "stop", 5, 1)
    assert r.hmget(keys.job("q", "a"), "deliveries", "status", "attempts") == [b"0", b"queued", b"1"]
    assert r.hget(keys.stats("q"), "reclaimed") is None


def test_death_keeps_the_delivery_and_is_counted(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1, 0)
    scripts.requeue("q", W, "died", 5, 1)
    assert r.hget(keys.job("q", "a"), "deliveries") == b"1"
    assert r.hget(keys.stats("q"), "reclaimed") == b"1"


def test_poison_job_goes_to_the_dead_set_after_max_deliveries(r, keys, scripts):
    enqueue(scripts, "q", "poison")
    for round_ in range(3):
        assert ids_of(scripts.claim("q", W, 5, 1, 0)) == [b"poison"]
        requeued, buried = scripts.requeue("q", W, "died", 3, 7000 + round_)
    assert (requeued, buried) == (0, 1)
    assert r.zrange(keys.dead("q"), 0, -1, withscores=True) == [(b"poison", 7002.0)]
    record = r.hgetall(keys.job("q", "poison"))
    assert record[b"status"] == b"dead"
    assert record[b"error"] == (b"PoisonJob: delivered 3 times and its worker died each time before "
                                b"acknowledging it (max_deliveries is 3); how its workers died: died (3 times)")
    assert r.lrange(keys.done("q", "poison"), 0, -1) == [b"dead"]
    assert r.hget(keys.stats("q"), "dead") == b"1"
    assert r.llen(keys.queue("q")) == 0


def test_a_poison_job_buried_by_requeue_gets_the_dead_letter_ttl_and_counts_against_dead_max(r, keys, scripts):
    """requeue.lua buries as ack.lua does: old dead ids age out, and the set keeps dead_max."""
    active_job(scripts, "old")
    scripts.ack("q", W, "old", "dead", 1000, 5000, ["error", "E"])  # buried longer ago than the TTL
    for i in (1, 2):
        active_job(scripts, f"d{i}")
        scripts.ack("q", W, f"d{i}", "dead", 4000 + i, 5000, ["error", "E"])  # 'old' is still young
    enqueue(scripts, "q", "poison")
    assert ids_of(scripts.claim("q", W, 5, 1, 0)) == [b"poison"]
    assert scripts.requeue("q", W, "died", 1, 7000, dead_ttl_ms=5000, dead_max=2) == [0, 1]
    assert r.zrange(keys.dead("q"), 0, -1) == [b"d2", b"poison"]  # 'old' aged out, 'd1' trimmed
    assert not r.exists(keys.job("q", "d1")) and not r.exists(keys.done("q", "d1"))
    assert 4000 < r.pttl(keys.job("q", "poison")) <= 5000
    assert 4000 < r.pttl(keys.done("q", "poison")) <= 5000


def test_a_poison_job_keeps_no_traceback_of_an_earlier_attempt(r, keys, scripts):
    """Its error is the death's; an earlier failed attempt's traceback would be shown as the last one's."""
    enqueue(scripts, "q", "poison")
    r.hset(keys.job("q", "poison"), mapping={"traceback": "Traceback of attempt 1", "deliveries": 1})
    assert ids_of(scripts.claim("q", W, 5, 1, 0)) == [b"poison"]
    assert scripts.requeue("q", W, "died", 2, 7000) == [0, 1]
    record = r.hgetall(keys.job("q", "poison"))
    assert record[b"status"] == b"dead" and record[b"error"].startswith(b"PoisonJob: ")
    assert b"traceback" not in record


def test_a_poison_job_names_how_its_workers_died(r, keys, scripts):
    enqueue(scripts, "q", "poison")
    causes = ["killed by SIGSEGV", "exited with code 3", "killed by SIGSEGV"]
    for cause in causes:
        scripts.claim("q", W, 5, 1, 0)
        scripts.requeue("q", W, "died", 3, 7000, cause=cause)
    assert r.hget(keys.job("q", "poison"), "error").endswith(
        b"how its workers died: killed by SIGSEGV (2 times), exited with code 3")


def test_a_reclaimed_worker_s_cause_is_recorded_on_its_started_jobs(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1, 0)
    r.sadd(keys.queue_workers("q"), W)  # registered, its liveness key expired
    assert scripts.requeue("q", W, "reclaim", 5, 1, cause="stopped heartbeating") == [1, 0]
    assert r.hget(keys.job("q", "a"), "deaths") == b'["stopped heartbeating"]'


def test_deaths_kept_on_a_job_are_only_those_since_its_last_ack(r, keys, scripts):
    """An ack resets deliveries to 0: deaths before it say nothing about the next burial."""
    enqueue(scripts, "q", "a")
    for cause in ("killed by SIGSEGV", "killed by SIGBUS"):
        scripts.claim("q", W, 5, 1, 0)
        scripts.requeue("q", W, "died", 5, 1, cause=cause)
    scripts.claim("q", W, 5, 1, 0)
    scripts.ack("q", W, "a", "retrying", 6, 1000, ["error", "E"], due_ms=7)
    r.zrem(keys.delayed("q"), "a")
    r.rpush(keys.queue("q"), "a")
    scripts.claim("q", W, 8, 1, 0)
    scripts.requeue("q", W, "died", 5, 9, cause="exited with code 1")
    assert r.hget(keys.job("q", "a"), "deaths") == b'["exited with code 1"]'


def test_an_id_moved_but_never_claimed_is_requeued_not_buried(r, keys, scripts):
    """A BLMOVE moved it, then the worker died before claim.lua started it: no delivery of it."""
    enqueue(scripts, "q", "a")
    r.hset(keys.job("q", "a"), "deliveries", 3)
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")
    assert scripts.requeue("q", W, "died", 3, 1, cause="killed by SIGKILL") == [1, 0]
    assert r.hmget(keys.job("q", "a"), "status", "deaths") == [b"queued", None]


def test_a_clean_stop_never_buries(r, keys, scripts):
    enqueue(scripts, "q", "a")
    r.hset(keys.job("q", "a"), "deliveries", 10)
    scripts.claim("q", W, 5, 1, 0)
    assert scripts.requeue("q", W, "stop", 3, 1) == [1, 0]


def test_reclaim_refuses_a_live_worker(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1, 0)
    r.sadd(keys.queue_workers("q"), W)
    r.set(keys.alive("q", W), "busy", px=10_000)
    code = scripts.requeue("q", W, "reclaim", 5, 1)
    assert code == -1
    with pytest.raises(WorkerAlive):
        check("requeue", code)
    assert r.zcard(keys.running("q", W)) == 1


def test_reclaim_of_an_expired_worker_happens_once(r, keys, scripts):
    enqueue(scripts, "q", "a", "b")
    scripts.claim("q", W, 5, 2, 0)
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
    scripts.claim("q", W, 5, 50, 0)
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


def redeliver(r, keys, *ids):
    """Make jobs suspects: workers died holding them twice (solo_at is 2 by default)."""
    for job_id in ids:
        r.hset(keys.job("q", job_id), "deliveries", 2)


def test_solo_threshold_stays_below_max_deliveries():
    assert [solo_threshold(m) for m in (1, 2, 3, 5, 50)] == [1, 1, 2, 2, 2]


def test_one_death_does_not_make_a_job_a_suspect(r, keys, scripts):
    enqueue(scripts, "q", "a", "b")
    scripts.claim("q", W, 1, 2, 0)
    scripts.requeue("q", W, "died", 5, 1)
    assert ids_of(scripts.claim("q", W, 2, 2, 1)) == [b"a", b"b"]  # together, even in a busy process


def test_redelivered_job_is_claimed_alone_by_an_idle_process(r, keys, scripts):
    enqueue(scripts, "q", "again", "fresh")
    redeliver(r, keys, "again")
    claimed = records(scripts.claim("q", W, 5, 5, 0))
    assert dict(zip(claimed[0][::2], claimed[0][1::2], strict=True))[b"id"] == b"again"
    assert dict(zip(claimed[0][::2], claimed[0][1::2], strict=True))[b"solo"] == b"1"
    assert r.lrange(keys.queue("q"), 0, -1) == [b"fresh"]


def test_busy_process_does_not_claim_a_redelivered_job(r, keys, scripts):
    enqueue(scripts, "q", "again")
    redeliver(r, keys, "again")
    assert records(scripts.claim("q", W, 5, 5, 3)) == [[b"solo_wait", b"1"]]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"again"]


def test_claim_stops_before_a_redelivered_job(r, keys, scripts):
    enqueue(scripts, "q", "fresh", "again")
    redeliver(r, keys, "again")
    assert ids_of(scripts.claim("q", W, 5, 5, 0)) == [b"fresh"]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"again"]


def test_redelivered_job_moved_by_blmove_into_a_busy_process_goes_back(r, keys, scripts):
    enqueue(scripts, "q", "again", "later")
    redeliver(r, keys, "again")
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")
    assert records(scripts.claim("q", W, 5, 0, 2, moved_id="again")) == [[b"solo_wait", b"1"]]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"later", b"again"]  # back at the head
    assert r.llen(keys.active("q", W)) == 0


def test_a_late_claim_never_resurrects_a_finished_job(r, keys, scripts):
    """A claim held up by a partition arrives after the job was started again and acked."""
    active_job(scripts)
    scripts.ack("q", W, "a", "completed", 9000, 60_000, ["result", b"1"])
    assert records(scripts.claim("q", W, 9001, 0, 0, moved_id="a")) == []
    assert r.hget(keys.job("q", "a"), "status") == b"completed"


def test_reconciling_a_started_job_does_not_count_it_twice(r, keys, scripts):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 5, 1, 0)
    again = scripts.claim("q", W, 6, 0, 1, moved_id="a")
    assert ids_of(again) == [b"a"]
    assert r.hmget(keys.job("q", "a"), "attempts", "deliveries") == [b"1", b"1"]


def test_innocent_batch_mates_of_a_poison_job_are_not_buried(r, keys, scripts):
    """A poison job kills its worker twice with 3 innocent jobs beside it, then keeps killing alone."""
    enqueue(scripts, "q", "poison", "i1", "i2", "i3")
    for _ in range(2):  # the requeued batch is claimed together again: all four counted twice
        assert ids_of(scripts.claim("q", W, 1, 4, 0)) == [b"poison", b"i1", b"i2", b"i3"]
        scripts.requeue("q", W, "died", 3, 1)
    # now suspects, each runs alone; the poison one kills its worker a third time
    assert ids_of(scripts.claim("q", W, 2, 4, 0)) == [b"poison"]
    scripts.requeue("q", W, "died", 3, 2)
    assert r.zrange(keys.dead("q"), 0, -1) == [b"poison"]
    for innocent in (b"i1", b"i2", b"i3"):  # each runs alone and completes
        assert ids_of(scripts.claim("q", W, 3, 4, 0)) == [innocent]
        scripts.ack("q", W, innocent.decode(), "completed", 4, 1000, ["result", b"1"])
    assert r.hget(keys.stats("q"), "completed") == b"3"


def active_job(scripts, job_id="a"):
    enqueue(scripts, "q", job_id)
    scripts.claim("q", W, 5, 1, 0)


def test_ack_retrying_parks_the_job_in_the_delayed_set_with_its_history(r, keys, scripts):
    active_job(scripts)
    entry = b'{"attempt":1,"error":"E1"}'
    assert scripts.ack("q", W, "a", "retrying", 9000, 60_000, ["error", "E1"], due_ms=12_000, history=entry) == 1
    assert r.zrange(keys.delayed("q"), 0, -1, withscores=True) == [(b"a", 12000.0)]
    assert r.hmget(keys.job("q", "a"), "status", "due_ms", "error") == [b"retrying", b"12000", b"E1"]
    assert r.pttl(keys.job("q", "a")) == -1  # no TTL while waiting
    assert not r.exists(keys.done("q", "a"))  # waiters keep waiting
    assert r.hget(keys.job("q", "a"), "history") == b"[" + entry + b"]"


def test_history_grows_by_one_entry_per_failed_attempt(r, keys, scripts):
    active_job(scripts)
    scripts.ack("q", W, "a", "retrying", 1, 1000, ["error", "E1"], due_ms=0, history=b'{"n":1}')
    scripts.claim("q", W, 5, 1, 0)
    scripts.ack("q", W, "a", "dead", 2, 1000, ["error", "E2"], history=b'{"n":2}')
    assert r.hget(keys.job("q", "a"), "history") == b'[{"n":1},{"n":2}]'


HISTORY_MAX = 20  # lua/includes/history.lua
TRICKY = 'KeyError: \'}\\" ,{"x":[1]}]\''


def die_and_retry(scripts, attempts, job_id="a"):
    """``attempts`` failed attempts of one job, each buried and sent back from the dead set."""
    for n in range(1, attempts + 1):
        scripts.claim("q", W, 10 * n, 1, 0)
        # an error that looks like the array's own punctuation: entries are told apart by parsing
        entry = orjson.dumps({"n": n, "error": TRICKY})
        assert scripts.ack("q", W, job_id, "dead", 10 * n + 1, 60_000, ["error", "E"], history=entry) == 1
        assert scripts.retry_dead("q", job_id, 10 * n + 2) == 1


def test_history_keeps_the_last_attempts_and_counts_the_dropped_ones(r, keys, scripts):
    """After N + 5 dead-letter retries: the last N entries, in order, and 5 counted as dropped."""
    enqueue(scripts, "q", "a")
    die_and_retry(scripts, HISTORY_MAX + 5)
    record = r.hgetall(keys.job("q", "a"))
    history = orjson.loads(record[b"history"])
    assert [entry["n"] for entry in history] == list(range(6, HISTORY_MAX + 6))
    assert {entry["error"] for entry in history} == {TRICKY}
    assert (record[b"history_count"], record[b"history_dropped"]) == (b"20", b"5")
    assert Job.from_hash(record).history_dropped == 5


def test_a_long_history_of_an_earlier_version_is_cut_to_the_last_attempts(r, keys, scripts):
    """A record without 'history_count' (30 entries, written before the bound) is counted once."""
    active_job(scripts)
    r.hset(keys.job("q", "a"), "history", orjson.dumps([{"n": n} for n in range(30)]))
    scripts.ack("q", W, "a", "retrying", 9000, 60_000, ["error", "E"], due_ms=99_000, history=b'{"n":30}')
    record = r.hgetall(keys.job("q", "a"))
    assert [entry["n"] for entry in orjson.loads(record[b"history"])] == list(range(11, 31))
    assert (record[b"history_count"], record[b"history_dropped"]) == (b"20", b"11")


def test_claim_promotes_due_jobs_and_reports_the_next_due_time(r, keys, scripts):
    enqueue(scripts, "q", "due", "later")
    for job_id, due in (("due", 500), ("later", 9000)):
        r.lrem(keys.queue("q"), 1, job_id)
        r.zadd(keys.delayed("q"), {job_id: due})
    next_due, claimed, _ = scripts.claim("q", W, 1000, 5, 0)
    assert int(next_due) == 9000
    assert ids_of([next_due, claimed]) == [b"due"]
    assert r.zrange(keys.delayed("q"), 0, -1) == [b"later"]


def test_ack_dead_keeps_the_job_in_the_dead_set_for_the_dead_letter_ttl(r, keys, scripts):
    active_job(scripts)
    scripts.ack("q", W, "a", "dead", 9000, 50_000, ["error", "E"])
    assert r.zrange(keys.dead("q"), 0, -1) == [b"a"]
    assert 49_000 < r.pttl(keys.job("q", "a")) <= 50_000
    assert r.lrange(keys.done("q", "a"), 0, -1) == [b"dead"]


def test_dead_set_keeps_at_most_dead_max_jobs(r, keys, scripts):
    for i in range(3):
        active_job(scripts, f"d{i}")
        scripts.ack("q", W, f"d{i}", "dead", 9000 + i, 50_000, ["error", "E"], dead_max=2)
    assert r.zrange(keys.dead("q"), 0, -1) == [b"d1", b"d2"]
    assert not r.exists(keys.job("q", "d0"))


def test_ack_publishes_the_event(r, keys, scripts):
    active_job(scripts)
    pubsub = r.pubsub()
    pubsub.subscribe(keys.events("q"))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    scripts.ack("q", W, "a", "completed", 9000, 1000, ["result", b"1"], event=b'{"id":"a"}')
    message = pubsub.get_message(timeout=5)
    assert message["data"] == b'{"id":"a"}'
    pubsub.close()


def test_retry_dead_sends_a_dead_job_back_with_a_fresh_count(r, keys, scripts):
    active_job(scripts)
    scripts.ack("q", W, "a", "dead", 9000, 50_000, ["error", "E"])
    assert scripts.retry_dead("q", "a", 10_000) == 1
    record = r.hgetall(keys.job("q", "a"))
    assert (record[b"status"], record[b"attempts"], record[b"deliveries"]) == (b"queued", b"0", b"0")
    assert r.pttl(keys.job("q", "a")) == -1
    assert r.lrange(keys.queue("q"), 0, -1) == [b"a"]
    assert not r.exists(keys.done("q", "a"))
    assert scripts.retry_dead("q", "a", 10_001) == 0  # not dead any more


def test_purge_deletes_only_dead_jobs(r, keys, scripts):
    active_job(scripts)
    assert scripts.purge("q", "a") == 0
    scripts.ack("q", W, "a", "dead", 9000, 50_000, ["error", "E"])
    assert scripts.purge("q", "a") == 1
    assert not r.exists(keys.job("q", "a")) and not r.zcard(keys.dead("q"))


def test_cancel_of_a_queued_job_finishes_it_as_cancelled(r, keys, scripts):
    enqueue(scripts, "q", "a")
    assert scripts.cancel("q", "a", 9000, 60_000, None) == 1
    assert r.llen(keys.queue("q")) == 0
    assert r.hget(keys.job("q", "a"), "status") == b"cancelled"
    assert r.lrange(keys.done("q", "a"), 0, -1) == [b"cancelled"]


def test_cancel_of_a_retrying_job_removes_it_from_the_delayed_set(r, keys, scripts):
    active_job(scripts)
    scripts.ack("q", W, "a", "retrying", 9000, 60_000, ["error", "E"], due_ms=99_000)
    assert scripts.cancel("q", "a", 9001, 60_000, None) == 1
    assert r.zcard(keys.delayed("q")) == 0


def test_a_scheduled_retry_is_indexed_apart_from_the_delayed_jobs(r, keys, scripts):
    """ack.lua adds a retry to the retrying index, with its due time; a delayed enqueue does not."""
    active_job(scripts)
    scripts.enqueue("q", [("later", 50_000, ["status", "queued"])], 1000)
    scripts.ack("q", W, "a", "retrying", 9000, 60_000, ["error", "E"], due_ms=12_000)
    assert r.zrange(keys.delayed("q"), 0, -1) == [b"a", b"later"]
    assert r.zrange(keys.retrying("q"), 0, -1, withscores=True) == [(b"a", 12000.0)]


def test_a_promoted_retry_leaves_the_retrying_index(r, keys, scripts):
    """Promotion (the scheduler's, or a claim's) takes the id out of both sets at once."""
    active_job(scripts)
    scripts.ack("q", W, "a", "retrying", 9000, 60_000, ["error", "E"], due_ms=12_000)
    assert scripts.promote("q", 12_000) == -1
    assert r.zcard(keys.delayed("q")) == 0 and r.zcard(keys.retrying("q")) == 0
    assert r.lrange(keys.queue("q"), 0, -1) == [b"a"]


def test_a_claim_that_promotes_a_retry_empties_the_retrying_index(r, keys, scripts):
    """claim.lua promotes first, through the same include."""
    active_job(scripts)
    scripts.ack("q", W, "a", "retrying", 9000, 60_000, ["error", "E"], due_ms=12_000)
    scripts.claim("q", W, 12_000, 1, 0)
    assert r.zcard(keys.retrying("q")) == 0
    assert r.hget(keys.job("q", "a"), "status") == b"active"


def test_a_cancelled_retry_leaves_the_retrying_index(r, keys, scripts):
    active_job(scripts)
    scripts.ack("q", W, "a", "retrying", 9000, 60_000, ["error", "E"], due_ms=99_000)
    assert scripts.cancel("q", "a", 9001, 60_000, None) == 1
    assert r.zcard(keys.retrying("q")) == 0


def test_cancel_of_a_running_job_asks_its_worker(r, keys, scripts):
    active_job(scripts)
    assert scripts.cancel("q", "a", 9000, 60_000, None) == 2
    assert r.smembers(keys.cancel("q", W)) == {b"a"}
    assert r.hget(keys.job("q", "a"), "status") == b"active"


def test_cancel_of_a_finished_or_unknown_job(scripts):
    active_job(scripts)
    scripts.ack("q", W, "a", "completed", 9000, 60_000, ["result", b"1"])
    assert scripts.cancel("q", "a", 9001, 60_000, None) == 0
    assert scripts.cancel("q", "nope", 9001, 60_000, None) == -1


def test_a_stale_dead_id_never_touches_a_job_enqueued_again_under_it(r, keys, scripts):
    """The record of a dead job expired (dead-letter TTL) and its id was used again."""
    active_job(scripts, "invoice-1")
    scripts.ack("q", W, "invoice-1", "dead", 9000, 50_000, ["error", "E"])
    r.delete(keys.job("q", "invoice-1"))  # as the dead-letter TTL does
    enqueue(scripts, "q", "invoice-1")
    assert scripts.retry_dead("q", "invoice-1", 10_000) == 0
    assert scripts.purge("q", "invoice-1") == 0
    assert r.lrange(keys.queue("q"), 0, -1) == [b"invoice-1"]  # once, and its record intact
    assert r.hget(keys.job("q", "invoice-1"), "status") == b"queued"


def test_cancel_requested_for_a_job_whose_worker_died_is_honoured(r, keys, scripts):
    active_job(scripts)
    assert scripts.cancel("q", "a", 9000, 60_000, None) == 2
    scripts.requeue("q", W, "died", 5, 9001)
    assert not r.exists(keys.cancel("q", W))  # no cancel set left behind by a dead worker
    assert records(scripts.claim("q", "other:9:x", 9002, 5, 0)) == []
    assert r.hget(keys.job("q", "a"), "status") == b"cancelled"
    assert r.lrange(keys.done("q", "a"), 0, -1) == [b"cancelled"]


def test_a_job_cancelled_before_it_started_says_so_in_one_wording(r, keys, scripts):
    """cancel.lua (a waiting job) and claim.lua (a claimed one) finish it with the same error."""
    enqueue(scripts, "q", "waiting", "claimed")
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")  # 'waiting' (the older one)
    assert scripts.cancel("q", "claimed", 9000, 60_000, None) == 1
    assert scripts.cancel("q", "waiting", 9000, 60_000, None) == 1  # moved, not started: cancelled at once
    assert records(scripts.claim("q", W, 9001, 0, 0, moved_id="waiting")) == []
    errors = {r.hget(keys.job("q", job_id), "error") for job_id in ("waiting", "claimed")}
    assert errors == {b"Cancelled: cancelled before it started"}


def test_promote_moves_due_jobs_and_reports_the_next_due_time(r, keys, scripts):
    """promote.lua is claim.lua's promotion alone: the scheduler's timer calls it."""
    enqueue(scripts, "q", "due", "later")
    for job_id, due in (("due", 500), ("later", 9000)):
        r.lrem(keys.queue("q"), 1, job_id)
        r.zadd(keys.delayed("q"), {job_id: due})
    assert int(scripts.promote("q", 1000)) == 9000
    assert r.lrange(keys.queue("q"), 0, -1) == [b"due"]
    assert r.hget(keys.job("q", "due"), "status") == b"queued"
    assert r.zrange(keys.delayed("q"), 0, -1) == [b"later"]
    assert scripts.promote("q", 9000) == -1  # nothing delayed any more


def delay_jobs(r, keys, queue, count, due_ms=500):
    """``count`` delayed jobs d0000.. all due at ``due_ms`` (ties go by id: the order promoted)."""
    ids = [f"d{i:04}" for i in range(count)]
    with r.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hset(keys.job(queue, job_id), mapping={"id": job_id, "handler": "m.f", "status": "delayed"})
        pipe.zadd(keys.delayed(queue), dict.fromkeys(ids, due_ms))
        pipe.execute()
    return ids


def test_promote_moves_at_most_one_slice_and_says_more_are_due(r, keys, scripts):
    """A backlog goes a slice per call, in due order; the reply's due time (past) says call again."""
    ids = delay_jobs(r, keys, "q", PROMOTE_SLICE + 3)
    assert int(scripts.promote("q", 1000)) == 500  # due already: more to promote
    assert r.lrange(keys.queue("q"), 0, -1)[::-1] == [i.encode() for i in ids[:PROMOTE_SLICE]]
    assert r.zcard(keys.delayed("q")) == 3
    assert r.hget(keys.job("q", ids[PROMOTE_SLICE - 1]), "status") == b"queued"
    assert r.hget(keys.job("q", ids[PROMOTE_SLICE]), "status") == b"delayed"
    assert scripts.promote("q", 1000) == -1
    assert r.llen(keys.queue("q")) == PROMOTE_SLICE + 3 and r.zcard(keys.delayed("q")) == 0


def test_claim_promotes_at_most_one_slice(r, keys, scripts):
    delay_jobs(r, keys, "q", PROMOTE_SLICE + 1)
    next_due, claimed, _ = scripts.claim("q", W, 1000, 2, 0)
    assert int(next_due) == 500 and len(claimed) == 2
    assert r.llen(keys.queue("q")) == PROMOTE_SLICE - 2 and r.zcard(keys.delayed("q")) == 1


def test_promote_of_a_slice_with_a_stale_id_lets_it_take_over_its_entry(r, keys, scripts):
    """The others of the slice are pushed in due order; the stale one keeps its earlier place."""
    enqueue(scripts, "q", "head", "b")
    r.sadd(keys.queue_prefix("q") + "stale", "b")  # b was cancelled while queued; its entry stays
    r.zadd(keys.delayed("q"), {"a": 500, "b": 600, "c": 700})
    for job_id in ("a", "b", "c"):
        r.hset(keys.job("q", job_id), "status", "delayed")
    assert scripts.promote("q", 1000) == -1
    assert r.lrange(keys.queue("q"), 0, -1) == [b"c", b"a", b"b", b"head"]
    assert not r.exists(keys.queue_prefix("q") + "stale")
    assert r.hmget(keys.job("q", "b"), "status", "updated_ms") == [b"queued", b"1000"]


def test_cancel_of_a_job_moved_but_not_started_is_honoured_at_its_start(r, keys, scripts):
    enqueue(scripts, "q", "a")
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")  # BLMOVE, before claim.lua
    assert scripts.cancel("q", "a", 9000, 60_000, None) == 1  # finished as cancelled at once
    assert records(scripts.claim("q", W, 9001, 0, 0, moved_id="a")) == []
    assert r.hget(keys.job("q", "a"), "status") == b"cancelled"
    assert r.llen(keys.active("q", W)) == 0
    assert r.lrange(keys.recent("q", "cancelled"), 0, -1) == [b"a"]  # `pool jobs --status cancelled`


def test_a_failed_attempt_of_a_job_with_a_cancel_request_does_not_retry(r, keys, scripts):
    active_job(scripts)
    scripts.cancel("q", "a", 9000, 60_000, None)
    pubsub = r.pubsub()
    pubsub.subscribe(keys.events("q"))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    code = scripts.ack("q", W, "a", "retrying", 9001, 60_000, ["error", "E"], due_ms=99_999,
                       event=b'{"id":"a","status":"retrying"}')
    assert code == 2  # acked, as cancelled: the worker counts a cancellation, not a retry
    assert scripts.ack("q", W, "a", "retrying", 9001, 60_000, ["error", "E"], due_ms=99_999) == 2  # lost reply
    assert r.hget(keys.job("q", "a"), "status") == b"cancelled"
    assert r.zcard(keys.delayed("q")) == 0
    assert pubsub.get_message(timeout=5)["data"] == b'{"id":"a","status":"cancelled"}'
    pubsub.close()


def test_each_attempt_replaces_the_previous_error_and_counts_failures(r, keys, scripts):
    active_job(scripts)
    scripts.ack("q", W, "a", "retrying", 1, 1000, ["error", "ValueError: x", "traceback", "T1"], due_ms=0)
    scripts.claim("q", W, 2, 1, 0)
    scripts.ack("q", W, "a", "dead", 3, 1000, ["error", "JobTimeout: late"])
    record = r.hgetall(keys.job("q", "a"))
    assert record[b"error"] == b"JobTimeout: late" and b"traceback" not in record
    assert record[b"failures"] == b"2"


def test_all_keys_of_a_queue_share_one_hash_tag(keys):
    tagged = [keys.queue("img"), keys.active("img", W), keys.job("img", "x"), keys.done("img", "x"),
              keys.stats("img"), keys.dead("img"), keys.queue_workers("img"), keys.alive("img", W),
              keys.delayed("img"), keys.cancel("img", W)]
    assert all("{img}" in key for key in tagged)


def test_enqueue_with_a_due_time_goes_to_the_delayed_set_and_wakes_the_scheduler(r, keys, scripts):
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.wake("q"))
    fields = ["id", "x", "handler", "m.f", "queue", "q", "status", "queued", "attempts", 0]
    assert scripts.enqueue("q", [("late", 9000, fields), ("soon", 5000, fields), ("now", 0, fields)], 1000) == [1, 1, 1]
    assert r.zrange(keys.delayed("q"), 0, -1, withscores=True) == [(b"soon", 5000.0), (b"late", 9000.0)]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"now"]
    assert r.hmget(keys.job("q", "soon"), "status", "due_ms") == [b"delayed", b"5000"]
    assert scripts.enqueue("q", [("later", 7000, fields)], 1000) == [1]  # not the earliest: no message
    messages = [pubsub.get_message(timeout=0.5) for _ in range(3)]  # the first may be the subscription
    assert [m["data"] for m in messages if m] == [b"5000"]  # one message: the new earliest
    pubsub.close()


def test_rate_limit_starts_at_most_the_limit_and_says_how_long_to_wait(r, keys, scripts):
    enqueue(scripts, "q", *"abcde")
    _, claimed, wait_ms = scripts.claim("q", W, 5, 5, 0, rate=(2, 1000))
    assert len(claimed) == 2
    assert 900 < wait_ms <= 1000
    assert r.llen(keys.queue("q")) == 3
    _, claimed, wait_ms = scripts.claim("q", W, 6, 5, 0, rate=(2, 1000))
    assert claimed == [] and wait_ms > 0


def test_rate_limit_hands_a_moved_id_back_to_the_head_of_the_queue(r, keys, scripts):
    enqueue(scripts, "q", "a", "b", "c")
    scripts.claim("q", W, 5, 1, 0, rate=(1, 1000))  # a: uses the whole window
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")  # b, as BLMOVE would
    _, claimed, wait_ms = scripts.claim("q", W, 6, 0, 1, moved_id="b", rate=(1, 1000))
    assert claimed == [] and wait_ms > 0
    assert r.lrange(keys.queue("q"), 0, -1) == [b"c", b"b"]  # b is the next to start
    assert r.llen(keys.active("q", W)) == 0 and r.zrange(keys.running("q", W), 0, -1) == [b"a"]
    assert r.hget(keys.job("q", "b"), "status") == b"queued"


def test_handback_returns_a_claimed_id_to_the_head_once(r, keys, scripts):
    enqueue(scripts, "q", "a", "b")
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")
    assert scripts.handback("q", W, "a") == 1
    assert scripts.handback("q", W, "a") == 0
    assert r.lrange(keys.queue("q"), 0, -1) == [b"b", b"a"]
    assert r.llen(keys.active("q", W)) == 0
    scripts.claim("q", W, 5, 1, 0)  # a, started (as reconcile would start a moved id)
    assert scripts.handback("q", W, "a") == 0  # a running job is never put back
    assert r.zrange(keys.running("q", W), 0, -1) == [b"a"]


def test_fire_enqueues_each_tick_once_and_never_an_older_one(r, keys, scripts):
    fields = ["handler", "m.f", "queue", "q", "status", "queued", "attempts", 0]
    assert scripts.fire("q", "beat", 2000, 2001, "beat@2000", ["id", "beat@2000", *fields]) == 1
    assert scripts.fire("q", "beat", 2000, 2002, "beat@2000", ["id", "beat@2000", *fields]) == 0  # a second supervisor
    assert scripts.fire("q", "beat", 1000, 2003, "beat@1000", ["id", "beat@1000", *fields]) == 0  # older: too late
    assert r.lrange(keys.queue("q"), 0, -1) == [b"beat@2000"]
    assert r.hmget(keys.schedule("q", "beat"), "last_ms", "job_id") == [b"2000", b"beat@2000"]
    assert not r.exists(keys.job("q", "beat@1000"))


def test_ack_counts_each_attempt_in_the_minute_tally_and_the_recent_lists(r, keys, scripts):
    for job_id, outcome in (("a", "completed"), ("b", "failed"), ("c", "retrying"), ("d", "dead"),
                            ("e", "cancelled")):
        enqueue(scripts, "q", job_id)
        scripts.claim("q", W, 1000, 1, 0)
        scripts.ack("q", W, job_id, outcome, 2000, 60_000, ["error", "E"], due_ms=99_999 if outcome == "retrying" else None)
    seconds = int(r.time()[0])
    tally = {**r.hgetall(keys.tally("q", seconds // 60)), **r.hgetall(keys.tally("q", seconds // 60 - 1))}
    assert sorted(field[:1] for field in tally for _ in range(int(tally[field]))) == [b"c", b"f", b"f", b"f"]
    assert 3600 < r.ttl(keys.tally("q", seconds // 60) if r.exists(keys.tally("q", seconds // 60))
                        else keys.tally("q", seconds // 60 - 1)) <= 3720
    for outcome, ids in (("completed", [b"a"]), ("failed", [b"b"]), ("cancelled", [b"e"])):
        assert r.lrange(keys.recent("q", outcome), 0, -1) == ids


def test_ack_counts_each_minutes_attempts_in_the_minutes_hash_and_forgets_those_over_an_hour_old(r, keys, scripts):
    """The per-minute totals status reads for the hour: this minute's attempts by kind, and no
    field older than 61 minutes once a new minute is counted."""
    minute = int(r.time()[0]) // 60
    r.hset(keys.minutes("q"), mapping={f"c{minute - 62}": 5, f"f{minute - 70}": 1, f"c{minute - 61}": 4})
    for job_id, outcome in (("a", "completed"), ("b", "failed"), ("c", "completed")):
        enqueue(scripts, "q", job_id)
        scripts.claim("q", W, 1000, 1, 0)
        scripts.ack("q", W, job_id, outcome, 2000, 60_000, ["error", "E"])
    counted = {field.decode(): int(value) for field, value in r.hgetall(keys.minutes("q")).items()}
    now = int(r.time()[0]) // 60  # (the acks may have crossed into the next minute)
    assert sum(v for f, v in counted.items() if f[0] == "c" and int(f[1:]) >= minute) == 2
    assert sum(v for f, v in counted.items() if f[0] == "f" and int(f[1:]) >= minute) == 1
    assert counted[f"c{minute - 61}"] == 4 or now > minute  # an hour and a minute old: still kept
    assert f"c{minute - 62}" not in counted and f"f{minute - 70}" not in counted
    assert 3600 < r.ttl(keys.minutes("q")) <= 3720


def test_a_late_ack_of_a_job_reclaimed_and_then_cancelled_is_refused(r, keys, scripts):
    active_job(scripts)
    scripts.cancel("q", "a", 9000, 60_000, None)  # requested while it runs
    scripts.requeue("q", W, "died", 5, 9001)  # its worker is declared dead
    assert records(scripts.claim("q", "other:9:x", 9002, 1, 0)) == []  # finished as cancelled at its start
    # the first worker was only slow: its ack arrives now, and must not count as its own cancellation
    assert scripts.ack("q", W, "a", "retrying", 9003, 60_000, ["error", "E"], due_ms=99_999) == -1


def test_claim_in_head_mode_starts_what_the_blmove_before_it_moved(r, keys, scripts):
    """The watcher's pipeline: BLMOVE, then claim.lua starting the head of the landing list."""
    enqueue(scripts, "q", "a", "b")
    scripts.claim("q", W, 5, 1, 0)  # a runs
    assert r.blmove(keys.queue("q"), keys.active("q", W), 1, "RIGHT", "LEFT") == b"b"
    reply = scripts.claim("q", W, 5, 0, 1, head=True)
    assert ids_of(reply) == [b"b"]
    fields = dict(zip(records(reply)[0][::2], records(reply)[0][1::2], strict=True))
    assert fields[b"status"] == b"active" and abs(int(fields[b"started_ms"]) - r.time()[0] * 1000) < 5000  # server time
    assert r.llen(keys.active("q", W)) == 0 and r.zrange(keys.running("q", W), 0, -1) == [b"a", b"b"]
    # a BLMOVE that timed out leaves the landing list empty: nothing starts, nothing changes
    assert scripts.claim("q", W, 6, 0, 1, head=True) == [-1, [], 0]
    assert r.hget(keys.job("q", "b"), "attempts") == b"1"


def test_claim_in_head_mode_after_a_timed_out_blmove_starts_an_id_left_landing(r, keys, scripts):
    """An id an earlier claim never started (its reply lost) is started, and named in the reply."""
    enqueue(scripts, "q", "left")
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")
    assert ids_of(scripts.claim("q", W, 6, 0, 1, head=True)) == [b"left"]
    assert r.llen(keys.active("q", W)) == 0 and r.zrange(keys.running("q", W), 0, -1) == [b"left"]


def test_claim_in_head_mode_sends_a_suspect_job_back_for_a_solo_claim(r, keys, scripts):
    enqueue(scripts, "q", "again")
    r.hset(keys.job("q", "again"), "deliveries", 2)
    r.blmove(keys.queue("q"), keys.active("q", W), 1, "RIGHT", "LEFT")
    assert records(scripts.claim("q", W, 5, 0, 1, head=True)) == [[b"solo_wait", b"1"]]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"again"] and r.lrange(keys.active("q", W), 0, -1) == []


def test_handback_undoes_a_start_that_never_ran(r, keys, scripts):
    enqueue(scripts, "q", "a", "b")
    reply = scripts.claim("q", W, 5, 1, 0)
    started_ms = int(dict(zip(records(reply)[0][::2], records(reply)[0][1::2], strict=True))[b"started_ms"])
    assert scripts.handback("q", W, "a", started_ms=started_ms + 1) == 0  # another start: left alone
    assert scripts.handback("q", W, "a", started_ms=started_ms) == 1
    assert r.lrange(keys.queue("q"), 0, -1) == [b"b", b"a"]  # back at the head
    assert r.hmget(keys.job("q", "a"), "status", "attempts", "deliveries") == [b"queued", b"0", b"0"]
    assert not r.exists(keys.active("q", W), keys.running("q", W))
    assert scripts.handback("q", W, "a", started_ms=started_ms) == 0  # once


# -- the running set: ack, claim and handback cost O(log n) in the jobs a worker runs ----------------

SCANS = ("lrem", "lpos", "lrange", "lindex", "zrange", "zrangebyscore", "zscan", "sscan", "smembers")


def _calls(r, commands):
    stats = r.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands}


def test_acking_the_oldest_of_1000_running_jobs_scans_nothing_and_leaves_the_others(r, keys, scripts):
    """LREM on a list of every running job was the cost; the ack finds its id in the sorted set."""
    ids = [f"j{i:04}" for i in range(1000)]
    enqueue(scripts, "q", *ids)
    assert len(records(scripts.claim("q", W, 5, 1000, 0))) == 1000
    scripts.ack("q", W, "j0000", "completed", 6, 60_000, ["result", b"1"])  # loads ack.lua
    before = _calls(r, SCANS)
    assert scripts.ack("q", W, "j0001", "completed", 6, 60_000, ["result", b"1"]) == 1
    assert _calls(r, SCANS) == before  # no command that reads the set or a list along its length
    assert r.zcard(keys.running("q", W)) == 998
    assert r.zrange(keys.running("q", W), 0, 1) == [b"j0002", b"j0003"]  # still oldest first
    assert r.zrange(keys.running("q", W), -1, -1) == [b"j0999"]
    assert r.hget(keys.job("q", "j0001"), "status") == b"completed"
    assert scripts.ack("q", W, "j0001", "completed", 6, 60_000, ["result", b"1"]) == 0  # a retry: ALREADY_ACKED


def test_claim_and_handback_beside_1000_running_jobs_scan_nothing(r, keys, scripts):
    enqueue(scripts, "q", *[f"j{i:04}" for i in range(1000)], "x", "y")
    scripts.claim("q", W, 5, 1000, 0)
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")  # x, as BLMOVE would
    scripts.handback("q", W, "x")  # loads handback.lua; x back at the head
    before = _calls(r, ("lrem", "lpos", "zscan"))  # (claim's LRANGE reads the queue's end, k ids)
    reply = scripts.claim("q", W, 6, 1, 1000)
    assert ids_of(reply) == [b"x"]
    started_ms = int(dict(zip(records(reply)[0][::2], records(reply)[0][1::2], strict=True))[b"started_ms"])
    assert scripts.handback("q", W, "x", started_ms=started_ms) == 1
    assert _calls(r, ("lrem", "lpos", "zscan")) == before
    assert r.zcard(keys.running("q", W)) == 1000 and r.lrange(keys.queue("q"), 0, -1) == [b"y", b"x"]


def test_a_claimed_id_is_in_exactly_one_place_as_it_moves(r, keys, scripts):
    """queue -> landing list (BLMOVE) -> running set (claim) -> finished (ack), never in two."""
    enqueue(scripts, "q", "a")

    def places():
        return (r.lrange(keys.queue("q"), 0, -1), r.lrange(keys.active("q", W), 0, -1),
                r.zrange(keys.running("q", W), 0, -1))

    r.blmove(keys.queue("q"), keys.active("q", W), 1, "RIGHT", "LEFT")
    assert places() == ([], [b"a"], [])
    scripts.claim("q", W, 5, 0, 0, moved_id="a")
    assert places() == ([], [], [b"a"])
    scripts.claim("q", W, 6, 0, 1, moved_id="a")  # reconcile of a started job: it stays running
    assert places() == ([], [], [b"a"])
    scripts.ack("q", W, "a", "completed", 7, 60_000, ["result", b"1"])
    assert places() == ([], [], [])


def test_reclaim_with_a_landing_id_and_running_jobs_gives_back_or_buries_each_once(r, keys, scripts):
    """A dead worker held two started jobs, a poison one and an id its BLMOVE had just moved."""
    enqueue(scripts, "q", "a", "b", "poison", "moved")
    r.hset(keys.job("q", "poison"), "deliveries", 2)
    r.zadd(keys.queue_registry("q"), {W: 1})  # its heartbeat's deadline, long past
    assert ids_of(scripts.claim("q", W, 5, 2, 0)) == [b"a", b"b"]
    assert ids_of(scripts.claim("q", W, 6, 1, 0)) == [b"poison"]  # alone: a suspect
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")  # moved, its claim never ran
    assert scripts.requeue("q", W, "reclaim", 3, 7) == [3, 1]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"moved", b"b", b"a"]  # a, the oldest start, is next
    assert r.zrange(keys.dead("q"), 0, -1) == [b"poison"]
    assert not r.exists(keys.active("q", W), keys.running("q", W))
    assert r.hmget(keys.job("q", "moved"), "status", "attempts") == [b"queued", b"0"]  # never started
    assert r.hmget(keys.job("q", "a"), "status", "deliveries") == [b"queued", b"1"]
    assert scripts.requeue("q", W, "reclaim", 3, 8) == -2  # ALREADY_RECLAIMED: nothing moves twice
    assert r.llen(keys.queue("q")) == 3


@pytest.mark.parametrize("mode", ["died", "reclaim"])
def test_requeue_gives_back_the_started_jobs_an_earlier_version_left_in_its_active_list(r, keys, scripts, mode):
    """A pool upgraded in place: a worker of the earlier version kept started jobs in the list."""
    enqueue(scripts, "q", "old1", "old2", "poison")
    for job_id in ("old1", "old2", "poison"):  # as the earlier claim.lua left them: LPUSHed, started
        r.rpop(keys.queue("q"))
        r.lpush(keys.active("q", W), job_id)
        r.hset(keys.job("q", job_id), mapping={"status": "active", "worker": W, "attempts": 1, "deliveries": 1})
    r.hset(keys.job("q", "poison"), "deliveries", 3)
    r.sadd(keys.queue_workers("q"), W)  # registered the earlier way
    assert scripts.requeue("q", W, mode, 3, 9) == [2, 1]
    assert r.lrange(keys.queue("q"), 0, -1) == [b"old2", b"old1"]  # the oldest claim is next
    assert r.zrange(keys.dead("q"), 0, -1) == [b"poison"]
    assert not r.exists(keys.active("q", W))
    assert r.hget(keys.job("q", "old1"), "status") == b"queued"


# -- ready tokens (includes/signal.lua) --------------------------------------------------------

def test_ready_list_never_holds_more_than_one_token(r, keys, scripts):
    """Every script that makes jobs claimable leaves one token at most, however often it runs."""
    enqueue(scripts, "q", "a")
    enqueue(scripts, "q", "b", "c")
    scripts.signal("q")
    assert r.lrange(keys.ready("q"), 0, -1) == [b"1"]
    assert ids_of(scripts.claim("q", W, 2000, 1, 0)) == [b"a"]  # jobs remain: the chain signal
    assert r.llen(keys.ready("q")) == 1
    assert scripts.handback("q", W, "a", started_ms=2000) == 1
    r.zadd(keys.delayed("q"), {"d": 500})
    r.hset(keys.job("q", "d"), mapping={"id": "d", "handler": "m.f", "queue": "q", "status": "delayed"})
    scripts.promote("q", 3000)
    scripts.requeue("q", W, "stop", 5, 3000)
    assert r.lrange(keys.ready("q"), 0, -1) == [b"1"]


def test_enqueue_signals_a_ready_job_and_not_a_delayed_one(r, keys, scripts):
    scripts.enqueue("q", [("later", 10_000, ["id", "later", "handler", "m.f", "queue", "q"])], 1000)
    assert r.llen(keys.ready("q")) == 0
    enqueue(scripts, "q", "now")
    assert r.llen(keys.ready("q")) == 1


def test_a_claim_that_empties_the_queue_leaves_no_token_for_the_next_process(r, keys, scripts):
    enqueue(scripts, "q", "a", "b")
    r.delete(keys.ready("q"))  # (as if a waiting process popped the enqueue's token)
    assert ids_of(scripts.claim("q", W, 2000, 2, 0)) == [b"a", b"b"]
    assert r.llen(keys.ready("q")) == 0


def test_a_claim_stopped_by_the_rate_limit_leaves_no_token(r, keys, scripts):
    enqueue(scripts, "q", "a", "b")
    r.delete(keys.ready("q"))
    reply = scripts.claim("q", W, 2000, 2, 0, rate=(1, 60_000))
    assert ids_of(reply) == [b"a"] and reply[2] > 0
    assert r.llen(keys.ready("q")) == 0  # the throttled process claims again when the window has room


@pytest.mark.parametrize("mode", ["stop", "died"])
def test_requeue_signals_the_queue_it_gave_jobs_back_to(r, keys, scripts, mode):
    enqueue(scripts, "q", "a")
    scripts.claim("q", W, 2000, 1, 0)
    r.delete(keys.ready("q"))
    assert scripts.requeue("q", W, mode, 5, 3000) == [1, 0]
    assert r.llen(keys.ready("q")) == 1


def test_requeue_signals_a_queue_holding_jobs_even_if_it_gave_none_back(r, keys, scripts):
    """The worker may have died holding the queue's token: its reclaim leaves a new one."""
    enqueue(scripts, "q", "a")
    r.delete(keys.ready("q"))
    assert scripts.requeue("q", W, "died", 5, 3000) == [0, 0]
    assert r.llen(keys.ready("q")) == 1


def test_requeue_of_an_empty_queue_leaves_no_token(r, keys, scripts):
    assert scripts.requeue("q", W, "died", 5, 3000) == [0, 0]
    assert r.llen(keys.ready("q")) == 0


def test_promote_signals_only_when_due_jobs_moved(r, keys, scripts):
    r.zadd(keys.delayed("q"), {"d": 5000})
    r.hset(keys.job("q", "d"), mapping={"id": "d", "handler": "m.f", "queue": "q", "status": "delayed"})
    scripts.promote("q", 3000)
    assert r.llen(keys.ready("q")) == 0
    scripts.promote("q", 6000)
    assert r.llen(keys.ready("q")) == 1


def test_handback_retry_dead_and_fire_signal_their_queue(r, keys, scripts):
    enqueue(scripts, "q", "a")
    r.lmove(keys.queue("q"), keys.active("q", W), "RIGHT", "LEFT")
    r.delete(keys.ready("q"))
    assert scripts.handback("q", W, "a") == 1
    assert r.llen(keys.ready("q")) == 1
    r.delete(keys.ready("q"))
    r.zadd(keys.dead("q"), {"x": 1})
    r.hset(keys.job("q", "x"), mapping={"id": "x", "handler": "m.f", "queue": "q", "status": "dead"})
    assert scripts.retry_dead("q", "x", 2000) == 1
    assert r.llen(keys.ready("q")) == 1
    r.delete(keys.ready("q"))
    assert scripts.fire("q", "tick", 1000, 2000, "tick-1", ["id", "tick-1", "handler", "m.f", "queue", "q"]) == 1
    assert r.llen(keys.ready("q")) == 1
