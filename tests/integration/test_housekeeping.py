"""The supervisor's Redis chores against the real server: what a reload changes for them."""

from __future__ import annotations

from pool.keys import Keys
from pool.lua import Scripts
from pool.supervisor.housekeeping import Housekeeper

W = "host:1:abc"


def _held_by_dead_worker(r, keys: Keys, queue: str, job_id: str, deliveries: int = 0) -> None:
    """A job a worker claimed and started on ``queue``, then died holding."""
    scripts = Scripts(r, keys)
    scripts.enqueue(queue, [(job_id, 0, ["id", job_id, "handler", "m.f", "queue", queue, "status", "queued",
                                         "attempts", 0, "deliveries", deliveries])], 1000)
    scripts.claim(queue, W, 1000, 1, 0)
    assert r.lrange(keys.active(queue, W), 0, -1) == [job_id.encode()]


def test_after_a_reload_the_jobs_of_a_dead_worker_on_a_new_queue_are_requeued(make_config, url, r, prefix):
    keys = Keys(prefix)
    keeper = Housekeeper(make_config(queues=["default"]), url)
    keeper.reload(make_config(queues=["default", "other"]))
    _held_by_dead_worker(r, keys, "other", "j1")
    keeper.worker_died(W, "exited with code 3")
    keeper.tick(reclaim=False)
    assert r.lrange(keys.queue("other"), 0, -1) == [b"j1"]
    assert r.llen(keys.active("other", W)) == 0


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
