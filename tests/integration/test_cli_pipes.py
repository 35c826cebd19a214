"""`pool ... | head -1`: a reader that goes away ends the command quietly, through a real pipe."""

from __future__ import annotations

import subprocess
import sys

from pool.config import load
from pool.errors import ExitCode
from pool.keys import Keys
from pool.testing import async_wait_until, wait_until
from tests.conftest import cli_env, pool_of


def piped_into_head(tmp_path, *args: str) -> subprocess.Popen:
    """`python -m pool ARGS | head -1` in bash; pool's stderr and exit code go to files."""
    command = " ".join([sys.executable, "-m", "pool", *args])
    script = f"{command} 2>{tmp_path}/err | head -1 >{tmp_path}/out; echo ${{PIPESTATUS[0]}} >{tmp_path}/rc"
    return subprocess.Popen(["bash", "-c", script], env=cli_env())


def assert_quiet_end(tmp_path) -> str:
    err = (tmp_path / "err").read_text()
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert err == ""
    assert int((tmp_path / "rc").read_text()) == ExitCode.BROKEN_PIPE
    return (tmp_path / "out").read_text()


async def test_events_into_head_ends_quietly(write_config, url, r, tmp_path):
    path = write_config()
    config = load(path)
    pipeline = piped_into_head(tmp_path, "events", str(path))
    try:
        channel = Keys(config.key_prefix).events("default")
        wait_until(lambda: r.pubsub_numsub(channel)[0][1] >= 1, timeout=15, message="pool events to subscribe")
        async with pool_of(config, url, r) as client:
            async def finished() -> bool:
                # keep jobs finishing until pool has written past head's exit and stopped
                job = await client.enqueue("tests.sample_handlers.add", 1, 2)
                await client.wait(job.id, timeout=10)
                return pipeline.poll() is not None
            await async_wait_until(finished, timeout=30, message="the pipeline to end")
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
        pipeline.wait()
    assert "completed  tests.sample_handlers.add" in assert_quiet_end(tmp_path)


async def test_dead_show_into_head_ends_quietly(write_config, url, r, tmp_path):
    """The record is larger than the pipe's buffer, so pool is still writing when head exits."""
    path = write_config()
    async with pool_of(load(path), url, r) as client:
        job = await client.enqueue("tests.sample_handlers.explode", "x" * 200_000)
        await client.wait(job.id, timeout=10)
    pipeline = piped_into_head(tmp_path, "dead", "show", str(path), job.id)
    pipeline.wait(timeout=60)
    assert assert_quiet_end(tmp_path) == f"job {job.id}\n"
