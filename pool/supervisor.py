"""The pre-fork supervisor behind `pool run`: start workers, watch them, stop them cleanly.

It never runs jobs and holds no event loop. Shape (after gunicorn's arbiter):

    start embedded Redis if the config names none → wait until Redis answers → check it
    loop every ≤ 1 s: dispatch signals (handle_<signame>) → reap children → requeue the jobs of
    any that died → spawn up to `processes` (with backoff against crash loops)

Signal handlers only put the signal number on a queue; the loop does the work. TERM/INT start
a graceful stop (workers finish in-flight jobs within `shutdown_timeout`, requeue the rest);
a second TERM/INT stops fast; workers that outlive the deadline are SIGKILLed and their jobs
requeued here. Redis work here uses the sync client, disconnected before every fork.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from pool.config import Config
from pool.connection import OUTAGE_ERRORS, backoff_s, describe_unreachable, redact, sync_client
from pool.embedded import EmbeddedServer
from pool.errors import ExitCode, RedisUnavailable
from pool.handlers import Registry
from pool.keys import Keys, make_worker_id
from pool.scripts import Scripts

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
MIN_REDIS_VERSION = (6, 2)
# After the shutdown deadline, workers get this long beyond it before SIGKILL.
KILL_GRACE_S = 5.0
# A worker that ran this long is considered healthy: its crash-loop backoff resets.
HEALTHY_RUN_S = 30.0
MAX_RESPAWN_DELAY_S = 30.0

# The function a forked child runs: (config, registry, worker_id, url) -> exit code.
WorkerMain = Callable[[Config, Registry, str, str], int]


@dataclass
class _Child:
    index: int
    worker_id: str
    started: float


@dataclass
class _Slot:
    """Crash-loop state of one worker slot (index 0..processes-1)."""

    failures: int = 0
    spawn_at: float = 0.0


class Supervisor:
    """Runs `processes` worker processes for one config until told to stop.

    Args:
        config: validated settings.
        registry: handlers, imported before any fork so import errors stop start-up.
        worker_main: what each forked child runs (``pool.worker.main``).
    """

    def __init__(self, config: Config, registry: Registry, worker_main: WorkerMain) -> None:
        self.config = config
        self.registry = registry
        self.worker_main = worker_main
        self.keys = Keys(config.key_prefix)
        self.children: dict[int, _Child] = {}
        self.slots = [_Slot() for _ in range(config.processes)]
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.stop_deadline = 0.0
        self.halt_reason: str | None = None
        # Worker ids whose active lists still need requeueing (kept while Redis is down).
        self.pending: list[str] = []
        self.embedded: EmbeddedServer | None = None
        self.url = ""
        self._redis: redis.Redis | None = None
        self._scripts: Scripts | None = None

    # -- main loop --------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the process exit code (0 after a clean stop)."""
        self._install_signal_handlers()
        try:
            self.url = self._start_redis()
            if not self._wait_for_redis():
                return ExitCode.OK
            self._check_server()
            logger.info("supervisor pid %d starting %d worker(s) x %d slots on %s, queues: %s",
                        os.getpid(), self.config.processes, self.config.concurrency,
                        redact(self.url), ", ".join(self.config.queues))
            while self.children or not self.stopping:
                self._tick()
            self._requeue_pending()
            if self.pending:
                logger.error("Redis is unreachable: the unfinished jobs of %s stay in their active lists "
                             "until a supervisor reclaims them", ", ".join(self.pending))
            logger.info("supervisor stopped")
        finally:
            if self.embedded is not None:
                self.embedded.stop()
        if self.halt_reason:
            logger.error("pool halted: %s", self.halt_reason)
            return ExitCode.JOB_FAILED
        return ExitCode.OK

    def _tick(self) -> None:
        if self.stopping:
            self._kill_overdue()
        else:
            self._requeue_pending()
            self._spawn_missing()
        try:
            signum = self.signals.get(timeout=self._wait_s())
        except queue.Empty:
            signum = None
        if signum is not None:
            self._dispatch(signum)
        self._reap()

    def _wait_s(self) -> float:
        """Sleep until the next signal, at most 1 s, or until the next respawn is due."""
        if self.stopping:
            return 1.0
        now = time.monotonic()
        running = {child.index for child in self.children.values()}
        due = [s.spawn_at for i, s in enumerate(self.slots) if i not in running and s.spawn_at > now]
        return max(0.01, min([1.0, *(at - now for at in due)]))

    # -- signals ----------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._enqueue_signal)

    def _enqueue_signal(self, signum: int, frame: object) -> None:
        # Async-signal context: no logging, no Redis, no os.kill here; the loop does the work.
        self.signals.put_nowait(signum)

    def _dispatch(self, signum: int) -> None:
        handler = getattr(self, f"handle_{signal.Signals(signum).name.lower()}", None)
        if handler is not None:
            handler()

    def handle_sigterm(self) -> None:
        if self.stopping:
            logger.warning("second stop signal: stopping fast (running jobs are cancelled and requeued)")
            self._signal_children(signal.SIGTERM)
            self.stop_deadline = min(self.stop_deadline, time.monotonic() + KILL_GRACE_S)
            return
        logger.info("stopping: workers finish running jobs within %gs, the rest are requeued",
                    self.config.shutdown_timeout_s)
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.config.shutdown_timeout_s + KILL_GRACE_S
        self._signal_children(signal.SIGTERM)

    handle_sigint = handle_sigterm

    def handle_sigchld(self) -> None:
        """Wakes the loop; reaping happens right after every dispatch."""

    def _signal_children(self, signum: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    # -- children ---------------------------------------------------------------------------------

    def _spawn_missing(self) -> None:
        running = {child.index for child in self.children.values()}
        now = time.monotonic()
        for index, slot in enumerate(self.slots):
            if index not in running and now >= slot.spawn_at:
                self._spawn(index)

    def _spawn(self, index: int) -> None:
        nonce = secrets.token_hex(3)
        if self._redis is not None:
            self._redis.connection_pool.disconnect()  # no Redis connection crosses a fork
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        pid = os.fork()
        if pid == 0:
            self._become_worker(index, nonce)  # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        worker_id = make_worker_id(nonce, pid)
        self.children[pid] = _Child(index, worker_id, time.monotonic())
        logger.info("started worker-%d pid %d (%s)", index + 1, pid, worker_id)

    def _become_worker(self, index: int, nonce: str) -> None:
        code = ExitCode.BOOT
        try:
            for signum in HANDLED_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            from pool import logs

            logs.setup(self.config.logging, f"worker-{index + 1}")
            code = ExitCode.JOB_FAILED
            code = self.worker_main(self.config, self.registry, make_worker_id(nonce), self.url)
        except BaseException:
            logger.exception("worker-%d crashed", index + 1)
        finally:
            logging.shutdown()
            os._exit(int(code))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._child_exited(pid, child, status)

    def _child_exited(self, pid: int, child: _Child, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        self.pending.append(child.worker_id)
        if code == 0 and self.stopping:
            logger.info("worker-%d pid %d exited", child.index + 1, pid)
            return
        reason = _describe_exit(code)
        slot = self.slots[child.index]
        if time.monotonic() - child.started >= HEALTHY_RUN_S:
            slot.failures = 0
        delay = 0.0 if slot.failures == 0 else min(MAX_RESPAWN_DELAY_S, 0.5 * 2 ** (slot.failures - 1))
        slot.failures += 1
        slot.spawn_at = time.monotonic() + delay
        if code == ExitCode.BOOT:
            self.halt_reason = f"worker-{child.index + 1} could not boot (see its log above)"
            if not self.stopping:
                self.handle_sigterm()
        if not self.stopping:
            logger.error("worker-%d pid %d %s; its jobs are requeued, restarting in %.1fs",
                         child.index + 1, pid, reason, delay)
        else:
            logger.warning("worker-%d pid %d %s while stopping; its jobs are requeued",
                           child.index + 1, pid, reason)

    def _kill_overdue(self) -> None:
        if self.children and time.monotonic() >= self.stop_deadline:
            logger.warning("%d worker(s) still running past the shutdown deadline: SIGKILL", len(self.children))
            self._signal_children(signal.SIGKILL)

    # -- Redis --------------------------------------------------------------------------------------

    def _start_redis(self) -> str:
        if self.config.redis.url:
            return self.config.redis.url
        self.embedded = EmbeddedServer(self.config.state_dir)
        return self.embedded.start()

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = sync_client(self.config, self.url)
        return self._redis

    @property
    def scripts(self) -> Scripts:
        if self._scripts is None:
            self._scripts = Scripts(self.redis, self.keys)
        return self._scripts

    def _wait_for_redis(self) -> bool:
        """Block until Redis answers PING; False if told to stop meanwhile."""
        attempt = 0
        while True:
            try:
                self.redis.ping()
                if attempt:
                    logger.info("Redis at %s answers; starting", redact(self.url))
                return True
            except OUTAGE_ERRORS as exc:
                if attempt == 0:
                    logger.warning("waiting for Redis at %s (%s); the pool starts once it answers",
                                   redact(self.url), describe_unreachable(self.url, exc))
                attempt += 1
            try:
                signum = self.signals.get(timeout=backoff_s(attempt, base_s=0.1, cap_s=2.0) + 0.05)
                if signum in (signal.SIGTERM, signal.SIGINT):
                    logger.info("stopped while waiting for Redis")
                    return False
            except queue.Empty:
                pass

    def _check_server(self) -> None:
        """Refuse Redis < 6.2 (no BLMOVE); warn about eviction; say which persistence is on."""
        try:
            info = self.redis.info("server") | self.redis.info("persistence")
        except redis.exceptions.ResponseError:
            return  # INFO disabled by the provider: nothing to check
        version = str(info.get("valkey_version") or info.get("redis_version") or "0")
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parts and parts < MIN_REDIS_VERSION:
            raise RedisUnavailable(f"Redis {version} at {redact(self.url)} is too old: pool needs 6.2 or newer (BLMOVE)")
        persistence = "AOF" if info.get("aof_enabled") else "RDB snapshots only" if info.get("rdb_last_save_time") else "none"
        logger.info("Redis %s, persistence: %s", version, persistence)
        try:
            policy = self.redis.config_get("maxmemory-policy").get("maxmemory-policy")
        except redis.exceptions.ResponseError:
            return  # CONFIG disabled (managed Redis)
        if policy and policy != "noeviction":
            logger.warning("Redis maxmemory-policy is %r: eviction can silently delete queued jobs; "
                           "set it to 'noeviction'", policy)

    def _requeue_pending(self) -> None:
        """Requeue the active lists of exited workers; keeps what fails for the next tick."""
        remaining = []
        for worker_id in self.pending:
            try:
                self._requeue_worker(worker_id)
            except OUTAGE_ERRORS:
                remaining.append(worker_id)
        self.pending = remaining

    def _requeue_worker(self, worker_id: str) -> None:
        moved = sum(self.scripts.requeue(queue, worker_id) for queue in self.config.queues)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.srem(self.keys.workers(), worker_id)
            pipe.execute()
        if moved:
            logger.warning("requeued %d job(s) of %s", moved, worker_id)


def _describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"
