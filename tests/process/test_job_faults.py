"""Jobs that misbehave in ways a plain exception does not: BaseExceptions, memory, process deaths.

Each attempt must end counted (completed, retrying, dead...), whatever the handler does to its
process, and a job that kills its workers must not slow the pool down for the others.
Each test says Given / When / Then.
"""

from __future__ import annotations

import re

import pytest

from pool import Client, JobSpec, Status
from pool.testing import wait_until
from tests.process.conftest import live_workers


@pytest.mark.parametrize("handler, error", [
    ("tests.sample_handlers.raise_base_exception", "ForeignCancel: from a library"),
    ("tests.sample_handlers.async_raise_base_exception", "ForeignCancel: from a library"),
    ("tests.sample_handlers.raise_generator_exit", "GeneratorExit"),
    ("tests.sample_handlers.raise_keyboard_interrupt", "KeyboardInterrupt"),
])
def test_a_handler_raising_a_base_exception_fails_its_attempts_then_dies(write_config, start_pool, handler, error):
    # Given a pool whose jobs get one retry
    config = write_config(processes=1, concurrency=2, retries={"max_retries": 1, "backoff": "50ms"})
    pool = start_pool(config)
    wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    with Client.from_config(config) as client:
        # When a handler raises a BaseException that is not an Exception
        job = client.enqueue(handler)
        other = client.enqueue("tests.sample_handlers.add", 1, 1)
        done = client.wait(job.id, timeout=20)
        # Then each attempt fails with the exception's name, the retry applies, then it is dead,
        # and the worker that ran it goes on serving
        assert client.result(other.id, timeout=10) == 2
    assert done.status is Status.DEAD
    assert done.error == error
    assert done.attempts == 2
    assert "internal error" not in pool.output()
    assert "restarting in" not in pool.output()
    assert pool.stop() == 0


def test_poison_jobs_neither_slow_respawns_nor_hide_how_they_killed_their_workers(write_config, start_pool):
    # Given a 2 x 4 pool and jobs that kill their worker in different ways, among ordinary jobs
    config = write_config(processes=2, concurrency=4, max_deliveries=3, heartbeat_ttl="1500ms")
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    with Client.from_config(config) as client:
        poison = {
            "killed by SIGSEGV": client.enqueue("tests.sample_handlers.segfault"),
            "exited with code 3": client.enqueue("tests.sample_handlers.exit_process", 3),
            "killed by SIGKILL": client.enqueue("tests.sample_handlers.kill_own_process"),
            # killed by its supervisor, or reclaimed when its heartbeat expired: whichever is first
            "event loop froze": client.enqueue("tests.sample_handlers.freeze_event_loop", 60),
        }
        others = client.enqueue_many(JobSpec("tests.sample_handlers.add", (i, i)) for i in range(200))
        # When each has killed its workers max_deliveries times
        dead = {cause: client.wait(job.id, timeout=60) for cause, job in poison.items()}
        # Then every ordinary job completes
        assert [client.result(j.id, timeout=30) for j in others] == [2 * i for i in range(200)]
    # and each poison job is dead with an error naming how its workers died (a batch-mate's
    # deaths too, before it ran alone as a suspect: its last death is its own)
    for cause, job in dead.items():
        assert job.status is Status.DEAD
        assert job.error.startswith("PoisonJob: delivered 3 times")
        assert "how its workers died: " in job.error and cause in job.error, job.error
    # and a worker killed by a job was replaced at once, never after a crash-loop backoff
    delays = [float(d) for d in re.findall(r"restarting in ([0-9.]+)s", pool.output())]
    assert len(delays) >= 4  # (batch-mates share deaths: fewer than 4 x 3)
    assert set(delays) == {0.0}, pool.output()
    assert "while running jobs (counted against them)" in pool.output()
    assert pool.stop() == 0


def test_a_job_over_the_memory_limit_fails_its_attempts_instead_of_coming_back_for_ever(write_config, start_pool):
    # Given a pool whose processes may use 300 MiB, with one retry per job
    config = write_config(processes=1, concurrency=2, max_memory_per_process="300MiB", shutdown_timeout="500ms",
                          retries={"max_retries": 1, "backoff": "50ms"})
    pool = start_pool(config)
    wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    with Client.from_config(config) as client:
        # When a job holds 400 MiB until it is stopped
        hog = client.enqueue("tests.sample_handlers.hold_memory", 400, 60)
        done = client.wait(hog.id, timeout=60)
        # Then each of its attempts fails with MemoryLimitExceeded, then it is dead, and the pool
        # goes on serving
        after = client.enqueue("tests.sample_handlers.add", 1, 1)
        assert client.result(after.id, timeout=30) == 2
    assert done.status is Status.DEAD
    assert done.attempts == 2
    assert done.error.startswith("MemoryLimitExceeded: its worker process uses ")
    assert "over max_memory_per_process (300 MiB) while this job ran" in done.error
    assert pool.output().count("over max_memory_per_process") >= 2
    assert pool.stop() == 0
