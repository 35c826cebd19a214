"""Where a job goes after a failed attempt: retry counting and backoff."""

from __future__ import annotations

from pool.config import RetrySettings
from pool.jobs import Job, Status
from pool.worker.outcomes import Failure, backoff_s, decide


def test_retries_are_counted_in_failures_not_in_runs():
    """A run handed back by a graceful stop used no retry."""
    settings = RetrySettings(max_retries=1, backoff_s=1.0, backoff_max_s=10.0)
    handed_back = Job(id="j", handler="m.f", queue="q", attempts=2, failures=0)
    assert decide(Failure("ValueError", "x"), settings, handed_back, 0).status is Status.RETRYING
    exhausted = Job(id="j", handler="m.f", queue="q", attempts=2, failures=1)
    assert decide(Failure("ValueError", "x"), settings, exhausted, 0).status is Status.DEAD


def test_backoff_doubles_and_never_exceeds_the_cap():
    settings = RetrySettings(backoff_s=1.0, backoff_max_s=5.0)
    for _ in range(200):
        delays = [backoff_s(settings, n) for n in range(1, 8)]
        assert delays[0] < delays[1] < delays[2] and max(delays) <= 5.0
