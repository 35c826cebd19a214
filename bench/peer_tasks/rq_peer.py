"""RQ: P `rq worker` processes with RQ's default worker class, which forks a work horse for
each job and runs one job at a time: P x 1 whatever C is (RQ has no in-process concurrency).
Its horses count into their worker's counter file (``key=os.getppid()``; one horse at a time
per worker, so they never write it at once). Enqueue: ``Queue.enqueue_many`` with
``Queue.prepare_data``, 1,000 jobs per pipeline. `rq worker --quiet` logs warnings only.
"""

from __future__ import annotations

import os

from redis import Redis
from rq import Queue

from bench.peer_tasks import body
from bench.peer_tasks.base import Peer, tool

BATCH = 1000
QUEUE = "bench"


def noop(*payload: object) -> None:
    body.noop(*payload, key=os.getppid())


def sleep() -> None:
    body.sleep_sync(key=os.getppid())


FUNCTIONS = {"noop": noop, "sleep": sleep}


class Adapter(Peer):
    name = "rq"
    dists = ("rq",)
    mapping = "P `rq worker` (fork per job) x 1"
    enqueue_path = f"Queue.enqueue_many, {BATCH} per pipeline"

    def open(self) -> None:
        self.redis = Redis.from_url(self.shape.url)
        self.queue = Queue(QUEUE, connection=self.redis)

    def close(self) -> None:
        self.redis.close()

    def worker_commands(self) -> list[list[str]]:
        command = [tool("rq"), "worker", "--url", self.shape.url, "--quiet", QUEUE]
        return [command] * self.shape.processes

    def enqueue(self, workload: str, count: int) -> None:
        name, args = self.job(workload)
        for start in range(0, count, BATCH):
            batch = min(BATCH, count - start)
            self.queue.enqueue_many([Queue.prepare_data(FUNCTIONS[name], args) for _ in range(batch)])

    def enqueue_one(self, workload: str) -> None:
        name, args = self.job(workload)
        self.queue.enqueue(FUNCTIONS[name], *args)
