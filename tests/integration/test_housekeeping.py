"""The supervisor's Redis chores against the real server: what a reload changes for them, and reclaim."""

from __future__ import annotations

from pool import clock
from pool.keys import Keys
from pool.lua import Scripts
from pool.supervisor.housekeeping import Housekeeper
from pool.testing import wait_until

W = "host:1:abc"


def _held_by_dead_worker(r, keys: Keys, queue: str, job_id: str, deliveries: int = 0) -> None:
    """A job a worker claimed and started on ``queue``, then died holding."""
    scripts = Scripts(r, keys)
    scripts.enqueue(queue, [(job_id, 0, ["id", job_id, "handler", "m.f", "queue", queue, "status", "queued",
                                         "attempts", 0, "deliveries", deliveries])], 1000)
    scripts.claim(queue, W, 1000, 1, 0)
    assert r.zrange(keys.running(queue, W), 0, -1) == [job_id.encode()]


def test_after_a_reload_the_jobs_of_a_dead_worker_on_a_new_queue_are_requeued(make_config, url, r, prefix):
    keys = Keys(prefix)
    keeper = Housekeeper(make_config(queues=["default"]), url)
    keeper.reload(make_config(queues=["default", "other"]))
    _held_by_dead_worker(r, keys, "other", "j1")
    keeper.worker_died(W, "exited with code 3")
    keeper.tick(reclaim=False)
    assert r.lrange(keys.queue("other"), 0, -1) == [b"j1"]
    assert not r.exists(keys.active("other", W), keys.running("other", W))


def test_a_queue_a_reload_removes_is_still_requeued_for_workers_not_yet_replaced(make_config, url, r, prefix):
    keys = Keys(prefix)
    keeper = Housekeeper(make_config(queues=["default", "old"]), url)
    keeper.reload(make_config(queues=["default"]))
    _held_by_dead_worker(r, keys, "old", "j2")
    keeper.worker_died(W, "exited with code 3")
    keeper.tick(reclaim=False)
    assert r.lrange(keys.queue("old"), 0, -1) == [b"j2"]


def test_after_a_reload_a_poison_job_is_buried_by_the_new_dead_letter_rules(make_config, url, r, prefix):
    keys = Keys(prefix)
    keeper = Housekeeper(make_config(max_deliveries=2, dead_letter={"ttl": "2h", "max": 3}), url)
    keeper.reload(make_config(max_deliveries=2, dead_letter={"ttl": "3h", "max": 5}))
    _held_by_dead_worker(r, keys, "default", "poison", deliveries=1)  # the claim counts the second
    keeper.worker_died(W, "killed by SIGSEGV")
    keeper.tick(reclaim=False)
    assert r.zscore(keys.dead("default"), "poison") is not None
    assert r.pttl(keys.job("default", "poison")) > 2 * 3_600_000  # the new 3h, not the old 2h


# -- reclaim: O(expired) per pass, exactly once, within heartbeat_ttl + reclaim_interval ------------


def _held_jobs(r, keys: Keys, worker_id: str, count: int, ttl_ms: int) -> list[bytes]:
    """A worker that heartbeats once (ttl_ms) through heartbeat.lua and claims ``count`` jobs."""
    scripts = Scripts(r, keys)
    ids = [f"{worker_id}-j{i}" for i in range(count)]
    scripts.enqueue("default", [(i, 0, ["id", i, "handler", "m.f", "queue", "default", "status", "queued",
                                        "attempts", 0]) for i in ids], 1000)
    scripts.heartbeat("default", worker_id, "busy", ttl_ms)
    scripts.claim("default", worker_id, 1000, count, 0)
    return sorted(i.encode() for i in ids)


def _live_fleet(r, keys: Keys, size: int) -> None:
    scripts = Scripts(r, keys)
    with r.pipeline(transaction=False) as pipe:
        for i in range(size):
            scripts.heartbeat("default", f"live{i}:{i}:x", "idle", 60_000, client=pipe)
        pipe.execute()


def _commands(r) -> int:
    return sum(int(stat["calls"]) for stat in r.info("commandstats").values())


