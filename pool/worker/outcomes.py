"""What becomes of a job after an attempt: completed, retried later, dead, failed or cancelled.

The worker runs the handler; this module decides, from the attempt and the job's retry settings,
where the job goes next, and builds what ack.lua stores and publishes: the fields, the history
entry of a failed attempt, and the event.

Retry settings are resolved from the most specific source down: the job's own ``max_retries``,
the handler's entry in pool.yaml (a function entry, then its module's entry), the handler's
``@pool.task(...)`` decorator, the pool's ``retries:`` section.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from pool.config import Config, RetrySettings
from pool.errors import Retry
from pool.handlers import Handler
from pool.jobs import Job, Status, dumps

# Failures that no retry can fix: the job goes to the dead set (or fails) at once.
PERMANENT_ERRORS = frozenset({
    "UnknownHandler", "SerializationError", "ResultTooLarge", "CorruptJob",
    "ScriptNotAllowed", "ScriptNotFound", "ScriptNotExecutable",
})


@dataclass(frozen=True)
class Failure:
    """A failed attempt. ``kind`` is the error's class name; ``exc`` is None for failures the
    worker itself detected (timeout, unknown handler, result checks)."""

    kind: str
    message: str
    traceback: str | None = None
    exc: BaseException | None = None

    @property
    def error(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind

    @classmethod
    def of(cls, exc: BaseException, trace: str | None) -> Failure:
        return cls(type(exc).__name__, str(exc), trace, exc)


@dataclass(frozen=True)
class Decision:
    """Where the job goes after a failed attempt."""

    status: Status
    due_ms: int | None = None
    delay_s: float | None = None


def retry_settings(config: Config, handler: Handler | None, job: Job) -> RetrySettings:
    """The job's effective retry settings (see the module docstring for the order)."""
    settings = config.retries
    if handler is not None:
        settings = handler.retries.merged_over(settings)
    module = job.handler.rpartition(".")[0]
    for entry in (config.handler_retries.get(module), config.handler_retries.get(job.handler)):
        if entry is not None:
            settings = entry.merged_over(settings)
    if job.max_retries is not None:
        settings = replace(settings, max_retries=job.max_retries)
    return settings


def _names(exc: BaseException) -> set[str]:
    names = set()
    for cls in type(exc).__mro__:
        names.add(cls.__name__)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return names


def is_retryable(failure: Failure, settings: RetrySettings) -> bool:
    """Whether this kind of failure may be retried under these settings."""
    if failure.kind in PERMANENT_ERRORS:
        return False
    names = _names(failure.exc) if failure.exc is not None else {failure.kind}
    if isinstance(failure.exc, Retry):
        return True
    if names & set(settings.fail_on or ()):
        return False
    return not settings.retry_on or bool(names & set(settings.retry_on))


def backoff_s(settings: RetrySettings, failure: int) -> float:
    """Delay before the retry that follows the ``failure``-th failed attempt (1-based): doubling
    from ``backoff``, with ±20% jitter so that retries of a burst spread out, capped at
    ``backoff_max``.

    The jitter is narrow on purpose: until the cap, each delay is longer than the one before.
    """
    base = (settings.backoff_s or 0.0) * 2 ** min(failure - 1, 62)
    return min(settings.backoff_max_s or 0.0, base * random.uniform(0.8, 1.2))


def decide(failure: Failure, settings: RetrySettings, job: Job, now_ms: int) -> Decision:
    """Retry later, or finish as dead (dead letter on) or failed.

    Retries are counted in failed attempts (``failures``), not in ``attempts``: a run handed back
    by a graceful stop or lost with its worker used no retry.
    """
    retries_used = job.failures
    if is_retryable(failure, settings) and retries_used < (settings.max_retries or 0):
        delay = failure.exc.delay if isinstance(failure.exc, Retry) and failure.exc.delay is not None \
            else backoff_s(settings, job.failures + 1)
        return Decision(Status.RETRYING, now_ms + int(delay * 1000), delay)
    return Decision(Status.DEAD if settings.dead_letter else Status.FAILED)


def history_entry(job: Job, failure: Failure, decision: Decision, now_ms: int, worker_id: str) -> bytes:
    """One failed attempt, as appended to the job's ``history`` array."""
    return dumps({
        "attempt": job.attempts, "worker": worker_id, "started_ms": job.started_ms,
        "finished_ms": now_ms, "outcome": decision.status.value, "error": failure.error,
    })


def event(job: Job, status: Status, run_ms: float, now_ms: int, *, result: bytes | None = None,
          error: str | None = None, due_ms: int | None = None) -> bytes:
    """The message published on the queue's events channel for this outcome."""
    payload: dict[str, Any] = {
        "id": job.id, "queue": job.queue, "handler": job.handler, "status": status.value,
        "attempt": job.attempts, "run_ms": round(run_ms, 3), "ts_ms": now_ms,
    }
    if error is not None:
        payload["error"] = error
    if due_ms is not None:
        payload["due_ms"] = due_ms
    encoded = dumps(payload)
    if result is None:
        return encoded
    return encoded[:-1] + b',"result":' + result + b"}"  # the result is JSON already
