"""pool itself: `pool run pool.yaml` with ``processes: P`` and ``concurrency: C`` (P forked worker
processes, C asyncio job slots each). The tasks are async def, as for the other asyncio systems,
so they run on the worker's event loop. Enqueue: ``Client.enqueue_many`` in batches of 1,000.

This module is the handler module named in the run's pool.yaml (``handlers:``): its public
functions are the handlers, so helpers here are private.
"""

from __future__ import annotations

from bench.peer_tasks import body
from bench.peer_tasks.base import Peer, tool
from pool import Client, JobSpec

BATCH = 1000


async def noop(*payload: object) -> None:
    body.noop(*payload)


async def sleep() -> None:
    await body.sleep_async()


class Adapter(Peer):
    name = "pool"
    dists = ("pool-jobs",)
    mapping = "pool run: P forked workers x C asyncio slots"
    enqueue_path = f"Client.enqueue_many, {BATCH} per call"

    def open(self) -> None:
        self.config = self.shape.server.write_config(handlers=[__name__])
        self.client = Client.from_config(self.config)

    def close(self) -> None:
        self.client.close()

    def worker_commands(self) -> list[list[str]]:
        return [[tool("pool"), "run", str(self.config)]]

    def enqueue(self, workload: str, count: int) -> None:
        name, args = self.job(workload)
        handler = f"{__name__}.{name}"
        for start in range(0, count, BATCH):
            self.client.enqueue_many([JobSpec(handler, args) for _ in range(min(BATCH, count - start))])

    def enqueue_one(self, workload: str) -> None:
        name, args = self.job(workload)
        self.client.enqueue(f"{__name__}.{name}", *args)
