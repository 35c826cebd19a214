"""The `pool` command on a closed pipe, and its --version and bare forms, as a shell runs them."""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys

from pool import Client
from pool.testing import async_wait_until
from tests.conftest import cli_env, pool_cli, pool_of


def _piped(command: str, stderr_file) -> subprocess.Popen[str]:
    return subprocess.Popen(["bash", "-o", "pipefail", "-c", command], stdout=subprocess.PIPE, stderr=stderr_file,
                            text=True, env=cli_env())


async def test_pool_events_into_head_exits_quietly(make_config, write_config, url, r, tmp_path):
    """`pool events CONFIG | head -1`: one line out, no traceback when head has gone."""
    config_path = write_config()
    errors = tmp_path / "stderr"
    async with pool_of(make_config(), url, r) as client:
        with open(errors, "w") as err:
            proc = _piped(f"{sys.executable} -m pool events {config_path} | head -1", err)

            async def finished() -> bool:  # keep jobs finishing until events has written its second line
                await client.enqueue("tests.sample_handlers.add", 1, 2)
                return proc.poll() is not None
            await async_wait_until(finished, timeout=30, message="pool events | head -1 to end")
    out, _ = proc.communicate(timeout=10)
    assert out.count("\n") == 1 and "completed" in out, out
    assert errors.read_text() == ""  # no traceback, no "Exception ignored" line
    assert proc.returncode == 141  # pipefail: the status of a tool stopped by SIGPIPE


def test_pool_dead_show_into_head_exits_quietly(make_config, write_config, tmp_path):
    """A long record cut short by head: no traceback either."""
    config_path = write_config()
    with Client(make_config()) as client:
        job = client.enqueue("tests.sample_handlers.explode", "x" * 200_000, max_retries=0)
    asyncio.run(_drain(make_config()))
    errors = tmp_path / "stderr"
    with open(errors, "w") as err:
        proc = _piped(f"{sys.executable} -m pool dead show {config_path} {job.id} | head -c 10", err)
        proc.communicate(timeout=30)
    assert errors.read_text() == ""
    assert proc.returncode in (0, 141)


async def _drain(config) -> None:
    from pool.testing import drain

    await drain(config, config.redis.url)


def test_version_names_the_installed_distribution():
    result = pool_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"pool {importlib.metadata.version('pool-jobs')}\n")


def test_bare_pool_prints_the_help():
    result = pool_cli()
    assert result.returncode == 0
    assert result.stdout.startswith("usage: pool") and "examples:" in result.stdout
