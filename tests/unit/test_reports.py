"""Failure reports stay readable on every Python the suite runs on (tests/tracebacks.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT
from tests.tracebacks import has_leaky_parser

FAILING_MODULE = textwrap.dedent('''
    import asyncio

    import pytest
    import redis.asyncio.connection


    async def _never():
        await asyncio.sleep(10)  # the workload: a wait that wait_for must time out


    @pytest.mark.parametrize("n", range(15))
    async def test_wait_for_times_out(n):
        await asyncio.wait_for(_never(), 0.001)


    def test_error_inside_a_large_module():
        redis.asyncio.connection.ConnectionPool.from_url("bogus://nowhere")


    def test_deliberate_assertion():
        assert {"completed": 2} == {"completed": 3}
''')


def test_leaky_parser_releases_are_the_ones_gh_106905_names():
    assert has_leaky_parser((3, 11, 7)) and has_leaky_parser((3, 12, 1))
    assert not has_leaky_parser((3, 11, 8)) and not has_leaky_parser((3, 12, 2))
    assert not has_leaky_parser((3, 13, 0))


def test_a_run_of_deliberate_failures_renders_every_failure(tmp_path):
    """Seventeen failures through asyncio.wait_for and redis-py: each reported, no INTERNALERROR."""
    (tmp_path / "test_failing.py").write_text(FAILING_MODULE)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.tracebacks",
         "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function", "-W", "error", str(tmp_path / "test_failing.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "INTERNALERROR" not in run.stdout + run.stderr
    assert run.stdout.rstrip().splitlines()[-1].startswith("17 failed")
    assert "AssertionError: assert {'completed': 2} == {'completed': 3}" in run.stdout
    assert "ValueError" in run.stdout and "redis/asyncio/connection.py" in run.stdout
