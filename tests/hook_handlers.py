"""Hooks and handlers for the tests of the code around handlers: on_startup / on_shutdown,
pool.current_job(), failure log records.

The hooks take no arguments, so they write their markers under the current directory: a test's
`pool run` runs in its tmp_path (one file per process, ``hook-markers/<pid>``), and an in-process
test changes into its tmp_path first. Register handlers from here by function (not the module):
the hooks must not become handlers.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pool import Retry, current_job

MARKERS = Path("hook-markers")


def _mark(event: str) -> None:
    MARKERS.mkdir(exist_ok=True)
    with open(MARKERS / str(os.getpid()), "a") as fh:
        fh.write(event + "\n")


def record_startup() -> None:
    _mark("startup")


async def record_startup_async() -> None:
    await asyncio.sleep(0)  # a real await: the hook runs on the worker's event loop
    _mark("startup-async")


def record_shutdown() -> None:
    _mark("shutdown")


async def record_shutdown_async() -> None:
    await asyncio.sleep(0)
    _mark("shutdown-async")


def failing_startup() -> None:
    raise RuntimeError("no database at db:5432")


async def failing_shutdown() -> None:
    raise RuntimeError("closing the database pool failed")


def marked_job() -> int:
    """A job that leaves its mark in its process's file, between that process's hooks."""
    _mark("job")
    return os.getpid()


def _described() -> dict[str, object] | None:
    job = current_job()
    if job is None:
        return None
    return {"id": job.id, "queue": job.queue, "handler": job.handler, "attempt": job.attempt,
            "enqueued_ms": job.enqueued_ms, "deadline_ms": job.deadline_ms}


def whoami() -> dict[str, object] | None:
    """Plain handler (runs in the thread pool): current_job() as a dict."""
    return _described()


async def whoami_async() -> dict[str, object] | None:
    await asyncio.sleep(0)
    return _described()


async def attempt_after_retry() -> int:
    """Ask for one retry, then return the attempt current_job() reports."""
    job = current_job()
    assert job is not None
    if job.attempt == 1:
        raise Retry(delay=0.01)
    return job.attempt

