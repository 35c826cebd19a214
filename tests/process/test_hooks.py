"""`on_startup` / `on_shutdown` in a real `pool run`: once per worker process, around its jobs."""

from __future__ import annotations

import signal

from pool import Client, JobSpec
from pool.testing import wait_until
from tests.conftest import pool_cli
from tests.process.conftest import live_workers

HOOKS = "tests.hook_handlers"


def _events_per_process(tmp_path) -> dict[str, list[str]]:
    markers = tmp_path / "hook-markers"
    return {f.name: f.read_text().split() for f in markers.iterdir()} if markers.is_dir() else {}


def test_each_worker_process_runs_its_hooks_once_around_its_jobs_also_when_recycled(
        write_config, start_pool, tmp_path):
    # Given 2 processes that recycle after 5 jobs, a sync and an async hook of each kind, and an
    # on_shutdown hook that raises before the last one
    config = write_config(
        processes=2, concurrency=2, max_jobs_per_process=5, handlers=[f"{HOOKS}.marked_job"],
        on_startup=[f"{HOOKS}.record_startup", f"{HOOKS}.record_startup_async"],
        on_shutdown=[f"{HOOKS}.record_shutdown_async", f"{HOOKS}.failing_shutdown", f"{HOOKS}.record_shutdown"])
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    # When 20 jobs run (so at least 4 processes take turns) and the pool is stopped
    with Client.from_config(config) as client:
        jobs = client.enqueue_many(JobSpec(f"{HOOKS}.marked_job") for _ in range(20))
        pids = {client.result(job.id, timeout=60) for job in jobs}
    assert pool.stop(signal.SIGTERM) == 0, pool.output()
    # Then every process ran on_startup once before its first job, and on_shutdown once after its
    # last, the hook after the raising one included
    events = _events_per_process(tmp_path)
    assert {str(pid) for pid in pids} <= set(events) and len(events) >= 4, events
    for pid, seen in events.items():
        jobs_run = seen.count("job")
        assert jobs_run <= 5, (pid, seen)
        assert seen == ["startup", "startup-async", *["job"] * jobs_run, "shutdown-async", "shutdown"], (pid, seen)
    # And the raising hook was logged with its traceback, once per process
    output = pool.output()
    assert output.count(f"on_shutdown hook {HOOKS}.failing_shutdown raised") == len(events), output
    assert output.count("RuntimeError: closing the database pool failed") == len(events)
    assert "Traceback (most recent call last)" in output


def test_an_on_startup_hook_that_raises_halts_the_pool_instead_of_restarting(write_config, start_pool, tmp_path):
    # Given a pool whose on_startup hook raises
    config = write_config(processes=2, on_startup=[f"{HOOKS}.record_startup", f"{HOOKS}.failing_startup"],
                          on_shutdown=f"{HOOKS}.record_shutdown")
    pool = start_pool(config)
    # When it runs, then it halts by itself, without respawning into the same error
    assert pool.proc.wait(60) == 1, pool.output()
    output = pool.output()
    assert f"cannot start: on_startup hook {HOOKS}.failing_startup raised" in output
    assert "RuntimeError: no database at db:5432" in output
    assert "pool halted: worker-" in output and "could not boot" in output
    assert output.count("started worker-") == 2, output  # none respawned
    # And no process ran a job or its on_shutdown hooks
    events = _events_per_process(tmp_path)
    assert events and all(seen == ["startup"] for seen in events.values()), events


def test_a_hook_that_cannot_be_imported_stops_pool_run_with_one_line(write_config, tmp_path):
    config = write_config(on_shutdown=[f"{HOOKS}.record_shutdown", f"{HOOKS}.close_db"])
    result = pool_cli("run", str(config), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (f"pool: pool.yaml: on_shutdown: '{HOOKS}.close_db' not found: module "
                             f"'{HOOKS}' has no 'close_db'\n")
    assert not (tmp_path / ".pool").exists() and not (tmp_path / "hook-markers").exists()
