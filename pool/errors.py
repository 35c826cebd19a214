"""Every error `pool` raises on purpose, and the exit codes the CLI maps them to.

Each exception carries a message written for a person: what was wrong, where, and how to fix it.
The CLI prints that one line; it never prints a traceback for these.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of the `pool` command and of worker processes."""

    OK = 0
    JOB_FAILED = 1  # `pool enqueue --wait` when the job failed; generic runtime failure
    USAGE = 2  # bad config, bad arguments, handler import error
    UNAVAILABLE = 3  # Redis cannot be reached
    BOOT = 4  # a worker process could not boot: the supervisor halts instead of respawning
    RECYCLE = 5  # a worker asks to be replaced (max jobs, memory, stuck thread): respawn at once
    # 4 and 5 pass between a worker and its supervisor only; the CLI's own codes go on from 6,
    # so that each number means one thing.
    NOT_FOUND = 6  # no such job (`pool job`, `pool cancel`, `pool dead show ID`, ...)
    WAIT_TIMEOUT = 7  # `pool enqueue --wait --wait-timeout S` gave up waiting (the job goes on)
    BROKEN_PIPE = 141  # stdout was closed early (`pool events | head`): 128 + SIGPIPE, as a shell reports it


class PoolError(Exception):
    """Base class of every error raised by `pool` on purpose."""

    exit_code = ExitCode.JOB_FAILED


class ConfigError(PoolError):
    """pool.yaml (or a value derived from it) is invalid."""

    exit_code = ExitCode.USAGE


class HandlerError(ConfigError):
    """A handler named in the config cannot be imported or is not callable."""


class UsageError(PoolError):
    """The command line or an API call was used wrongly (bad argument, bad queue name)."""

    exit_code = ExitCode.USAGE


class SerializationError(UsageError):
    """Job arguments or a result cannot be encoded as JSON."""


class PayloadTooLarge(UsageError):
    """An encoded job is larger than `max_payload_size`."""


class RedisUnavailable(PoolError):
    """Redis cannot be reached (refused, timed out, embedded server not running)."""

    exit_code = ExitCode.UNAVAILABLE


class NotReplicated(RedisUnavailable):
    """The master took a write (an enqueue) but no replica confirmed it in time
    (``durability: replicated``): a failover now could lose it. Sending it again is safe."""


class JobNotFound(PoolError):
    """No job with this id exists (never enqueued, or its result has expired)."""

    exit_code = ExitCode.NOT_FOUND


class CorruptJob(PoolError):
    """A job record in Redis cannot be decoded (written by hand, or by an incompatible version)."""


class ResultTimeout(PoolError, TimeoutError):
    """The job did not finish within the time the caller was willing to wait."""

    exit_code = ExitCode.WAIT_TIMEOUT


class JobFailed(PoolError):
    """The job ran and failed; carries the remote error and traceback.

    Attributes:
        job_id: id of the failed job.
        error: one-line description of the remote exception (``"ValueError: bad input"``).
        remote_traceback: the traceback text captured in the worker.
    """

    def __init__(self, job_id: str, error: str, remote_traceback: str | None) -> None:
        self.job_id = job_id
        self.error = error
        self.remote_traceback = remote_traceback or ""
        super().__init__(f"job {job_id} failed: {error}")

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text


class JobCancelled(PoolError):
    """The job was cancelled (`pool cancel`, :meth:`pool.Client.cancel`) before it finished."""


class Retry(Exception):
    """Raise in a handler to ask for another attempt (it counts against ``max_retries``).

    Args:
        delay: seconds to wait before the next attempt; None uses the backoff schedule.
        reason: why, shown as the attempt's error.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason
