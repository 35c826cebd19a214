"""Supervisor decisions without real processes: exits are fed to it directly."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from pool.config import load
from pool.errors import ExitCode
from pool.supervisor import Supervisor
from pool.supervisor.children import WorkerChild as _Child
from pool.supervisor.forking import describe_exit as _describe_exit


class FakeHousekeeper:
    def __init__(self) -> None:
        self.dead_workers: list[str] = []

        self.causes: list[str] = []
        self.configs: list[object] = []

    def reload(self, config: object) -> None:
        self.configs.append(config)

    def worker_died(self, worker_id: str, cause: str = "") -> None:
        self.dead_workers.append(worker_id)
        self.causes.append(cause)


@pytest.fixture
def supervisor(monkeypatch, tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text("processes: 2\nhandlers: [examples.tasks]\n")
    sup = Supervisor(load(path, environ={}), worker_main=lambda *a: 0)
    sup.housekeeper = FakeHousekeeper()
    clock = {"now": 1000.0}
    monkeypatch.setattr("pool.supervisor.arbiter.time.monotonic", lambda: clock["now"])
    monkeypatch.setattr(sup, "_signal", lambda pid, signum: sup.sent.append((pid, signum)))
    sup.sent = []
    sup.clock = clock
    yield sup
    shutil.rmtree(sup.run_dir, ignore_errors=True)


def child(sup, index=0, ran_for=1.0, booted=False, busy=False):
    return _Child(index=index, worker_id=f"h:{100 + index}:x", started=sup.clock["now"] - ran_for,
                  alive_file=sup.run_dir / f"w{index}", created_mtime=1000.0, booted=booted, busy=busy)


def crash(sup, index=0, code=1, ran_for=1.0, booted=False, busy=False):
    sup._child_exited(100 + index, child(sup, index, ran_for, booted, busy), code)
    return sup.slots[index].spawn_at - sup.clock["now"]


def test_first_crash_respawns_at_once_then_backs_off(supervisor):
    delays = [crash(supervisor) for _ in range(8)]
    assert delays[:5] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 30.0  # capped


def test_a_worker_that_booted_and_ran_resets_its_backoff(supervisor):
    for _ in range(4):
        crash(supervisor)
    assert crash(supervisor, ran_for=60.0) == 4.0  # never booted (no loop ran): still a crash loop
    assert crash(supervisor, ran_for=2.0, booted=True) == 0.0


def test_deaths_while_running_jobs_respawn_at_once_however_quick(supervisor):
    """A poison job crashing each fresh worker within a second of boot is no crash loop."""
    delays = [crash(supervisor, code=-signal.SIGSEGV, ran_for=0.2, booted=True, busy=True) for _ in range(8)]
    assert delays == [0.0] * 8


def test_a_job_caused_death_forgives_earlier_boot_crashes(supervisor):
    for _ in range(4):
        crash(supervisor)
    assert crash(supervisor, ran_for=0.1, booted=True, busy=True) == 0.0
    assert crash(supervisor) == 0.0  # the next idle death starts the backoff from the beginning


def test_reaping_reads_the_busy_mark_the_worker_left(supervisor, monkeypatch):
    busy, idle = child(supervisor, 0), child(supervisor, 1)
    busy.alive_file.write_bytes(b"1")
    idle.alive_file.write_bytes(b"0")
    supervisor.children = {4242: busy, 4243: idle}
    waits = iter([(4242, 0), (4243, 0), (0, 0)])
    monkeypatch.setattr("pool.supervisor.arbiter.os.waitpid", lambda pid, flags: next(waits))
    supervisor._reap()
    assert busy.busy and not idle.busy


def test_a_worker_killed_for_a_frozen_loop_is_reported_as_such(supervisor, caplog):
    frozen = child(supervisor, busy=True)
    frozen.frozen = True
    supervisor._child_exited(100, frozen, -signal.SIGKILL)
    cause = "killed by the supervisor (SIGKILL) after its event loop froze"
    assert supervisor.housekeeper.causes == [cause]
    assert f"was {cause} while running jobs" in caplog.text
    assert "out of memory" not in caplog.text


def test_reaping_notes_whether_the_child_booted_before_removing_its_file(supervisor, monkeypatch):
    booted = child(supervisor, 0)
    booted.alive_file.write_text("")
    os.utime(booted.alive_file, (booted.created_mtime + 5, booted.created_mtime + 5))
    supervisor.children = {4242: booted}
    waits = iter([(4242, 0), (0, 0)])
    monkeypatch.setattr("pool.supervisor.arbiter.os.waitpid", lambda pid, flags: next(waits))
    supervisor._reap()
    assert booted.booted and not booted.alive_file.exists()


def test_a_worker_retired_by_a_reload_is_still_killed_when_its_loop_freezes(supervisor):
    """A reload's SIGTERM must not exempt the worker from the frozen-loop check."""
    retired, other = child(supervisor, 0), child(supervisor, 1)
    for worker in (retired, other):
        worker.alive_file.write_text("")
        os.utime(worker.alive_file, (1005.0, 1005.0))  # it booted
    supervisor.children = {100: retired, 101: other}
    supervisor.retiring = {100, 101}
    supervisor._roll()
    assert supervisor.sent == [(100, signal.SIGTERM)]  # one at a time
    supervisor._kill_frozen()  # both loops are seen; then only the other one goes on
    supervisor.clock["now"] += supervisor.config.heartbeat_ttl_s + 1
    os.utime(other.alive_file, (1010.0, 1010.0))
    supervisor._kill_frozen()
    assert supervisor.sent == [(100, signal.SIGTERM), (100, signal.SIGKILL)]
    assert retired.frozen


