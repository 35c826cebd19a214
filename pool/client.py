"""`Client`: the synchronous twin of `AsyncClient`, and the import path of both.

`from pool.client import AsyncClient, Client, JobSpec` is the public spelling; the asyncio client
that does the work lives in async_client.py, `JobSpec` beside `new_job` in jobs.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pool.async_client import CHUNKS_PER_ROUND_TRIP, ENQUEUE_CHUNK, AsyncClient
from pool.config import Config, load
from pool.jobs import Job, JobSpec
from pool.listing import JobPage

__all__ = ["CHUNKS_PER_ROUND_TRIP", "ENQUEUE_CHUNK", "AsyncClient", "Client", "JobSpec"]


class Client:
    """The synchronous twin of :class:`AsyncClient`, for scripts and sync web frameworks.

    Calls run on a private event loop; a lock makes one Client safe to share between
    threads. Do not call it from inside a running event loop: use :class:`AsyncClient` there.
    The loop is driven with ``run_until_complete``, not ``asyncio.Runner``: the Runner swaps the
    SIGINT handler on every call, which was a quarter of a single enqueue's time.
    """

    def __init__(self, config: Config, url: str | None = None) -> None:
        self._async = AsyncClient(config, url)
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, path: str | Path, url: str | None = None) -> Client:
        """A client for the pool described by the YAML file at ``path``."""
        return cls(load(path), url)

    @property
    def config(self) -> Config:
        return self._async.config

    def _run(self, coroutine: Any) -> Any:
        with self._lock:
            return self._loop.run_until_complete(coroutine)

    def enqueue(
        self, handler: str, *args: Any, kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None, timeout: float | None = None, result_ttl: float | None = None,
        job_id: str | None = None, max_retries: int | None = None,
        delay: float | timedelta | None = None, at: datetime | None = None,
    ) -> Job:
        """Enqueue one job; see :meth:`AsyncClient.enqueue` (the same options, spelled out here so
        that editors and type checkers see them; tests/unit/test_client_api.py keeps the two equal)."""
        return self._run(self._async.enqueue(
            handler, *args, kwargs=kwargs, queue=queue, timeout=timeout, result_ttl=result_ttl, job_id=job_id,
            max_retries=max_retries, delay=delay, at=at))

    def enqueue_many(self, specs: Iterable[JobSpec]) -> list[Job]:
        """Enqueue many jobs in one round trip; see :meth:`AsyncClient.enqueue_many`."""
        return self._run(self._async.enqueue_many(list(specs)))

    def get_job(self, job_id: str, queue: str | None = None) -> Job | None:
        """Look a job up; see :meth:`AsyncClient.get_job`."""
        return self._run(self._async.get_job(job_id, queue))

    def result(self, job_id: str, timeout: float | None = None, queue: str | None = None) -> Any:
        """Wait for a job's result; see :meth:`AsyncClient.result`."""
        return self._run(self._async.result(job_id, timeout, queue))

    def wait(self, job_id: str, timeout: float | None = None, queue: str | None = None) -> Job:
        """Wait for a job to finish; see :meth:`AsyncClient.wait`."""
        return self._run(self._async.wait(job_id, timeout, queue))

    def cancel(self, job_id: str, queue: str | None = None) -> str:
        """Cancel a job; see :meth:`AsyncClient.cancel`."""
        return self._run(self._async.cancel(job_id, queue))

    def dead_jobs(self, queue: str | None = None, limit: int = 100) -> list[Job]:
        """The most recent dead jobs; see :meth:`AsyncClient.dead_jobs`."""
        return self._run(self._async.dead_jobs(queue, limit))

    def jobs(self, queue: str | None = None, status: str = "queued", offset: int = 0, limit: int = 20) -> JobPage:
        """One page of a queue's jobs in one state; see :meth:`AsyncClient.jobs`."""
        return self._run(self._async.jobs(queue, status, offset, limit))

    def retry_dead(self, job_ids: Iterable[str] = (), queue: str | None = None, *, all: bool = False,
                   on_progress: Callable[[int, int], None] | None = None) -> int:
        """Send dead jobs back to their queues; see :meth:`AsyncClient.retry_dead`."""
        return self._run(self._async.retry_dead(list(job_ids), queue, all=all, on_progress=on_progress))

    def purge_dead(self, job_ids: Iterable[str] = (), queue: str | None = None, *, all: bool = False,
                   on_progress: Callable[[int, int], None] | None = None) -> int:
        """Delete dead jobs; see :meth:`AsyncClient.purge_dead`."""
        return self._run(self._async.purge_dead(list(job_ids), queue, all=all, on_progress=on_progress))

    def events(self, queues: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Yield finished attempts' events; see :meth:`AsyncClient.events`."""
        stream = self._async.events(queues)
        try:
            while True:
                yield self._run(stream.__anext__())
        finally:
            self._run(stream.aclose())

    def close(self) -> None:
        with self._lock:
            self._loop.run_until_complete(self._async.close())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
