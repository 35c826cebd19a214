"""The `Job` record, its statuses, and how it is encoded in its Redis hash (orjson, never pickle).

A job hash holds flat string fields so that Lua scripts can update single fields (status,
attempts, timestamps) without decoding JSON. Only ``args``, ``kwargs`` and ``result`` are JSON.
:func:`new_job` is the one way a new record is built, checked and encoded, for the client's
enqueue and the scheduler's fired ticks alike; the scripts that store it are left to others.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from pool.config_values import MAX_DURATION_S, MAX_DURATION_TEXT, is_dotted_path, is_valid_seconds
from pool.errors import CorruptJob, JobCancelled, JobFailed, PayloadTooLarge, SerializationError, UsageError
from pool.keys import QUEUE_NAME_RULE, is_valid_queue_name

MAX_RETRIES = 1000  # as the config's `retries.max_retries`
_HANDLER_NAME_RULE = "a dotted path such as 'examples.tasks.add'"


class Status(enum.StrEnum):
    """Where a job is: (delayed →) queued → active → completed | failed | dead | cancelled, and
    between attempts ``retrying`` (waiting in the delayed set)."""

    DELAYED = "delayed"  # enqueued with delay/at: waits in the delayed set until due_ms
    QUEUED = "queued"
    ACTIVE = "active"
    RETRYING = "retrying"  # an attempt failed; the next waits in the delayed set until due_ms
    COMPLETED = "completed"
    FAILED = "failed"  # retries exhausted, dead letter off for its handler: kept for result_ttl
    DEAD = "dead"  # retries exhausted (or a poison job): kept in the dead set for an operator
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.DEAD, Status.CANCELLED)


def new_job_id() -> str:
    """A random 128-bit id as 32 hex digits (uuid4's form; os.urandom is 5x faster than
    uuid.uuid4, which matters in bulk enqueues)."""
    return os.urandom(16).hex()


def dumps(value: Any) -> bytes:
    """orjson with the options `pool` uses everywhere (string keys only, no pickle fallback)."""
    return orjson.dumps(value)


def encode_arguments(handler: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Encode a job's arguments, naming the first one that JSON cannot carry.

    Raises:
        SerializationError: an argument is not JSON-serialisable.
    """
    try:
        return dumps(list(args)), dumps(dict(kwargs))
    except TypeError:
        pass
    for index, value in enumerate(args):
        _check_serialisable(value, f"argument {index} of {handler}")
    for name, value in kwargs.items():
        if not isinstance(name, str):
            raise SerializationError(f"keyword argument names of {handler} must be strings (got {name!r})")
        _check_serialisable(value, f"keyword argument {name!r} of {handler}")
    raise SerializationError(f"arguments of {handler} are not JSON-serialisable")  # pragma: no cover


def _check_serialisable(value: Any, what: str) -> None:
    try:
        dumps(value)
    except TypeError as exc:
        raise SerializationError(
            f"{what} is not JSON-serialisable ({type(value).__name__}: {exc}); "
            "pass plain JSON values (str, int, float, bool, None, list, dict) - pool never pickles"
        ) from None


