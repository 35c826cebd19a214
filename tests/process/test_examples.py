"""The documented examples run as written, and an unimportable handler always stops `pool run`
with one line: the pre-fork import check sees exactly the import path its workers will have."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from pool.testing import wait_until
from tests.conftest import ROOT
from tests.process.conftest import live_workers


def _env_without_the_repository() -> dict[str, str]:
    """The environment of a user's shell: pool installed, the repository not on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("POOL_REDIS_URL", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pool_command() -> list[str]:
    """`pool` as the console script runs it: the interpreter adds no current folder (-P)."""
    return [sys.executable, "-P", "-m", "pool"]


def test_the_scheduling_example_runs_from_the_repository_root(tmp_path, url):
    """`pool run examples/scheduling.yaml` from the root: workers import `examples.tasks`."""
    # Given a copy of the repository's examples, pointed at the test server
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns(".pool", "__pycache__"))
    config = tmp_path / "examples" / "scheduling.yaml"
    data = yaml.safe_load(config.read_text())
    data.update(redis={"url": url}, key_prefix="ex" + os.urandom(4).hex(), heartbeat_interval="200ms",
                heartbeat_ttl="2s")
    config.write_text(yaml.safe_dump(data))
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        # When it is started from the folder above, as the README says
        proc = subprocess.Popen([*_pool_command(), "run", "examples/scheduling.yaml"], cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT, env=_env_without_the_repository(),
                                start_new_session=True)
    try:
        # Then both workers come up and serve the schedules
        wait_until(live_workers(config, 2), timeout=30, message=f"2 workers:\n{log.read_text()}")
        assert "cannot start" not in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_handler_only_the_current_folder_has_stops_pool_run_with_one_line(tmp_path, url):
    """A module importable from the shell's folder but not by the workers fails the check."""
    # Given a handler module in the current folder, and a config elsewhere naming it
    (tmp_path / "cwdonly.py").write_text("def job():\n    return 1\n")
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "pool.yaml").write_text(yaml.safe_dump({"redis": {"url": url}, "handlers": ["cwdonly"]}))
    # When `pool run` starts from that folder
    run = subprocess.run([*_pool_command(), "run", "conf/pool.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env=_env_without_the_repository())
    # Then it stops before forking: exit 2 and one line naming the module
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "cwdonly" in run.stderr, run.stderr
    assert "pool halted" not in run.stderr


def test_the_prometheus_example_names_only_files_that_exist():
    """examples/prometheus.yml's rule_files are shipped beside it (promtool checks them too)."""
    config = yaml.safe_load((ROOT / "examples" / "prometheus.yml").read_text())
    for name in config["rule_files"]:
        assert (ROOT / name).is_file() or (ROOT / "examples" / Path(name).name).is_file(), name


def test_a_pool_and_its_clients_run_with_warnings_as_errors(write_config, tmp_path):
    """Whatever redis-py this run has (CI: the newest), pool itself warns about nothing."""
    # Given a pool whose supervisor and workers turn every warning into an error
    config = write_config(processes=1)
    env = {**_env_without_the_repository(), "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error"}
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-W", "error", "-m", "pool", "run", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until(live_workers(config, 1), timeout=30, message=f"1 worker:\n{log.read_text()}")
        # When the CLI and a Client script (warnings as errors too) enqueue and wait for results
        cli = subprocess.run([sys.executable, "-W", "error", "-m", "pool", "enqueue", str(config),
                              "tests.sample_handlers.add", "1", "2", "--wait"],
                             capture_output=True, text=True, timeout=60, env=env)
        script = ("import sys\nfrom pool import Client\n"
                  "with Client.from_config(sys.argv[1]) as client:\n"
                  "    job = client.enqueue('tests.sample_handlers.add', 2, 3)\n"
                  "    print(client.result(job.id, timeout=30))\n")
        user = subprocess.run([sys.executable, "-W", "error", "-c", script, str(config)], capture_output=True,
                              text=True, timeout=60, env=env)
        # Then each gets its answer and prints nothing else, and the pool logs no warning
        assert (cli.returncode, cli.stdout, cli.stderr) == (0, "3\n", "")
        assert (user.returncode, user.stdout, user.stderr) == (0, "5\n", "")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        assert "Warning" not in log.read_text(), log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
