"""The code around handlers, on a real worker: pool.current_job(), the log records of finished
jobs as other logging handlers (Sentry, OpenTelemetry) see them, and on_startup failures."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import pytest

import pool
from pool import AsyncClient, Status
from pool.clock import now_ms
from pool.errors import ExitCode
from pool.handlers import load_registry
from pool.keys import make_worker_id
from pool.testing import drain
from pool.worker import Worker
from tests.conftest import pool_of

HOOKS = "tests.hook_handlers"
SAMPLES = "tests.sample_handlers"


@pytest.fixture
def config(make_config):
    return make_config(handlers=[SAMPLES, f"{HOOKS}.whoami", f"{HOOKS}.whoami_async", f"{HOOKS}.attempt_after_retry"])


@pytest.fixture
def job_records() -> Iterator[list[logging.LogRecord]]:
    """Every record of the `pool.jobs` logger, as a non-pool handler receives it."""
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("pool.jobs")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


async def _run(config, url, handler, *args, **options):
    async with AsyncClient(config, url) as client:
        job = await client.enqueue(handler, *args, **options)
        await drain(config, url)
        return await client.get_job(job.id)


@pytest.mark.parametrize("handler", [f"{HOOKS}.whoami_async", f"{HOOKS}.whoami"])
async def test_current_job_describes_the_running_job_in_async_and_thread_handlers(config, url, handler):
    before_ms = now_ms()
    done = await _run(config, url, handler, queue="default", timeout=7)
    after_ms = now_ms()
    assert done.status is Status.COMPLETED, done.error
    seen = done.result
    assert (seen["id"], seen["queue"], seen["handler"], seen["attempt"]) == (done.id, "default", handler, 1)
    assert seen["enqueued_ms"] == done.enqueued_ms
    assert before_ms + 7000 <= seen["deadline_ms"] <= after_ms + 7000


async def test_current_job_counts_the_attempt(config, url, r):
    async with pool_of(config, url, r) as client:
        job = await client.enqueue(f"{HOOKS}.attempt_after_retry", max_retries=1)
        assert await client.result(job.id, timeout=10) == 2


def test_current_job_is_none_outside_a_job():
    assert pool.current_job() is None


async def test_failed_and_dead_jobs_are_error_records_with_the_exception(make_config, url, job_records):
    # Given a handler whose failures go to the dead set, and one whose failures end as failed
    config = make_config(handlers=[SAMPLES, {"path": f"{SAMPLES}.async_explode", "dead_letter": False}])
    dead = await _run(config, url, f"{SAMPLES}.explode", "sync boom")
    failed = await _run(config, url, f"{SAMPLES}.async_explode", "async boom")
    assert (dead.status, failed.status) == (Status.DEAD, Status.FAILED)
    # Then each is one ERROR record with the exception attached and the job's fields
    by_id = {getattr(r, "job_id", None): r for r in job_records}
    for job, kind, message in ((dead, ValueError, "sync boom"), (failed, KeyError, "async boom")):
        record = by_id[job.id]
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None and record.exc_info[0] is kind
        assert record.exc_info[1].args == (message,) and record.exc_info[2] is not None
        assert (record.queue, record.handler, record.attempt, record.outcome) == (
            "default", job.handler, 1, job.status.value)


async def test_a_retry_is_a_warning_and_a_completed_job_names_itself(config, url, r, job_records, tmp_path):
    async with pool_of(config, url, r) as client:
        retried = await client.enqueue(f"{SAMPLES}.flaky", str(tmp_path / "counter"), 1, max_retries=1)
        assert await client.result(retried.id, timeout=10) == 2
    # The failed first attempt: a warning, no exception (the retry may well succeed)
    first = next(r for r in job_records if r.levelno == logging.WARNING)
    assert first.job_id == retried.id and first.attempt == 1 and first.exc_info is None
    # The completed second: a record whose message and fields name the job, for any handler
    completed = next(r for r in job_records if r.levelno == logging.INFO)
    assert completed.getMessage().startswith(f"job {retried.id} {SAMPLES}.flaky queue=default wait=")
    assert completed.getMessage().endswith("ms completed")
    assert (completed.job_id, completed.handler, completed.outcome) == (retried.id, f"{SAMPLES}.flaky", "completed")


async def test_a_worker_whose_on_startup_hook_raises_exits_boot_without_claiming(make_config, url, caplog):
    config = make_config(on_startup=f"{HOOKS}.failing_startup")
    async with AsyncClient(config, url) as client:
        job = await client.enqueue(f"{SAMPLES}.add", 1, 2)
        worker = Worker(config, load_registry(config.handlers, config.base_dir), make_worker_id(secrets.token_hex(3)),
                        url=url, burst=True)
        await worker.run()
        assert worker.exit_code == ExitCode.BOOT
        assert (await client.get_job(job.id)).status is Status.QUEUED
    failure = next(r for r in caplog.records if "on_startup hook" in r.getMessage())
    assert failure.levelno == logging.ERROR and failure.exc_info[0] is RuntimeError