@dataclass(frozen=True, slots=True)
class Job:
    """One job, as enqueued or as read back from Redis.

    Times are integer milliseconds since the epoch; ``None`` when the step has not happened.
    """

    id: str
    handler: str
    queue: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None
    status: Status = Status.QUEUED
    attempts: int = 0
    timeout_ms: int | None = None
    result_ttl_ms: int | None = None
    created_ms: int | None = None
    enqueued_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    worker: str | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    max_retries: int | None = None
    deliveries: int = 0
    failures: int = 0
    due_ms: int | None = None
    updated_ms: int | None = None
    history: tuple[dict[str, Any], ...] = ()  # the last 20 failed attempts (lua/includes/history.lua)
    history_dropped: int = 0  # older attempts no longer in ``history``

    @property
    def wait_ms(self) -> int:
        """How long this attempt waited for a worker since it became ready (enqueued, or due
        after a delay or a retry's backoff); 0 before it started."""
        if not self.started_ms:
            return 0
        ready = max(self.enqueued_ms or self.created_ms or 0, self.due_ms or 0)
        return max(0, self.started_ms - ready)

    @classmethod
    def from_hash(cls, fields: Mapping[bytes, bytes]) -> Job:
        """Build a Job from the raw HGETALL reply of its hash.

        Raises:
            CorruptJob: a field cannot be decoded.
        """
        try:
            return cls._from_fields(fields)
        except (ValueError, KeyError, TypeError) as exc:
            job_id = fields.get(b"id", b"?").decode(errors="replace")
            raise CorruptJob(f"job {job_id}: its record cannot be decoded ({exc})") from None

    @classmethod
    def _from_fields(cls, fields: Mapping[bytes, bytes]) -> Job:
        get = fields.get
        return cls(
            id=get(b"id", b"").decode(),
            handler=get(b"handler", b"").decode(),
            queue=get(b"queue", b"").decode(),
            args=tuple(orjson.loads(get(b"args", b"[]"))),
            kwargs=orjson.loads(get(b"kwargs", b"{}")),
            status=Status(get(b"status", b"queued").decode()),
            attempts=int(get(b"attempts", b"0")),
            timeout_ms=_int_or_none(get(b"timeout_ms")),
            result_ttl_ms=_int_or_none(get(b"result_ttl_ms")),
            created_ms=_int_or_none(get(b"created_ms")),
            enqueued_ms=_int_or_none(get(b"enqueued_ms")),
            started_ms=_int_or_none(get(b"started_ms")),
            finished_ms=_int_or_none(get(b"finished_ms")),
            worker=_str_or_none(get(b"worker")),
            result=orjson.loads(raw) if (raw := get(b"result")) else None,
            error=_str_or_none(get(b"error")),
            traceback=_str_or_none(get(b"traceback")),
            max_retries=_int_or_none(get(b"max_retries")),
            deliveries=int(get(b"deliveries", b"0")),
            failures=int(get(b"failures", b"0")),
            due_ms=_int_or_none(get(b"due_ms")),
            updated_ms=_int_or_none(get(b"updated_ms")),
            history=tuple(orjson.loads(get(b"history", b"[]"))),
            history_dropped=int(get(b"history_dropped", b"0")),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view for `pool job` and scripts."""
        return {
            "id": self.id,
            "handler": self.handler,
            "queue": self.queue,
            "args": list(self.args),
            "kwargs": dict(self.kwargs or {}),
            "status": str(self.status),
            "attempts": self.attempts,
            "timeout_ms": self.timeout_ms,
            "result_ttl_ms": self.result_ttl_ms,
            "created_ms": self.created_ms,
            "enqueued_ms": self.enqueued_ms,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "worker": self.worker,
            "result": self.result,
            "error": self.error,
            "traceback": self.traceback,
            "max_retries": self.max_retries,
            "deliveries": self.deliveries,
            "failures": self.failures,
            "due_ms": self.due_ms,
            "updated_ms": self.updated_ms,
            "history": list(self.history),
            "history_dropped": self.history_dropped,
        }

    def outcome(self) -> Any:
        """The result of a finished job, or raise its remote error.

        Raises:
            JobFailed: the job failed; carries the remote error and traceback.
        """
        if self.status in (Status.FAILED, Status.DEAD):
            raise JobFailed(self.id, self.error or "unknown error", self.traceback)
        if self.status is Status.CANCELLED:
            raise JobCancelled(f"job {self.id} was cancelled")
        return self.result


def enqueue_fields(job: Job, args_json: bytes, kwargs_json: bytes, max_payload_bytes: int) -> list[Any]:
    """The flat field/value list written into a new job's hash.

    Raises:
        PayloadTooLarge: the encoded arguments exceed ``max_payload_bytes``.
    """
    size = len(args_json) + len(kwargs_json)
    if size > max_payload_bytes:
        raise PayloadTooLarge(
            f"job for {job.handler} is {size} bytes, over max_payload_size ({max_payload_bytes} bytes); "
            "store large data elsewhere (object storage, a database) and pass a reference"
        )
    fields: list[Any] = [
        "id", job.id, "handler", job.handler, "queue", job.queue,
        "args", args_json, "kwargs", kwargs_json, "status", Status.QUEUED.value,
        "attempts", 0, "created_ms", job.created_ms, "updated_ms", job.created_ms,
    ]
    if job.timeout_ms is not None:
        fields += ["timeout_ms", job.timeout_ms]
    if job.result_ttl_ms is not None:
        fields += ["result_ttl_ms", job.result_ttl_ms]
    if job.max_retries is not None:
        fields += ["max_retries", job.max_retries]
    return fields


@dataclass(frozen=True)
class JobSpec:
    """One job to enqueue with :meth:`AsyncClient.enqueue_many`.

    Args:
        handler: dotted path of a registered handler.
        args: positional arguments (JSON values).
        kwargs: keyword arguments (JSON values).
        queue: target queue; default: the first queue of the config.
        timeout: seconds the job may run; default: the config's ``timeout``.
        result_ttl: seconds its result is kept; default: the config's ``result_ttl``.
        job_id: a chosen id; enqueueing an id that exists on the same queue returns the existing
            job (ids are unique per queue: see :meth:`AsyncClient.get_job`).
        max_retries: retries after a failed attempt (overrides the handler's settings).
        delay: run no earlier than this many seconds from now (a number or a timedelta).
        at: run no earlier than this time (a timezone-aware datetime).
    """

    handler: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    timeout: float | None = None
    result_ttl: float | None = None
    job_id: str | None = None
    max_retries: int | None = None
    delay: float | timedelta | None = None
    at: datetime | None = None


def new_job(
    spec: JobSpec, now_ms: int, *, default_queue: str, max_payload_bytes: int,
    checked: set[tuple[str, str]] | None = None,
) -> tuple[Job, list[Any]]:
    """A new job as it will be stored once created, and the fields of its hash.

    Args:
        spec: what to run, where and how (checked here: names, durations, id, payload).
        now_ms: the moment of the enqueue (epoch ms): ``created_ms``, and the base of ``delay``.
        default_queue: the queue of a spec that names none (the config's first).
        max_payload_bytes: the config's ``max_payload_size``.
        checked: (queue, handler) pairs of one batch already validated (a bulk enqueue of one
            handler checks its names once); updated.

    Returns:
        The `Job` (status ``queued``, or ``delayed`` with its ``due_ms``) and its hash fields.

    Raises:
        UsageError: a bad queue name, handler name, duration, ``max_retries`` or ``job_id``.
        SerializationError: an argument is not JSON-serialisable.
        PayloadTooLarge: the encoded arguments exceed ``max_payload_bytes``.
    """
    queue = spec.queue or default_queue
    _check_names(queue, spec.handler, set() if checked is None else checked)
    timeout_ms = _positive_ms(spec.timeout, "timeout")
    result_ttl_ms = _positive_ms(spec.result_ttl, "result_ttl")
    _check_max_retries(spec.max_retries)
    due_ms = _due_ms(spec.delay, spec.at, now_ms)
    job_id = new_job_id() if spec.job_id is None else _checked_job_id(spec.job_id)
    args_json, kwargs_json = encode_arguments(spec.handler, spec.args, spec.kwargs)
    job = Job(
        id=job_id, handler=spec.handler, queue=queue, args=tuple(spec.args),
        kwargs=dict(spec.kwargs), timeout_ms=timeout_ms, result_ttl_ms=result_ttl_ms,
        created_ms=now_ms, max_retries=spec.max_retries, due_ms=due_ms, enqueued_ms=now_ms,
        status=Status.DELAYED if due_ms else Status.QUEUED,
    )
    return job, enqueue_fields(job, args_json, kwargs_json, max_payload_bytes)


def _check_names(queue: str, handler: str, checked: set[tuple[str, str]]) -> None:
    names = (queue, handler) if isinstance(queue, str) and isinstance(handler, str) else None
    if names is not None and names in checked:
        return
    if not is_valid_queue_name(queue):
        raise UsageError(f"queue {queue!r} is not a valid queue name: {QUEUE_NAME_RULE}")
    if not is_dotted_path(handler, min_parts=2):
        raise UsageError(f"handler {handler!r} must be {_HANDLER_NAME_RULE}")
    if names is not None:
        checked.add(names)


def _check_max_retries(max_retries: int | None) -> None:
    if max_retries is not None and (isinstance(max_retries, bool) or not isinstance(
            max_retries, int) or not 0 <= max_retries <= MAX_RETRIES):
        raise UsageError(f"max_retries must be an integer from 0 to {MAX_RETRIES} (got {max_retries!r})")


def _checked_job_id(job_id: str) -> str:
    if not job_id or len(job_id) > 128 or any(c.isspace() for c in job_id):
        raise UsageError(f"job_id {job_id!r} must be 1-128 characters without spaces")
    return job_id


def _due_ms(delay: float | timedelta | None, at: datetime | None, now_ms: int) -> int | None:
    """When a delayed job falls due (epoch ms), or None to run it now; at most MAX_DURATION_S ahead."""
    if delay is not None and at is not None:
        raise UsageError("give either delay or at, not both")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if not is_valid_seconds(seconds, 0, allow_zero=True):
            raise UsageError(f"delay must be a number of seconds from 0 to {MAX_DURATION_S:.0f} ({MAX_DURATION_TEXT}) "
                             f"or a timedelta (got {delay!r})")
        due = now_ms + int(seconds * 1000)
    elif at is not None:
        if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
            raise UsageError(f"at must be a timezone-aware datetime, e.g. datetime.now(UTC) + ... (got {at!r})")
        due = int(at.timestamp() * 1000)
        if due - now_ms > MAX_DURATION_S * 1000:
            raise UsageError(f"at must be at most {MAX_DURATION_TEXT} from now (got {at.isoformat()})")
    else:
        return None
    return due if due > now_ms else None


def _positive_ms(seconds: float | None, name: str) -> int | None:
    """A job's timeout or result_ttl in ms, checked as the config's own durations are."""
    if seconds is None:
        return None
    if not is_valid_seconds(seconds, 0.001):
        raise UsageError(f"{name} must be a number of seconds from 0.001 to {MAX_DURATION_S:.0f} "
                         f"({MAX_DURATION_TEXT}) (got {seconds!r})")
    return max(1, int(seconds * 1000))


def _int_or_none(raw: bytes | None) -> int | None:
    return int(raw) if raw else None


def _str_or_none(raw: bytes | None) -> str | None:
    return raw.decode() if raw else None
