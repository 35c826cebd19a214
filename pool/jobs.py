"""The `Job` record, its statuses, and how it is encoded in its Redis hash (orjson, never pickle).

A job hash holds flat string fields so that Lua scripts can update single fields (status,
attempts, timestamps) without decoding JSON. Only ``args``, ``kwargs`` and ``result`` are JSON.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pool.errors import CorruptJob, JobCancelled, JobFailed, PayloadTooLarge, SerializationError


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
    history: tuple[dict[str, Any], ...] = ()

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


def _int_or_none(raw: bytes | None) -> int | None:
    return int(raw) if raw else None


def _str_or_none(raw: bytes | None) -> str | None:
    return raw.decode() if raw else None
