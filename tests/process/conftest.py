"""`pool run` as a subprocess, the way users and operators run it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pool.config import load
from pool.embedded import ADDRESS_FILE
from pool.testing import wait_until
from tests.conftest import cli_env, pool_cli


class PoolProcess:
    """A running `pool run CONFIG`, with its output in a log file the test can wait on."""

    def __init__(self, config: Path, log: Path, new_session: bool = True,
                 python: tuple[str, ...] = ("-m", "pool")) -> None:
        """``python``: how the interpreter is told to run the `pool` CLI (a test may wrap it)."""
        self.config = config
        self.new_session = new_session
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, *python, "run", str(config)], stdout=self._log_file,
            stderr=subprocess.STDOUT, env=cli_env(), cwd=config.parent,
            start_new_session=new_session,  # its own process group: killpg stands for a lost host
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_log(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"pool run exited early ({self.proc.returncode}):\n{self.output()}")
            return self.output().count(text) >= count
        wait_until(seen, timeout=timeout, message=f"{text!r} in the log of pool run")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()

    def clean_up(self) -> None:
        """Leave nothing running, whatever the test did or where it failed: the supervisor's
        whole process group (workers, metrics process), then an embedded server it started (that
        one runs in a session of its own so that it outlives a killed supervisor)."""
        if self.new_session:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.kill()
        address = _state_dir(self.config) / ADDRESS_FILE
        with contextlib.suppress(OSError, ValueError, KeyError, ProcessLookupError):
            os.kill(int(json.loads(address.read_text())["pid"]), signal.SIGKILL)

    def kill_group(self) -> None:
        """SIGKILL the supervisor and all its workers at once (started with new_session=True)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _state_dir(config: Path) -> Path:
    try:
        return load(config).state_dir
    except Exception:  # a test of a broken config: the default place, next to it
        return config.parent / ".pool"


def live_workers(config: Path, count: int):
    """A predicate for wait_until: `pool status --json` once at least ``count`` workers are up."""

    def check() -> dict | None:
        result = pool_cli("status", str(config), "--json")
        if result.returncode != 0:
            return None
        data = json.loads(result.stdout)
        live = [w for w in data["workers"] if w["state"] in ("idle", "busy")]
        return data if len(live) >= count else None

    return check


@pytest.fixture
def start_pool(tmp_path):
    started: list[PoolProcess] = []

    def start(config: Path, name: str = "pool-run.log", new_session: bool = True) -> PoolProcess:
        process = PoolProcess(config, tmp_path / name, new_session)
        started.append(process)
        return process

    yield start
    for process in started:
        process.clean_up()
