"""Supervisor decisions without real processes: exits are fed to it directly."""

from __future__ import annotations

import os
import signal

import pytest

from pool.config import from_mapping
from pool.errors import ExitCode
from pool.handlers import Registry
from pool.supervisor import Supervisor, _Child, _describe_exit


@pytest.fixture
def supervisor(monkeypatch):
    config = from_mapping({"processes": 2, "handlers": ["examples.tasks"]}, "/tmp/pool.yaml", {})
    sup = Supervisor(config, Registry(), worker_main=lambda *a: 0)
    clock = {"now": 1000.0}
    monkeypatch.setattr("pool.supervisor.time.monotonic", lambda: clock["now"])
    sup.clock = clock
    return sup


def exit_status(code: int) -> int:
    """A waitpid status for an exit code (negative: killed by that signal)."""
    return (-code) & 0x7F if code < 0 else (code & 0xFF) << 8


def crash(sup, index=0, code=1, ran_for=1.0):
    child = _Child(index=index, worker_id=f"h:{100 + index}:x", started=sup.clock["now"] - ran_for)
    sup._child_exited(100 + index, child, exit_status(code))
    return sup.slots[index].spawn_at - sup.clock["now"]


def test_exit_status_helper_matches_the_os():
    assert os.waitstatus_to_exitcode(exit_status(3)) == 3
    assert os.waitstatus_to_exitcode(exit_status(-9)) == -9


def test_first_crash_respawns_at_once_then_backs_off(supervisor):
    delays = [crash(supervisor) for _ in range(8)]
    assert delays[:5] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 30.0  # capped


def test_a_worker_that_ran_long_enough_resets_its_backoff(supervisor):
    for _ in range(4):
        crash(supervisor)
    assert crash(supervisor, ran_for=60.0) == 0.0


def test_backoff_is_per_slot(supervisor):
    crash(supervisor, index=0)
    crash(supervisor, index=0)
    assert crash(supervisor, index=1) == 0.0


def test_dead_worker_is_queued_for_requeue(supervisor):
    crash(supervisor, code=-signal.SIGKILL)
    assert supervisor.pending == ["h:100:x"]


def test_boot_failure_halts_instead_of_respawning(supervisor, monkeypatch):
    monkeypatch.setattr(supervisor, "_signal_children", lambda signum: None)
    crash(supervisor, code=ExitCode.BOOT)
    assert supervisor.stopping
    assert supervisor.halt_reason == "worker-1 could not boot (see its log above)"


def test_second_stop_signal_shortens_the_deadline(supervisor, monkeypatch):
    sent = []
    monkeypatch.setattr(supervisor, "_signal_children", sent.append)
    supervisor._dispatch(signal.SIGTERM)
    first_deadline = supervisor.stop_deadline
    supervisor._dispatch(signal.SIGINT)
    assert sent == [signal.SIGTERM, signal.SIGTERM]
    assert supervisor.stop_deadline < first_deadline


@pytest.mark.parametrize(("code", "text"), [
    (-signal.SIGKILL, "was killed by SIGKILL (out of memory?)"),
    (-signal.SIGSEGV, "was killed by SIGSEGV"),
    (3, "exited with code 3"),
])
def test_exit_reasons_read_well(code, text):
    assert _describe_exit(code) == text
