"""Job encoding: JSON only, clear errors for what JSON cannot carry, size limits."""

from __future__ import annotations

import datetime

import pytest

from pool.errors import JobFailed, PayloadTooLarge, SerializationError, UsageError
from pool.jobs import Job, JobSpec, Status, encode_arguments, enqueue_fields, new_job


def test_arguments_encode_as_json():
    args, kwargs = encode_arguments("m.f", (1, "two", [3]), {"x": {"y": None}})
    assert args == b'[1,"two",[3]]'
    assert kwargs == b'{"x":{"y":null}}'


def test_non_serialisable_argument_is_named():
    with pytest.raises(SerializationError) as info:
        encode_arguments("m.f", (1, object()), {})
    assert str(info.value).startswith("argument 1 of m.f is not JSON-serialisable (object:")
    assert "pool never pickles" in str(info.value)


def test_non_serialisable_keyword_argument_is_named():
    with pytest.raises(SerializationError, match="keyword argument 'when' of m.f is not JSON-serialisable"):
        encode_arguments("m.f", (), {"when": {1, 2}})


def test_non_string_dict_keys_are_refused():
    with pytest.raises(SerializationError, match="argument 0 of m.f"):
        encode_arguments("m.f", ({1: "a"},), {})


def test_datetimes_travel_as_iso_strings():
    args, _ = encode_arguments("m.f", (datetime.date(2026, 1, 2),), {})
    assert args == b'["2026-01-02"]'


def test_payload_over_limit_is_refused():
    job = Job(id="j", handler="m.f", queue="default", created_ms=1)
    args, kwargs = encode_arguments("m.f", ("x" * 200,), {})
    with pytest.raises(PayloadTooLarge, match=r"job for m.f is 2\d\d bytes, over max_payload_size \(100 bytes\)"):
        enqueue_fields(job, args, kwargs, 100)


def test_record_round_trips_through_a_hash():
    job = Job(id="j1", handler="m.f", queue="q", args=(1,), kwargs={"a": 2}, created_ms=5, timeout_ms=700)
    args, kwargs = encode_arguments(job.handler, job.args, job.kwargs)
    flat = enqueue_fields(job, args, kwargs, 10_000)
    raw = {str(k).encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in zip(flat[::2], flat[1::2], strict=False)}
    back = Job.from_hash(raw)
    assert (back.id, back.handler, back.queue, back.args, back.kwargs) == ("j1", "m.f", "q", (1,), {"a": 2})
    assert (back.status, back.attempts, back.timeout_ms, back.created_ms) == (Status.QUEUED, 0, 700, 5)


def test_outcome_raises_remote_error_with_traceback():
    job = Job(id="j", handler="m.f", queue="q", status=Status.FAILED, error="ValueError: no", traceback="Traceback ...\nValueError: no")
    with pytest.raises(JobFailed) as info:
        job.outcome()
    assert info.value.error == "ValueError: no"
    assert "Remote traceback:\nTraceback ...\nValueError: no" in str(info.value)


def test_outcome_returns_result():
    assert Job(id="j", handler="m.f", queue="q", status=Status.COMPLETED, result=[1]).outcome() == [1]


def test_dead_job_outcome_raises_its_reason():
    job = Job(id="j", handler="m.f", queue="q", status=Status.DEAD, error="PoisonJob: delivered 5 times")
    assert job.status.is_finished
    with pytest.raises(JobFailed, match="PoisonJob: delivered 5 times"):
        job.outcome()


class _FireRecorder:
    """Scripts stand-in for the scheduler: records the fields fire.lua would store."""

    def __init__(self, keys):
        self.keys = keys
        self.fields = None

    async def fire(self, queue, name, tick_ms, now_ms, job_id, fields):
        self.fields = fields
        return 1


async def test_the_client_and_the_scheduler_build_the_same_job_record(monkeypatch):
    """A schedule's tick and a client enqueue of the same job write the same hash fields."""
    import asyncio

    from pool import clock
    from pool.client import AsyncClient
    from pool.config import from_mapping
    from pool.keys import Keys
    from pool.worker.scheduler import Scheduler
    from pool.worker.shared import WorkerContext

    monkeypatch.setattr(clock, "now_ms", lambda: 1_000_000)
    config = from_mapping({"queues": ["default", "reports"], "schedules": {"nightly": {
        "handler": "examples.tasks.add", "every": "1m", "args": [1, 2], "kwargs": {"x": "y"},
        "queue": "reports", "timeout": "2s"}}})
    [schedule] = config.schedules
    scripts = _FireRecorder(Keys(config.key_prefix))
    context = WorkerContext(config, "w", None, scripts, None, None, asyncio.Event())  # type: ignore[arg-type]
    scheduler = Scheduler(context)
    await scheduler._fire(schedule, 960_000)

    client = AsyncClient(config, url="redis://unused")
    sent = []

    async def send_batches(batches, now_ms):
        sent.extend(batches)
        return [[1] * len(batch) for _, batch in batches]

    monkeypatch.setattr(client, "_send_batches", send_batches)
    [job] = await client.enqueue_many([JobSpec("examples.tasks.add", (1, 2), {"x": "y"}, queue="reports",
                                               timeout=2, job_id=schedule.job_id(960_000))])
    [(queue, [(job_id, due_ms, fields)])] = sent
    assert (queue, job_id, due_ms) == ("reports", "nightly@960000", 0) and job.timeout_ms == 2000
    assert fields == scripts.fields
    assert fields[::2] == ["id", "handler", "queue", "args", "kwargs", "status", "attempts", "created_ms",
                           "updated_ms", "timeout_ms"]


def test_new_job_checks_the_spec_and_fills_the_record():
    """new_job refuses a bad handler name and sets the queue, status and times of a delayed job."""
    with pytest.raises(UsageError, match="handler 'add' must be a dotted path"):
        new_job(JobSpec("add"), 0, default_queue="default", max_payload_bytes=1024)
    job, fields = new_job(JobSpec("m.f", delay=5), 1000, default_queue="default", max_payload_bytes=1024)
    assert (job.queue, job.status, job.due_ms, job.created_ms, job.enqueued_ms) == \
        ("default", Status.DELAYED, 6000, 1000, 1000)
    assert fields[fields.index("status") + 1] == "queued"  # enqueue.lua sets "delayed" as it files it
