"""SAQ: `saq <settings> --workers P` (P processes, multiprocessing), ``concurrency = C`` each
(asyncio tasks). SAQ has no fire-and-forget bulk enqueue (``Queue.map`` waits for results):
``Queue.enqueue`` awaited in a loop. SAQ passes keyword arguments only, so the payload is one.
"""

from __future__ import annotations

from typing import Any

from saq import Queue

from bench.peer_tasks import body
from bench.peer_tasks.base import AsyncPeer, concurrency, redis_url, tool


async def noop(ctx: dict[str, Any], *, payload: str | None = None) -> None:
    body.noop(payload)


async def sleep(ctx: dict[str, Any]) -> None:
    await body.sleep_async()


settings = {
    "queue": Queue.from_url(redis_url()),
    "functions": [noop, sleep],
    "concurrency": concurrency(),
}


class Adapter(AsyncPeer):
    name = "saq"
    dists = ("saq",)
    mapping = "`saq --workers P`, concurrency=C"
    enqueue_path = "Queue.enqueue awaited in a loop (no bulk API)"

    async def connect(self) -> None:
        self.queue = Queue.from_url(self.shape.url)
        await self.queue.connect()

    async def disconnect(self) -> None:
        await self.queue.disconnect()

    def worker_commands(self) -> list[list[str]]:
        return [[tool("saq"), f"{__name__}.settings", "--workers", str(self.shape.processes)]]

    async def enqueue_async(self, name: str, args: tuple[object, ...], count: int) -> None:
        kwargs = {"payload": args[0]} if args else {}
        for _ in range(count):
            await self.queue.enqueue(name, **kwargs)
