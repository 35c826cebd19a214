"""Retries: a handler that fails now and then, retried with exponential backoff.

Registered in the root pool.yaml both ways: the decorator gives `fetch_rate` its retry settings,
and the `handlers:` entry for `examples.retries.charge` says which errors must never retry.

    pool enqueue pool.yaml examples.retries.fetch_rate EUR --wait
    pool enqueue pool.yaml examples.retries.charge 12.5 --wait   # a negative amount goes to dead
"""

from __future__ import annotations

import itertools
import random

from pool import Retry, task


class RateServiceDown(ConnectionError):
    """The (pretend) upstream service is flaky."""


_calls = itertools.count()


@task(max_retries=5, backoff=0.2, backoff_max=5, retry_on=[ConnectionError])
def fetch_rate(currency: str) -> float:
    """Every other call in a process fails; the pool retries after 0.2 s, 0.4 s, 0.8 s ...

    (Alternating rather than random, so the README's example answers every time: a retry lands
    on a process whose next call succeeds within `processes` attempts.)
    """
    if next(_calls) % 2 == 0:
        raise RateServiceDown(f"rate service for {currency} did not answer")
    return {"EUR": 1.08, "GBP": 1.27}.get(currency, 1.0)


def charge(amount: float) -> str:
    """A bad amount is a permanent error (`fail_on: [ValueError]` in pool.yaml): no retry."""
    if amount <= 0:
        raise ValueError(f"amount must be positive (got {amount})")
    if random.random() < 0.3:
        raise Retry(delay=0.5, reason="payment gateway busy")  # ask for another try in 0.5 s
    return f"charged {amount:.2f}"