def test_many_supervisors_racing_reclaim_an_expired_worker_s_jobs_exactly_once(make_config, url, r, prefix):
    import threading

    keys = Keys(prefix)
    jobs = _held_jobs(r, keys, W, 20, ttl_ms=100)
    wait_until(lambda: not r.exists(keys.alive("default", W)), timeout=5, message="the heartbeat to expire")
    keepers = [Housekeeper(make_config(), url, f"sup{i}:1:x") for i in range(5)]
    barrier = threading.Barrier(len(keepers))
    requeued: list[int] = []

    def reclaim(keeper: Housekeeper) -> None:
        barrier.wait()
        requeued.append(keeper.reclaim_expired())

    threads = [threading.Thread(target=reclaim, args=(keeper,)) for keeper in keepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(requeued) == [0, 0, 0, 0, 20]
    assert sorted(r.lrange(keys.queue("default"), 0, -1)) == jobs
    assert r.hget(keys.stats("default"), "reclaimed") == b"20"
    assert r.zscore(keys.queue_registry("default"), W) is None


def test_an_expired_worker_is_reclaimed_within_heartbeat_ttl_and_reclaim_interval(make_config, url, r, prefix):
    keys = Keys(prefix)
    config = make_config(heartbeat_interval="100ms", heartbeat_ttl="500ms", reclaim_interval="200ms")
    keeper = Housekeeper(config, url)
    _live_fleet(r, keys, 50)
    beat_at = clock.monotonic()
    jobs = _held_jobs(r, keys, W, 3, ttl_ms=500)

    def reclaimed() -> bool:
        keeper.tick()
        return sorted(r.lrange(keys.queue("default"), 0, -1)) == jobs

    wait_until(reclaimed, timeout=0.5 + 0.2 + 0.5, interval=0.01, message="the expired worker's jobs back")
    assert clock.monotonic() - beat_at >= 0.5  # not before its heartbeat expired
    assert not any(r.exists(keys.running("default", f"live{i}:{i}:x")) for i in range(50))
    assert r.zcard(keys.queue_registry("default")) == 50


def test_a_live_worker_is_never_reclaimed(make_config, url, r, prefix):
    keys = Keys(prefix)
    keeper = Housekeeper(make_config(), url)
    jobs = _held_jobs(r, keys, W, 2, ttl_ms=60_000)
    assert [keeper.reclaim_expired() for _ in range(3)] == [0, 0, 0]
    assert sorted(r.zrange(keys.running("default", W), 0, -1)) == jobs


def test_a_worker_renewed_by_pexpire_alone_is_not_reclaimed_and_gets_its_key_s_deadline(make_config, url, r, prefix):
    """At maxmemory a refused beat renews only the liveness key: its registry deadline lags behind."""
    keys = Keys(prefix)
    keeper = Housekeeper(make_config(), url)
    _held_jobs(r, keys, W, 1, ttl_ms=60_000)
    r.zadd(keys.queue_registry("default"), {W: 1})  # a deadline long past
    assert keeper.reclaim_expired() == 0
    assert r.zcard(keys.running("default", W)) == 1
    assert r.zscore(keys.queue_registry("default"), W) > 1_000_000_000_000  # now the key's expiry, in server ms


def test_a_reclaim_pass_costs_the_same_commands_beside_10_and_2000_live_workers(make_config, url, r, prefix):
    keys = Keys(prefix)
    keeper = Housekeeper(make_config(), url)
    keeper.reclaim_expired()  # loads the scripts
    counts = []
    for size in (10, 2000):
        _live_fleet(r, keys, size)
        before = _commands(r)
        assert keeper.reclaim_expired() == 0
        counts.append(_commands(r) - before)
    assert counts[0] == counts[1], counts


def test_workers_of_an_earlier_version_registered_in_a_set_are_still_reclaimed(make_config, url, r, prefix):
    """A pool upgraded in place: its old workers' registry is a set, their liveness keys alone say alive."""
    keys = Keys(prefix)
    keeper = Housekeeper(make_config(), url)
    _held_by_dead_worker(r, keys, "default", "old-job")
    r.zrem(keys.queue_registry("default"), W)  # registered the old way only
    r.sadd(keys.queue_workers("default"), W, "host:2:live")
    r.set(keys.alive("default", "host:2:live"), "idle", px=60_000)
    assert keeper.reclaim_expired() == 1
    assert r.lrange(keys.queue("default"), 0, -1) == [b"old-job"]
    assert r.smembers(keys.queue_workers("default")) == {b"host:2:live"}
