"""Handlers used by the tests (registered as the module `tests.sample_handlers`)."""

from __future__ import annotations

import asyncio
import os
import threading
import time


def add(a: float, b: float) -> float:
    return a + b


async def async_add(a: float, b: float) -> float:
    await asyncio.sleep(0)
    return a + b


def thread_name() -> str:
    """Which thread ran me: plain functions must run in the worker's job thread pool."""
    return threading.current_thread().name


async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def sync_sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def explode(message: str) -> None:
    raise ValueError(message)


async def async_explode(message: str) -> None:
    raise KeyError(message)


def unserialisable_result() -> object:
    return {1, 2, 3}


def echo(*args: object, **kwargs: object) -> dict[str, object]:
    return {"args": list(args), "kwargs": kwargs}


def pid() -> int:
    return os.getpid()


async def wait_for_file(path: str, seconds: float = 30.0) -> str:
    """Run until `path` exists (lets a test hold a job in flight), then return its contents."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        await asyncio.sleep(0.01)
    with open(path) as fh:
        return fh.read()


def touch_then_block(path: str, seconds: float) -> str:
    """Signal that the job has started (creates `path`), then block."""
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)
    return "finished"


async def touch_then_sleep(path: str, seconds: float) -> str:
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    await asyncio.sleep(seconds)
    return "finished"


_active = 0
_peak = 0
_lock = threading.Lock()


async def track_concurrency(seconds: float) -> int:
    """Record how many of these run at once in this process; returns the peak seen so far."""
    global _active, _peak
    with _lock:
        _active += 1
        _peak = max(_peak, _active)
    try:
        await asyncio.sleep(seconds)
    finally:
        with _lock:
            _active -= 1
    return _peak


async def start_then_wait(started: str, release: str, seconds: float = 60.0) -> int:
    """Append this process's pid to `started`, then run until `release` exists; returns the pid."""
    with open(started, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    await wait_for_file(release, seconds)
    return os.getpid()


def exits(code: int) -> None:
    """A handler calling sys.exit must fail its job, not stop the worker."""
    raise SystemExit(code)


def journal(path: str, key: str, sleep_ms: float = 0.0) -> str:
    """Append start/end lines (key, pid, wall time) to `path`: an account of runs kept outside Redis."""
    with open(path, "a") as fh:
        fh.write(f"start {key} {os.getpid()} {time.time():.6f}\n")
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    with open(path, "a") as fh:
        fh.write(f"end {key} {os.getpid()} {time.time():.6f}\n")
    return key


def kill_own_process() -> None:
    """A poison job: SIGKILLs the worker process running it."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


async def freeze_event_loop(seconds: float) -> None:
    """A badly written async handler: a blocking call that freezes the worker's event loop."""
    time.sleep(seconds)


async def freeze_when_cancelled(started: str) -> None:
    """Create `started`, wait; once cancelled (a stopping worker past its shutdown_timeout),
    block the event loop: a loop that freezes while its worker stops."""
    with open(started, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        time.sleep(3600)
        raise


def _count_attempt(counter: str) -> int:
    """Count this attempt in a file (attempts may run in different processes)."""
    attempt = 1
    if os.path.exists(counter):
        with open(counter) as fh:
            attempt = int(fh.read()) + 1
    with open(counter, "w") as fh:
        fh.write(str(attempt))
    return attempt


def flaky(counter: str, failures: int, error: str = "ConnectionError") -> int:
    """Fail the first `failures` attempts (counted in a file), then return the attempt number."""
    attempt = _count_attempt(counter)
    if attempt <= failures:
        raise {"ConnectionError": ConnectionError, "ValueError": ValueError, "KeyError": KeyError}[error](
            f"attempt {attempt} failed")
    return attempt


def ask_for_retry(counter: str, delay: float) -> int:
    """Raise pool.Retry(delay=...) on the first attempt."""
    from pool import Retry

    attempt = _count_attempt(counter)
    if attempt == 1:
        raise Retry(delay=delay, reason="not ready yet")
    return attempt


def fail_until_exists(path: str) -> str:
    """Fail while `path` is missing: a job an operator fixes, then retries from the dead set."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing")
    return "found"


def big_result(size: int) -> str:
    return "x" * size



from pool import task  # noqa: E402 - the decorator is part of what these handlers test


@task(max_retries=2, backoff=0.05)
def decorated_flaky(counter: str, failures: int) -> int:
    """Retry settings from the decorator."""
    return flaky(counter, failures)


async def raise_cancelled() -> None:
    """A handler whose inner task was cancelled lets CancelledError escape."""
    raise asyncio.CancelledError


class ForeignCancel(BaseException):
    """A library's own BaseException, such as gevent's Timeout or trio's Cancelled."""


def raise_base_exception() -> None:
    raise ForeignCancel("from a library")


async def async_raise_base_exception() -> None:
    raise ForeignCancel("from a library")


async def raise_generator_exit() -> None:
    raise GeneratorExit


def raise_keyboard_interrupt() -> None:
    """Raised inside the handler's thread: the handler's, not a signal."""
    raise KeyboardInterrupt


def exit_process(code: int) -> None:
    """A poison job: ends the worker process at once, with no clean-up (a C library's exit())."""
    os._exit(code)


def segfault() -> None:
    """A poison job: crashes the worker process with SIGSEGV (a broken C extension)."""
    import ctypes

    ctypes.string_at(0)


async def hold_memory(mib: int, seconds: float) -> None:
    """A job that needs more memory than its process may use, for a long time."""
    block = b"\x01" * (mib * 2**20)  # written, so resident (a zeroed bytearray may not be)
    await asyncio.sleep(seconds)
    del block
