"""The task body every system runs, and the shared-memory counters it writes.

The body must not touch Redis: a probe that wrote to Redis would add its own commands to the
Redis CPU being measured. Each worker process instead opens (on its first job) an mmap'd file
``<BENCH_COUNTER_DIR>/<pid>`` holding one record, and the bench reads those files: the sum of the
counts says when all jobs are done, min(first start) .. max(last finish) is the processing
window, and the last start of a single job on an idle pool is its start time for the latency.
Times are CLOCK_MONOTONIC (time.monotonic_ns), which is one clock for every process on Linux.

A record costs a lock, a clock read and a ``struct.pack_into``: about a microsecond.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import threading
import time
from pathlib import Path

COUNTER_DIR_ENV = "BENCH_COUNTER_DIR"
RECORD = struct.Struct("<qqqq")  # count, first_start_ns, last_finish_ns, last_start_ns
SLEEP_S = 0.01
PAYLOAD = "x" * 10_240

# workload -> (task name, positional arguments); every system registers tasks named noop and sleep
WORKLOADS: dict[str, tuple[str, tuple[object, ...]]] = {
    "noop": ("noop", ()),
    "sleep": ("sleep", ()),
    "payload": ("noop", (PAYLOAD,)),
}


class Counter:
    """One process's record. Threaded workers share it, hence the lock; the file is opened without
    truncation so that a later process with the same key (RQ's work horses) continues the count."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < RECORD.size:
                os.ftruncate(fd, RECORD.size)
            self._map = mmap.mmap(fd, RECORD.size)
        finally:
            os.close(fd)
        self._count, self._first, self._finish, self._start = RECORD.unpack_from(self._map)
        self._lock = threading.Lock()

    def started(self) -> None:
        now = time.monotonic_ns()
        with self._lock:
            self._first = self._first or now
            self._start = now
            RECORD.pack_into(self._map, 0, self._count, self._first, self._finish, self._start)

    def finished(self) -> None:
        now = time.monotonic_ns()
        with self._lock:
            self._count += 1
            self._finish = now
            RECORD.pack_into(self._map, 0, self._count, self._first, self._finish, self._start)


_counter: Counter | None = None
_counter_pid = 0
_opening = threading.Lock()


def counter(key: int | None = None) -> Counter:
    """This process's counter, opened on first use (and again in a forked child).

    ``key`` names the file instead of the pid: RQ forks a work horse per job, one at a time per
    worker, so its horses count into their worker's file rather than leaving one file per job.
    """
    global _counter, _counter_pid
    pid = os.getpid()
    if _counter is None or _counter_pid != pid:
        with _opening:  # a thread pool's first jobs all arrive here at once
            if _counter is None or _counter_pid != pid:
                _counter = Counter(Path(os.environ[COUNTER_DIR_ENV]) / str(key or pid))
                _counter_pid = pid
    return _counter


def noop(*_payload: object, key: int | None = None) -> None:
    """The noop and payload workloads (the payload, 10 KB, is only received)."""
    record = counter(key)
    record.started()
    record.finished()


def sleep_sync(key: int | None = None) -> None:
    """The sleep workload for thread and process workers."""
    record = counter(key)
    record.started()
    time.sleep(SLEEP_S)
    record.finished()


async def sleep_async() -> None:
    """The sleep workload for asyncio workers."""
    record = counter()
    record.started()
    await asyncio.sleep(SLEEP_S)
    record.finished()


def read_record(path: Path) -> tuple[int, int, int, int] | None:
    """One counter file's record, or None while its writer has not sized it yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return RECORD.unpack_from(data) if len(data) >= RECORD.size else None  # type: ignore[return-value]
