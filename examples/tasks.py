"""Example handlers registered by the root pool.yaml (`handlers: [examples.tasks, ...]`).

Every public function of this module becomes a handler named by its dotted path, such as
`examples.tasks.add`. Plain functions run in the worker's thread pool; `async def` ones run on
its event loop.
"""

from __future__ import annotations

import asyncio
import time


def add(a: float, b: float) -> float:
    """Add two numbers: `pool enqueue pool.yaml examples.tasks.add 1 2 --wait` prints 3."""
    return a + b


async def sleep(seconds: float) -> float:
    """Wait without blocking the worker (asyncio); returns the seconds slept."""
    await asyncio.sleep(seconds)
    return seconds


def block(seconds: float) -> float:
    """Block a thread-pool slot (a plain function doing blocking work)."""
    time.sleep(seconds)
    return seconds


def word_count(text: str) -> dict[str, int]:
    """Count words in a text, e.g. a document pulled off a request path."""
    counts: dict[str, int] = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts


def fail(message: str = "this job always fails") -> None:
    """Raise an error: shows how failures and remote tracebacks look."""
    raise RuntimeError(message)
