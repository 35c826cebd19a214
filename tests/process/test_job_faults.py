"""Jobs that misbehave in ways a plain exception does not: BaseExceptions, memory, process deaths.

Each attempt must end counted (completed, retrying, dead...), whatever the handler does to its
process, and a job that kills its workers must not slow the pool down for the others.
Each test says Given / When / Then.
"""

from __future__ import annotations

import pytest

from pool import Client, Status
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
