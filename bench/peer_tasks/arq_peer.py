"""arq: P `arq` worker processes, each with ``max_jobs = C`` (asyncio tasks).

arq has no bulk enqueue: ``ArqRedis.enqueue_job`` awaited in a loop (each is a WATCH/MULTI/EXEC
transaction). Its workers poll the queue's sorted set every ``poll_delay`` (0.5 s, the default,
kept): an idle arq worker sees a new job up to half a second late, which the latency shows.
Logging is set to WARNING (arq's default logs every job at INFO), as for every system here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.peer_tasks import body
from bench.peer_tasks.base import AsyncPeer, concurrency, redis_url, tool


async def noop(ctx: dict[str, Any], *payload: object) -> None:
    body.noop(*payload)


async def sleep(ctx: dict[str, Any]) -> None:
    await body.sleep_async()


class WorkerSettings:
    functions: ClassVar = [noop, sleep]
    redis_settings = RedisSettings.from_dsn(redis_url())
    max_jobs = concurrency()


LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}


class Adapter(AsyncPeer):
    name = "arq"
    dists = ("arq",)
    mapping = "P `arq` processes, max_jobs=C"
    enqueue_path = "enqueue_job awaited in a loop (no bulk API)"

    async def connect(self) -> None:
        self.pool: ArqRedis = await create_pool(RedisSettings.from_dsn(self.shape.url))

    async def disconnect(self) -> None:
        await self.pool.aclose()

    def worker_commands(self) -> list[list[str]]:
        command = [tool("arq"), f"{__name__}.WorkerSettings", "--custom-log-dict", f"{__name__}.LOGGING"]
        return [command] * self.shape.processes

    async def enqueue_async(self, name: str, args: tuple[object, ...], count: int) -> None:
        for _ in range(count):
            await self.pool.enqueue_job(name, *args)
