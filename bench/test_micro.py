"""Micro-benchmarks of the hot path, so that a regression shows in review.

    python -m pytest bench/test_micro.py --benchmark-enable
    python -m pytest bench/test_micro.py --benchmark-enable --benchmark-compare   # against a saved run

Encoding runs in Python only; enqueue, claim and ack run against a private valkey-server (one
per session, on a unix socket), each through the same wrapper the worker and client use.
Not part of the test suite (testpaths is tests/); numbers, not assertions, are the point.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import redis

from pool.client import Client
from pool.config import from_mapping
from pool.embedded import EmbeddedServer
from pool.jobs import Job, dumps, encode_arguments, enqueue_fields, new_job_id
from pool.keys import Keys
from pool.lua import Ack, Scripts

WORKER = "bench-host:1:abc"
ARGS = ({"user_id": 12345, "email": "someone@example.com", "sizes": [64, 128, 256]},)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    server = EmbeddedServer(tmp_path_factory.mktemp("valkey"), persist=False)
    yield server.start()
    server.stop()


@pytest.fixture
def client(url):
    connection = redis.Redis.from_url(url)
    yield connection
    connection.flushall()
    connection.close()


@pytest.fixture
def scripts(client):
    return Scripts(client, Keys("micro"))


def test_encode_a_job(benchmark):
    def encode() -> list:
        args_json, kwargs_json = encode_arguments("app.jobs.resize", ARGS, {})
        job = Job(id=new_job_id(), handler="app.jobs.resize", queue="default", created_ms=1)
        return enqueue_fields(job, args_json, kwargs_json, 1 << 20)

    benchmark(encode)


def test_decode_a_claimed_record(benchmark):
    fields = {b"id": b"abc", b"handler": b"app.jobs.resize", b"queue": b"default", b"args": dumps(list(ARGS)),
              b"kwargs": b"{}", b"status": b"active", b"attempts": b"1", b"created_ms": b"1", b"enqueued_ms": b"1",
              b"started_ms": b"2", b"updated_ms": b"2", b"worker": WORKER.encode(), b"deliveries": b"1"}
    benchmark(Job.from_hash, fields)


def test_enqueue_100_jobs_in_one_call(benchmark, url, client):
    config = from_mapping({"redis": {"url": url}, "key_prefix": "micro", "handlers": ["bench.throughput"]},
                          Path("pool.yaml"), environ={})
    from pool import JobSpec

    specs = [JobSpec("app.jobs.resize", ARGS) for _ in range(100)]
    with Client(config) as pool_client:
        benchmark(pool_client.enqueue_many, specs)


@pytest.mark.parametrize("count", [10_000, 50_000])
def test_enqueue_many_scales_linearly(benchmark, url, count):
    """One enqueue_many of 10k and of 50k jobs: the per-job time should match (it is split into
    2,000-job script calls, sent 16,000 jobs per round trip). Compare the two means / 5."""
    from pool import JobSpec

    config = from_mapping({"redis": {"url": url}, "key_prefix": f"micro-{count}", "handlers": ["bench.throughput"]},
                          Path("pool.yaml"), environ={})
    specs = [JobSpec("app.jobs.resize", ARGS) for _ in range(count)]
    with Client(config) as pool_client:
        benchmark.pedantic(pool_client.enqueue_many, (specs,), rounds=3, iterations=1)


def _queued(scripts: Scripts, count: int, counter=itertools.count()) -> None:  # noqa: B008 - unique ids
    jobs = []
    for _ in range(count):
        job_id = f"j{next(counter)}"
        jobs.append((job_id, 0, ["id", job_id, "handler", "app.jobs.resize", "queue", "default", "status", "queued",
                                 "attempts", 0, "args", dumps(list(ARGS)), "kwargs", "{}"]))
    scripts.enqueue("default", jobs, 1000)


def test_claim_16_jobs(benchmark, scripts):
    def setup():
        _queued(scripts, 16)
        return (), {}

    benchmark.pedantic(lambda: scripts.claim("default", WORKER, 2000, 16, 0), setup=setup, rounds=200)


def test_ack_one_job(benchmark, scripts):
    claimed: list[str] = []

    def setup():
        _queued(scripts, 1)
        reply = scripts.claim("default", WORKER, 2000, 1, 0)
        claimed.append(dict(zip(reply[1][0][::2], reply[1][0][1::2], strict=True))[b"id"].decode())
        return (), {}

    def ack():
        return scripts.ack("default", WORKER, claimed[-1], "completed", 3000, 60_000, ["result", b"null"])

    benchmark.pedantic(ack, setup=setup, rounds=500)


def test_ack_16_jobs_in_one_call(benchmark, scripts):
    """What a busy worker sends: every finished job's ack in one ack.lua call."""
    claimed: list[str] = []

    def setup():
        _queued(scripts, 16)
        reply = scripts.claim("default", WORKER, 2000, 16, 0)
        claimed[:] = [dict(zip(r[::2], r[1::2], strict=True))[b"id"].decode() for r in reply[1]]
        return (), {}

    def ack():
        return scripts.ack_many("default", WORKER, [Ack(i, "completed", 3000, 60_000, ("result", b"null"))
                                                    for i in claimed])

    benchmark.pedantic(ack, setup=setup, rounds=200)
