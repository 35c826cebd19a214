"""The embedded server: reachable by the pool's own user only, and handed over between pools."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import redis
import yaml

from pool.client import Client
from pool.embedded import ADDRESS_FILE
from pool.testing import wait_until
from tests.conftest import pool_cli
from tests.process.conftest import live_workers

NOBODY = 65534

# Run as `nobody`: try what another local user would, and say what happened to each attempt.
_PROBE = r"""
import json, os, socket, sys
state_dir, sock_path, files = sys.argv[1], sys.argv[2], sys.argv[3:]
def attempt(action):
    try:
        return "ok: " + repr(action())[:80]
    except OSError as exc:
        return type(exc).__name__
def ping():
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(sock_path)
        s.sendall(b"PING\r\n")
        return s.recv(64)
report = {"uid": os.getuid(), "parent": attempt(lambda: os.listdir(os.path.dirname(state_dir))),
          "list": attempt(lambda: os.listdir(state_dir)), "socket": attempt(ping)}
report.update({path: attempt(lambda path=path: open(path, "rb").read(16)) for path in files})
print(json.dumps(report))
"""


@pytest.fixture
def open_folder():
    """A folder every local user may enter (pytest's own temporary folders are root's alone, which
    would hide what the pool's state folder allows)."""
    folder = Path(tempfile.mkdtemp(prefix="pool-open-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def _run_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, user=NOBODY, group=NOBODY, extra_groups=[], cwd="/", capture_output=True,
                          text=True, timeout=30, check=True)


def _python_for_nobody() -> str:
    """An interpreter user nobody may run (this one may live in root's home)."""
    for candidate in (sys.executable, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        try:
            if candidate and _run_as_nobody(candidate, "-I", "-c", "print(1)").stdout.strip() == "1":
                return candidate
        except (OSError, subprocess.CalledProcessError):
            continue
    pytest.skip("no Python interpreter that user nobody may run")


def _as_nobody(state_dir: Path, sock: Path, files: list[Path]) -> dict[str, str]:
    result = _run_as_nobody(_python_for_nobody(), "-I", "-c", _PROBE, str(state_dir), str(sock), *map(str, files))
    return json.loads(result.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="running a probe as user nobody needs root")
def test_another_local_user_can_neither_connect_nor_read_the_data(open_folder, start_pool):
    # Given a state folder an older version left open (0755, its log 0644)
    state_dir = open_folder / ".pool"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    (state_dir / "valkey.log").write_text("an old log\n")
    (state_dir / "valkey.log").chmod(0o644)
    config = open_folder / "pool.yaml"
    config.write_text(yaml.safe_dump({"processes": 1, "handlers": ["examples.tasks"]}))
    pool = start_pool(config)
    wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    # When a job with a secret argument is written to the AOF
    secret = "secret-" + os.urandom(6).hex()
    assert pool_cli("enqueue", str(config), "examples.tasks.word_count", secret, "--delay", "1h").returncode == 0
    wait_until(lambda: any(secret.encode() in path.read_bytes() for path in _files(state_dir / "appendonlydir")),
               timeout=10, message="the job in the AOF")
    url = json.loads((state_dir / ADDRESS_FILE).read_text())["url"]
    # Then the server listens on its socket only, and the folder and everything in it are private
    with redis.Redis.from_url(url) as own:
        assert own.config_get("port") == {"port": "0"}
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    loose = {str(p): oct(stat.S_IMODE(p.lstat().st_mode)) for p in state_dir.rglob("*")
             if p.lstat().st_mode & 0o077}
    assert loose == {}
    # And user nobody reaches neither the server nor a file, though it can see the folder's parent
    files = _files(state_dir)
    assert any(p.parent.name == "appendonlydir" for p in files) and state_dir / ADDRESS_FILE in files
    report = _as_nobody(state_dir, Path(url.removeprefix("unix://")), files)
    assert report.pop("uid") == NOBODY and report.pop("parent").startswith("ok")
    assert set(report.values()) == {"PermissionError"}, report
    assert pool.stop() == 0


def test_a_socket_path_too_long_for_the_folder_lives_in_a_private_folder(tmp_path):
    """A deep state folder gets its socket in ``<tmp>/pool-<uid>`` (0700), never a TCP port."""
    from pool.embedded import EmbeddedServer

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedServer(deep, persist=False)
    url = server.start()
    try:
        sock = Path(url.removeprefix("unix://"))
        assert sock.parent == Path(tempfile.gettempdir()) / f"pool-{os.geteuid()}"
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        with redis.Redis.from_url(url) as client:
            assert client.config_get("port") == {"port": "0"}
    finally:
        server.stop()


def test_only_one_of_two_sharing_pools_takes_the_server_over(tmp_path):
    """When the owner stops, exactly one of the pools sharing its server becomes the new owner."""
    from pool.embedded import EmbeddedServer

    owner, first, second = (EmbeddedServer(tmp_path / "state", persist=False) for _ in range(3))
    url = owner.start()
    try:
        assert first.start() == second.start() == url
        assert not first.should_start() and not second.should_start()  # the owner lives
        owner.stop()
        takers = [guest for guest in (first, second) if guest.should_start()]
        assert len(takers) == 1 and takers[0].owned
        assert takers[0].start() == url
        assert redis.Redis.from_url(url).ping()
        assert not [guest for guest in (first, second) if guest is not takers[0] and guest.should_start()]
    finally:
        for server in (second, first, owner):
            server.stop()
    assert not (tmp_path / "state" / ADDRESS_FILE).exists()


def _config(folder: Path) -> Path:
    config = folder / "pool.yaml"
    config.write_text(yaml.safe_dump({"processes": 1, "concurrency": 4, "handlers": ["examples.tasks"],
                                      "shutdown_timeout": "10s"}))
    return config


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_a_rolling_restart_hands_the_embedded_server_over(tmp_path, start_pool, how):
    # Given pool A owning the embedded server, and pool B started on the same config beside it
    config = _config(tmp_path)
    old = start_pool(config, "a.log")
    wait_until(live_workers(config, 1), timeout=30, message="pool A's worker")
    new = start_pool(config, "b.log")
    new.wait_for_log("that another pool run owns")
    wait_until(live_workers(config, 2), timeout=30, message="both pools' workers")
    with Client.from_config(config) as client:
        before = [client.enqueue("examples.tasks.sleep", 0.05).id for _ in range(40)]
    # When A stops (or its whole process group is killed), as a rolling restart does
    if how == "stopped":
        assert old.stop() == 0, old.output()
    else:
        old.kill_group()
    # Then B owns the server (a restart from the AOF, or the orphan kept) and jobs still run
    new.wait_for_log("this pool owns it now")
    added = pool_cli("enqueue", str(config), "examples.tasks.add", "2", "3", "--wait", "--wait-timeout", "20")
    assert (added.returncode, added.stdout.strip()) == (0, "5"), added.stderr
    with Client.from_config(config) as client:
        done = [client.wait(job_id, timeout=20).status for job_id in before]
    assert set(done) == {"completed"}  # nothing lost
    # And B stops its server when it stops: it is the owner now
    assert new.stop() == 0, new.output()
    assert not (tmp_path / ".pool" / ADDRESS_FILE).exists()
    assert "is not running" in pool_cli("status", str(config)).stderr
