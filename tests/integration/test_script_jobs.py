"""Script jobs: the built-in pool.script handler runs executables under the allowed folders only."""

from __future__ import annotations

import os
import stat
import textwrap

import pytest

from pool import Status
from pool.testing import async_wait_until
from tests.conftest import pool_of


@pytest.fixture
def scripts_dir(tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()

    def write(name: str, body: str, executable: bool = True):
        path = folder / name
        path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
        if executable:
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path

    write("ok.sh", 'echo "hello $1"\necho "to stderr" >&2\n')
    write("three.sh", 'echo "partial output"\necho "disk full" >&2\nexit 3\n')
    write("hang.sh", 'sleep 60 &\necho $! > "$1"\nwait\n')  # a grandchild that must not outlive the job
    write("noisy.sh", 'i=0; while [ $i -lt 5000 ]; do echo "line $i"; i=$((i+1)); done\n')
    write("plain.sh", "echo never\n", executable=False)
    write("leaves_child.sh", 'sleep 30 &\necho started\nexit 0\n')
    return folder


@pytest.fixture
def config(make_config, scripts_dir):
    return make_config(scripts={"allowed_dirs": [str(scripts_dir)], "max_output": 1000})


async def run_script(config, url, r, *args, timeout=10.0):
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("pool.script", *args, timeout=timeout)
        return await client.wait(job.id, timeout=timeout + 10)


async def test_exit_0_completes_with_its_output(config, url, r, scripts_dir):
    job = await run_script(config, url, r, str(scripts_dir / "ok.sh"), "world")
    assert job.status is Status.COMPLETED
    assert job.result == {"exit_code": 0, "stdout": "hello world\n", "stderr": "to stderr\n", "truncated": False}


async def test_exit_3_fails_with_stderr_and_output_kept(config, url, r, scripts_dir):
    job = await run_script(config, url, r, str(scripts_dir / "three.sh"))
    assert job.status is Status.DEAD
    assert job.error == f"ScriptFailed: {scripts_dir / 'three.sh'} exited with code 3: disk full"
    assert job.traceback == "--- stdout ---\npartial output\n\n--- stderr ---\ndisk full\n"


async def test_timeout_kills_the_whole_process_group(config, url, r, scripts_dir, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    job = await run_script(config, url, r, str(scripts_dir / "hang.sh"), str(pid_file), timeout=1.0)
    assert job.status is Status.DEAD
    assert job.error == "JobTimeout: job exceeded its timeout of 1s"
    grandchild = int(pid_file.read_text())

    async def gone() -> bool:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return True
        return _is_zombie(grandchild)

    await async_wait_until(gone, timeout=5, message="the script's grandchild to be killed")


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except OSError:
        return True


async def test_a_background_child_does_not_hold_the_job(config, url, r, scripts_dir):
    job = await run_script(config, url, r, str(scripts_dir / "leaves_child.sh"), timeout=20)
    assert (job.status, job.result["stdout"]) == (Status.COMPLETED, "started\n")
    assert job.finished_ms - job.started_ms < 5000


async def test_a_handler_entry_gives_script_jobs_retries(make_config, url, r, scripts_dir):
    config = make_config(scripts={"allowed_dirs": [str(scripts_dir)]}, handlers=[
        "tests.sample_handlers", {"path": "pool.script", "max_retries": 1, "backoff": "10ms"}])
    job = await run_script(config, url, r, str(scripts_dir / "three.sh"))
    assert (job.status, job.attempts) == (Status.DEAD, 2)


async def test_output_is_bounded(config, url, r, scripts_dir):
    job = await run_script(config, url, r, str(scripts_dir / "noisy.sh"))
    assert len(job.result["stdout"]) == 1000
    assert job.result["truncated"] is True


@pytest.mark.parametrize(("name", "error"), [
    ("missing.sh", "ScriptNotFound: {path}: no such file"),
    ("plain.sh", "ScriptNotExecutable: {path} is not executable (chmod +x it)"),
])
async def test_missing_or_plain_files_fail_at_once(config, url, r, scripts_dir, name, error):
    path = str(scripts_dir / name)
    job = await run_script(config, url, r, path)
    assert (job.status, job.attempts, job.error) == (Status.DEAD, 1, error.format(path=path))


async def test_paths_outside_the_allowed_dirs_are_refused(config, url, r, scripts_dir, tmp_path):
    outside = tmp_path / "evil.sh"
    outside.write_text("#!/bin/sh\ntouch pwned\n")
    outside.chmod(0o755)
    (scripts_dir / "link.sh").symlink_to(outside)  # a symlink cannot smuggle it in
    for path in (str(outside), str(scripts_dir / "link.sh"), str(scripts_dir / ".." / "evil.sh"), "/bin/sh"):
        job = await run_script(config, url, r, path)
        assert job.status is Status.DEAD
        assert job.error.startswith(f"ScriptNotAllowed: {path} is outside scripts.allowed_dirs")
    assert not (tmp_path / "pwned").exists()


async def test_without_allowed_dirs_there_is_no_script_handler(make_config, url, r, scripts_dir):
    job = await run_script(make_config(), url, r, str(scripts_dir / "ok.sh"))
    assert job.error.startswith("UnknownHandler: handler 'pool.script' is not registered")


async def test_a_script_gets_a_scrubbed_environment_and_the_allowed_names(make_config, url, r, scripts_dir,
                                                                          monkeypatch):
    """The pool's secrets stay out of a script's environment (and its result); scripts.env adds names."""
    secret, token = "pw-" + os.urandom(6).hex(), "tok-" + os.urandom(6).hex()
    monkeypatch.setenv("REDIS_PASSWORD", secret)
    monkeypatch.setenv("APP_SECRET", secret)
    monkeypatch.setenv("APP_TOKEN", token)
    monkeypatch.setenv("LC_TIME", "C")
    (scripts_dir / "env.sh").write_text("#!/bin/sh\nenv\n")
    (scripts_dir / "env.sh").chmod(0o755)
    config = make_config(scripts={"allowed_dirs": [str(scripts_dir)], "env": ["APP_TOKEN"]})
    job = await run_script(config, url, r, str(scripts_dir / "env.sh"))
    assert job.status is Status.COMPLETED
    printed = dict(line.split("=", 1) for line in job.result["stdout"].splitlines() if "=" in line)
    assert secret not in job.result["stdout"]
    assert {printed.get("APP_TOKEN"), printed.get("LC_TIME"), printed.get("PATH")} == {
        token, "C", os.environ["PATH"]}
