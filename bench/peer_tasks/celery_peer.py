"""Celery: P `celery worker --pool threads -c C` processes (each its own node name).

Why threads and not the default prefork pool: prefork runs one task at a time per child, so
``-c P`` would cap the sleep workload at P x 100 jobs/s, and ``-c P*C`` would be a hundred
processes on this 2-core host; the threads pool gives the same P processes x C concurrent jobs
as the other systems (and is what Celery documents for I/O-bound tasks). No result backend (the
default), defaults otherwise (prefetch multiplier 4, acks on receipt, mingle/gossip/heartbeat on).
Enqueue: ``apply_async`` in a loop (``group`` sends its tasks one by one too).
"""

from __future__ import annotations

from celery import Celery

from bench.peer_tasks import body
from bench.peer_tasks.base import Peer, redis_url, tool

app = Celery("bench", broker=redis_url())


@app.task(name="noop")
def noop(*payload: object) -> None:
    body.noop(*payload)


@app.task(name="sleep")
def sleep() -> None:
    body.sleep_sync()


TASKS = {"noop": noop, "sleep": sleep}


class Adapter(Peer):
    name = "celery"
    dists = ("celery", "kombu")
    mapping = "P `celery worker --pool threads -c C`"
    enqueue_path = "apply_async in a loop"

    def close(self) -> None:
        app.close()

    def worker_commands(self) -> list[list[str]]:
        return [[tool("celery"), "-A", __name__, "worker", "--pool", "threads", "-c", str(self.shape.concurrency),
                 "-n", f"bench{index}@%h", "--loglevel", "WARNING"] for index in range(self.shape.processes)]

    def enqueue(self, workload: str, count: int) -> None:
        name, args = self.job(workload)
        task = TASKS[name]
        for _ in range(count):
            task.apply_async(args)
