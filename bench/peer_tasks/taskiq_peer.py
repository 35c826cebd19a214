"""taskiq with taskiq-redis: `taskiq worker <module>:broker --workers P --max-async-tasks C`.

The broker is ``RedisStreamBroker``, the one taskiq-redis's README sets up (the stream broker
acknowledges; ``ListQueueBroker`` is the plain LPUSH/BRPOP one and loses a job whose worker dies).
No result backend (taskiq's default). No bulk enqueue: ``kiq()`` awaited in a loop.

The client must run ``broker.startup()`` before enqueueing: it creates the stream's consumer
group. A worker creates the group at ``$`` (new messages only), so jobs added to the stream
before any group exists are never delivered.
"""

from __future__ import annotations

from taskiq_redis import RedisStreamBroker

from bench.peer_tasks import body
from bench.peer_tasks.base import AsyncPeer, redis_url, tool

broker = RedisStreamBroker(url=redis_url())


@broker.task(task_name="noop")
async def noop(*payload: object) -> None:
    body.noop(*payload)


@broker.task(task_name="sleep")
async def sleep() -> None:
    await body.sleep_async()


TASKS = {"noop": noop, "sleep": sleep}


class Adapter(AsyncPeer):
    name = "taskiq"
    dists = ("taskiq", "taskiq-redis")
    mapping = "`taskiq worker --workers P --max-async-tasks C`, RedisStreamBroker"
    enqueue_path = "kiq() awaited in a loop (no bulk API)"

    async def connect(self) -> None:
        await broker.startup()

    async def disconnect(self) -> None:
        await broker.shutdown()

    def worker_commands(self) -> list[list[str]]:
        return [[tool("taskiq"), "worker", f"{__name__}:broker", "--workers", str(self.shape.processes),
                 "--max-async-tasks", str(self.shape.concurrency), "--log-level", "WARNING"]]

    async def enqueue_async(self, name: str, args: tuple[object, ...], count: int) -> None:
        task = TASKS[name]
        for _ in range(count):
            await task.kiq(*args)
