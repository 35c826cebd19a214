"""What every benchmark here needs: a private valkey-server, pool.yaml files for it, and
`pool run` started and stopped as a subprocess (the way users run it)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pool.embedded import EmbeddedServer, free_port  # noqa: E402
from pool.keys import Keys  # noqa: E402


class PrivateServer:
    """A private server for one benchmark run; each config gets a fresh key prefix."""

    def __init__(self, workdir: Path, processes: int, concurrency: int) -> None:
        self.workdir = workdir
        self.processes, self.concurrency = processes, concurrency
        self.server = EmbeddedServer(workdir / "redis", persist=False, port=free_port())
        self.url = ""
        self.runs = 0
        self.redis: redis.Redis

    def __enter__(self) -> Any:
        self.url = self.server.start()
        self.redis = redis.Redis.from_url(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.redis.close()
        self.server.stop()

    def write_config(self, **settings: Any) -> Path:
        """A pool.yaml for this server and a fresh key prefix; ``settings`` add or override keys.

        Flushes the server first: each run starts on an empty keyspace (a server holding the
        previous runs' records makes Redis itself slower, and the figures drift run by run).
        """
        self.redis.flushall()
        self.runs += 1
        path = self.workdir / f"pool-{self.runs}.yaml"
        path.write_text(yaml.safe_dump({
            "redis": {"url": self.url}, "key_prefix": f"bench{self.runs}", "processes": self.processes,
            "concurrency": self.concurrency, "logging": {"level": "warning"}, **settings,
        }))
        return path

    @staticmethod
    def keys(config: Path) -> Keys:
        return Keys(yaml.safe_load(config.read_text())["key_prefix"])

    def start_pool(self, config: Path) -> subprocess.Popen[bytes]:
        """`pool run CONFIG`, returned once all its workers have registered."""
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log = open(self.workdir / f"{config.stem}.log", "w")  # noqa: SIM115 - the child keeps it
        pool = subprocess.Popen([sys.executable, "-m", "pool", "run", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        keys, processes = self.keys(config), yaml.safe_load(config.read_text())["processes"]
        wait(lambda: self.redis.scard(keys.workers()) >= processes, "the pool's workers")
        return pool

    @staticmethod
    def stop_pool(pool: subprocess.Popen[bytes]) -> None:
        pool.send_signal(signal.SIGTERM)
        pool.wait(60)


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every throughput benchmark takes: jobs per run, the pool's shape, rounds."""
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per throughput measurement")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)


def wait(predicate: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(0.01)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))])