def test_an_auxiliary_child_is_reaped_by_its_own_object(supervisor, monkeypatch):
    """The metrics process or the embedded Redis exiting is never taken for a worker."""
    class Auxiliary:
        pid = 4242

        def __init__(self) -> None:
            self.exits: list[tuple[int, bool]] = []

        def exited(self, code, stopping):
            self.exits.append((code, stopping))

    auxiliary = Auxiliary()
    supervisor.auxiliaries = [auxiliary]
    waits = iter([(4242, 9), (0, 0)])  # killed by SIGKILL
    monkeypatch.setattr("pool.supervisor.arbiter.os.waitpid", lambda pid, flags: next(waits))
    supervisor._reap()
    assert auxiliary.exits == [(-signal.SIGKILL, False)]
    assert supervisor.housekeeper.dead_workers == []


def test_backoff_is_per_slot(supervisor):
    crash(supervisor, index=0)
    crash(supervisor, index=0)
    assert crash(supervisor, index=1) == 0.0


def test_dead_worker_is_queued_for_requeue_with_its_cause(supervisor):
    crash(supervisor, code=-signal.SIGKILL)
    assert supervisor.housekeeper.dead_workers == ["h:100:x"]
    assert supervisor.housekeeper.causes == ["killed by SIGKILL (out of memory?)"]


def test_every_exit_requeues_even_a_clean_one(supervisor):
    supervisor.stopping = True
    crash(supervisor, code=0)
    assert supervisor.housekeeper.dead_workers == ["h:100:x"]


def test_recycled_worker_is_replaced_without_backoff(supervisor):
    for _ in range(3):
        assert crash(supervisor, code=ExitCode.RECYCLE) <= 0


def test_worker_retired_by_a_reload_is_replaced_without_backoff(supervisor):
    supervisor.retiring = {100}
    assert crash(supervisor, code=0) <= 0
    assert supervisor.retiring == set()


def test_ttin_and_ttou_change_the_number_of_workers(supervisor):
    supervisor.children = {100: child(supervisor, 0), 101: child(supervisor, 1)}
    supervisor._dispatch(signal.SIGTTIN)
    assert len(supervisor.slots) == 3
    supervisor._dispatch(signal.SIGTTOU)
    supervisor._dispatch(signal.SIGTTOU)
    assert len(supervisor.slots) == 1
    assert supervisor.sent == [(101, signal.SIGTERM)]  # the worker of the removed slot stops
    supervisor._dispatch(signal.SIGTTOU)
    assert len(supervisor.slots) == 1  # never below one


def test_reload_with_a_broken_config_keeps_the_running_workers(supervisor, caplog):
    supervisor.children = {100: child(supervisor, 0)}
    supervisor.config.path.write_text("processes: 2\nconcurency: 3\nhandlers: [examples.tasks]\n")
    supervisor._dispatch(signal.SIGHUP)
    assert supervisor.retiring == set()
    assert "reload refused, the running workers stay: pool.yaml: concurency: unknown key" in caplog.text


def test_reload_marks_every_worker_for_replacement(supervisor):
    supervisor.children = {100: child(supervisor, 0), 101: child(supervisor, 1)}
    supervisor.config.path.write_text("processes: 3\nconcurrency: 4\nhandlers: [examples.tasks]\n")
    supervisor._dispatch(signal.SIGHUP)
    assert supervisor.retiring == {100, 101}
    assert (len(supervisor.slots), supervisor.config.concurrency) == (3, 4)


def test_reload_hands_the_new_config_to_the_housekeeper(supervisor):
    """Requeue and reclaim must cover the reloaded queues, and bury by its dead-letter rules."""
    supervisor.config.path.write_text("processes: 2\nqueues: [default, other]\nhandlers: [examples.tasks]\n")
    supervisor._dispatch(signal.SIGHUP)
    assert [config.queues for config in supervisor.housekeeper.configs] == [("default", "other")]


def test_boot_failure_halts_instead_of_respawning(supervisor):
    crash(supervisor, code=ExitCode.BOOT)
    assert supervisor.stopping
    assert supervisor.halt_reason == "worker-1 could not boot (see its log above)"


def test_second_stop_signal_shortens_the_deadline(supervisor):
    supervisor.children = {100: child(supervisor, 0)}
    supervisor._dispatch(signal.SIGTERM)
    first_deadline = supervisor.stop_deadline
    supervisor._dispatch(signal.SIGINT)
    assert supervisor.sent == [(100, signal.SIGTERM), (100, signal.SIGTERM)]
    assert supervisor.stop_deadline < first_deadline


@pytest.mark.parametrize(("code", "text"), [
    (-signal.SIGKILL, "was killed by SIGKILL (out of memory?)"),
    (-signal.SIGSEGV, "was killed by SIGSEGV"),
    (3, "exited with code 3"),
])
def test_exit_reasons_read_well(code, text):
    assert _describe_exit(code) == text
