"""huey: P `huey_consumer` processes, each ``-k thread -w C`` (C worker threads).

huey's consumer has one worker type per process: ``-k process -w N`` runs N processes with one
job each, and ``-k thread`` runs threads in one process; P consumers with C threads each is the
P x C shape (huey's own docs show ``-k process -w 4``: 4 processes, one job each).
``RedisHuey`` defaults: blocking BRPOP dequeue, results stored (the tasks return None, which huey
does not store). No bulk enqueue: calling the task in a loop. ``-q`` logs warnings only.
"""

from __future__ import annotations

from huey import RedisHuey

from bench.peer_tasks import body
from bench.peer_tasks.base import Peer, redis_url, tool

huey = RedisHuey("bench", url=redis_url())


@huey.task(name="noop")
def noop(*payload: object) -> None:
    body.noop(*payload)


@huey.task(name="sleep")
def sleep() -> None:
    body.sleep_sync()


TASKS = {"noop": noop, "sleep": sleep}


class Adapter(Peer):
    name = "huey"
    dists = ("huey",)
    mapping = "P `huey_consumer -k thread -w C`"
    enqueue_path = "task call in a loop (no bulk API)"

    def close(self) -> None:
        huey.storage.conn.close()

    def worker_commands(self) -> list[list[str]]:
        command = [tool("huey_consumer"), f"{__name__}.huey", "-k", "thread", "-w", str(self.shape.concurrency), "-q"]
        return [command] * self.shape.processes

    def enqueue(self, workload: str, count: int) -> None:
        name, args = self.job(workload)
        task = TASKS[name]
        for _ in range(count):
            task(*args)
