"""What an adapter is: how to start a system's workers as its users do, and how to enqueue to it.

The bench process enqueues (one client process) and the workers run as the system's own CLI in
subprocesses. Worker modules read the Redis URL and the concurrency C from the environment at
import (BENCH_REDIS_URL, BENCH_CONCURRENCY); bench/peers.py sets both in its own process too,
before it imports an adapter, so both sides build the same app object.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from bench.peer_tasks.body import WORKLOADS

if TYPE_CHECKING:
    from bench.harness import PrivateServer

URL_ENV = "BENCH_REDIS_URL"
CONCURRENCY_ENV = "BENCH_CONCURRENCY"
T = TypeVar("T")


def redis_url() -> str:
    return os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0")


def concurrency() -> int:
    return int(os.environ.get(CONCURRENCY_ENV, "50"))


def tool(name: str) -> str:
    """A console script of this venv (`arq`, `celery` ...), as a user would type it."""
    return str(Path(sys.executable).parent / name)


@dataclass(frozen=True)
class Shape:
    """P worker processes x C concurrent jobs each, on the bench's private server."""

    processes: int
    concurrency: int
    server: PrivateServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def workdir(self) -> Path:
        return self.server.workdir


class Peer:
    """One system under test. Subclasses say how P x C maps onto it (``mapping``, also printed)."""

    name: ClassVar[str]
    dists: ClassVar[tuple[str, ...]]  # distributions whose versions the report shows
    mapping: ClassVar[str]
    enqueue_path: ClassVar[str]

    def __init__(self, shape: Shape) -> None:
        self.shape = shape

    def open(self) -> None:
        """Connect the client side; called once per run, after the server was flushed."""

    def close(self) -> None:
        """Drop the client side's connections."""

    def worker_commands(self) -> list[list[str]]:
        """One command per process group to start; each is stopped with its whole group."""
        raise NotImplementedError

    def enqueue(self, workload: str, count: int) -> None:
        """Enqueue ``count`` jobs of ``workload`` the fastest documented way."""
        raise NotImplementedError

    def enqueue_one(self, workload: str) -> None:
        """Enqueue a single job (the latency probe)."""
        self.enqueue(workload, 1)

    @staticmethod
    def job(workload: str) -> tuple[str, tuple[object, ...]]:
        return WORKLOADS[workload]


class AsyncPeer(Peer):
    """A peer whose client is asyncio: one event loop per run, kept for the single enqueues."""

    def open(self) -> None:
        self._runner = asyncio.Runner()
        self.run(self.connect())

    def close(self) -> None:
        try:
            self.run(self.disconnect())
        finally:
            self._runner.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coroutine)

    def enqueue(self, workload: str, count: int) -> None:
        name, args = self.job(workload)
        self.run(self.enqueue_async(name, args, count))

    async def connect(self) -> None:
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError

    async def enqueue_async(self, name: str, args: tuple[object, ...], count: int) -> None:
        raise NotImplementedError
