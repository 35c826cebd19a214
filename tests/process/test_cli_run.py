"""`pool run` as operators see it from outside: process titles, and command-line overrides that
outlive a reload."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from pool.testing import wait_until
from tests.conftest import pool_cli
from tests.process.conftest import PoolProcess, live_workers


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_every_process_is_titled_with_its_role_and_config(write_config, start_pool):
    config = write_config(processes=2, metrics={"port": 0})
    pool = start_pool(config)
    data = wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    pool.wait_for_log("metrics on http://")
    assert cmdline(pool.proc.pid) == f"pool: supervisor {config}"
    titles = sorted(cmdline(worker["pid"]) for worker in data["workers"])
    assert titles == [f"pool: worker 1 {config}", f"pool: worker 2 {config}"]
    metrics_pid = int(re.search(r"metrics on http://\S+ and /healthz \(pid (\d+)\)", pool.output()).group(1))
    assert cmdline(metrics_pid) == f"pool: metrics {config}"


def test_run_overrides_the_file_and_keeps_the_overrides_across_a_reload(write_config, start_pool, tmp_path):
    # Given a file asking for 2 processes of 8 slots on queue default
    config = write_config(processes=2, concurrency=8)
    code = ("import sys; from pool.cli import main; "
            "sys.exit(main(sys.argv[1:] + ['--processes', '1', '--concurrency', '3', '--queues', 'extra,default']))")
    pool = PoolProcess(config, tmp_path / "override.log", python=("-c", code))
    try:
        # When `pool run --processes 1 --concurrency 3 --queues extra,default` runs it
        data = wait_until(live_workers(config, 1), timeout=30, message="1 worker")
        assert [(w["concurrency"], w["queues"]) for w in data["workers"]] == [(3, ["extra", "default"])]
        # and is reloaded with SIGHUP
        pool.proc.send_signal(signal.SIGHUP)
        pool.wait_for_log("started worker-1", count=2)
        # Then the replaced worker still follows the command line, not the file
        data = wait_until(lambda: _only_fresh_workers(config), timeout=30, message="the replaced worker")
        assert [(w["concurrency"], w["queues"]) for w in data["workers"]] == [(3, ["extra", "default"])]
        assert "started worker-2" not in pool.output()
        assert pool.stop() == 0
    finally:
        pool.clean_up()


def _only_fresh_workers(config: Path) -> dict | None:
    """`pool status --json` once the worker that a reload retired is gone from it."""
    result = pool_cli("status", str(config), "--json")
    if result.returncode != 0:
        return None
    data = json.loads(result.stdout)
    workers = [w for w in data["workers"] if w["state"] in ("idle", "busy")]
    return {**data, "workers": workers} if len(workers) == 1 and len(data["workers"]) == 1 else None
