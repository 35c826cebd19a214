"""Dramatiq: `dramatiq <module> --processes P --threads C` with its RedisBroker (default
middleware, no result backend). Dramatiq has no bulk enqueue (``group`` sends one by one):
``Actor.send`` in a loop. An idle Redis consumer polls with a backoff up to its worker timeout
(1 s by default, kept), which the latency shows.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peer_tasks import body
from bench.peer_tasks.base import Peer, redis_url, tool

broker = RedisBroker(url=redis_url())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop")
def noop(*payload: object) -> None:
    body.noop(*payload)


@dramatiq.actor(actor_name="sleep")
def sleep() -> None:
    body.sleep_sync()


ACTORS = {"noop": noop, "sleep": sleep}


class Adapter(Peer):
    name = "dramatiq"
    dists = ("dramatiq",)
    mapping = "`dramatiq --processes P --threads C`"
    enqueue_path = "Actor.send in a loop (no bulk API)"

    def close(self) -> None:
        broker.client.close()

    def worker_commands(self) -> list[list[str]]:
        return [[tool("dramatiq"), __name__, "--processes", str(self.shape.processes),
                 "--threads", str(self.shape.concurrency)]]

    def enqueue(self, workload: str, count: int) -> None:
        name, args = self.job(workload)
        actor = ACTORS[name]
        for _ in range(count):
            actor.send(*args)
