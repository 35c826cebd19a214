"""The pre-fork supervisor behind `pool run`: start workers, watch them, replace them, stop them.

It never runs jobs, never imports handler code and holds no event loop. Shape (gunicorn's arbiter):

    start embedded Redis if the config names none → wait until Redis answers → check it
    loop every ≤ 1 s: dispatch signals (handle_<signame>) → reap children → kill frozen ones →
    housekeeping (requeue the jobs of the dead, reclaim expired workers, watch for data loss)
    → roll one worker if reloading → spawn up to `processes` (with backoff against crash loops)

Signals (gunicorn's conventions): TERM/INT graceful stop, a second one fast; HUP reloads the
config and handler code by replacing workers one at a time; TTIN/TTOU add or remove a worker.
Handlers only put the signal number on a queue; the loop does the work.

A frozen worker is found without Redis: each worker touches a file from its event loop, and a
file that goes stale for `heartbeat_ttl` gets the process SIGKILLed (a frozen loop cannot run a
SIGTERM handler) and its jobs requeued.

The same file's first byte says whether the worker runs jobs ('1') or not ('0'); the worker
writes it when it turns busy or idle. A worker that dies while running jobs was killed by one of
them (os._exit, a segfault, a frozen loop): that death is counted per job (deliveries, and the
cause is recorded on each job for the dead set's error) and the slot respawns at once. Only a
worker that dies idle, or before its loop ran, is a crash loop to slow down with backoff.
Rejected: judging by how long the worker lived (a poison job claimed at boot crashes its
worker within a second, which looked like a crash loop and backed the slot off for up to 30 s),
and asking Redis which jobs the worker held (the answer is late, and absent in an outage).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from pool import clock, forking, hooks
from pool import config as config_module
from pool.config import Config
from pool.connection import (
    OUTAGE_ERRORS,
    backoff_s,
    check_server,
    describe_unreachable,
    is_refusal,
    redact,
    resolve_url,
)
from pool.embedded import EmbeddedServer
from pool.errors import ExitCode, PoolError, RedisUnavailable
from pool.handlers import IMPORT_CHECK_TIMEOUT_S, check_importable
from pool.housekeeping import Housekeeper
from pool.keys import make_worker_id

if TYPE_CHECKING:
    from pool.exporter import ExporterProcess
    from pool.metrics import SupervisorMetrics

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
)
KILL_GRACE_S = 5.0  # after the shutdown deadline, workers get this long before SIGKILL
# A worker whose event loop ran this long is no crash loop: its slot's backoff resets. Deaths
# while running jobs are counted per job (max_deliveries), never punished with slower respawns.
HEALTHY_RUN_S = 1.0
BUSY_MARK = b"1"  # the alive file's first byte while the worker runs jobs (see the docstring)
MAX_RESPAWN_DELAY_S = 30.0
EMBEDDED_START_S = 15.0  # the longest EmbeddedServer.start waits for a restarted server
CRASH_LOOP_FAILURES = 3  # a slot whose worker died this often in a row, each quickly, is crash-looping
BOOT_ALLOWANCE_S = 60.0  # time to import handlers before the first touch of the alive file
# Settings a reload (SIGHUP) cannot change in a running pool.
FIXED_ON_RELOAD = ("redis", "key_prefix", "state_dir", "metrics")

# What a forked child runs: (config, worker_id, url, alive_file, runs_scheduler) -> exit code.
# The first worker slot also runs the scheduler (delayed jobs, schedules): one per supervisor.
WorkerMain = Callable[[Config, str, str, str, bool], int]


@dataclass
class _Child:
    index: int
    worker_id: str
    started: float
    alive_file: Path
    created_mtime: float
    killed: bool = False
    booted: bool = False  # its event loop ran (touched the alive file); set when reaped
    busy: bool = False  # it was running jobs when it died (the alive file's mark); set when reaped
    frozen: bool = False  # the supervisor SIGKILLed it because its event loop stopped
    last_mtime: float = 0.0
    last_change: float = 0.0  # monotonic time the alive file was last seen to change


@dataclass
class _Slot:
    """Crash-loop state of one worker slot (index 0..processes-1)."""

    failures: int = 0
    spawn_at: float = 0.0


class Supervisor:
    """Runs `processes` worker processes for one config until told to stop.

    Args:
        config: validated settings (handlers already checked with :func:`check_importable`).
        worker_main: what each forked child runs (``pool.worker.main``).
        overrides: changes the command line makes to the file's settings, applied again on reload.
    """

    def __init__(self, config: Config, worker_main: WorkerMain,
                 overrides: Callable[[Config], Config] = lambda config: config) -> None:
        self.config = config
        self.worker_main = worker_main
        self.overrides = overrides  # `pool run --processes ...`: applied to every reloaded config too
        self.children: dict[int, _Child] = {}
        self.slots = [_Slot() for _ in range(config.processes)]
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.stop_deadline = 0.0
        self.halt_reason: str | None = None
        self.retiring: set[int] = set()  # pids to replace, one at a time, after a reload
        self.embedded: EmbeddedServer | None = None
        self.url = ""
        self.housekeeper: Housekeeper | None = None
        self.run_dir = Path(tempfile.mkdtemp(prefix="pool-run-"))
        self.supervisor_id = make_worker_id(secrets.token_hex(3))
        self.started_ms = clock.now_ms()
        self.restarts = 0  # workers that died unexpectedly and were replaced
        self.recycles = 0  # workers that asked to be replaced (max jobs, memory, stuck thread)
        self.exporter: ExporterProcess | None = None
        self.metrics: SupervisorMetrics | None = None

    # -- main loop --------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the process exit code (0 after a clean stop)."""
        forking.set_title("supervisor", self.config.path)
        self._install_signal_handlers()
        try:
            if self.config.metrics.enabled:
                from pool.exporter import ExporterProcess

                self.exporter = ExporterProcess(self.config, self.supervisor_id, self.run_dir)
                self.metrics = self.exporter.recorder
            self.url = self._start_redis()
            self.housekeeper = Housekeeper(
                self.config, self.url, self.supervisor_id,
                on_reconnect=self.metrics.reconnected if self.metrics else None,
                on_requeue=self.metrics.requeued if self.metrics else None)
            if not self._wait_for_redis():
                return ExitCode.OK
            assert self.housekeeper is not None
            check_server(self.housekeeper.redis, self.url)
            logger.info("supervisor pid %d starting %d worker(s) x %d slots on %s, queues: %s",
                        os.getpid(), self.config.processes, self.config.concurrency,
                        redact(self.url), ", ".join(self.config.queues))
            try:
                while self.children or not self.stopping:
                    self._tick()
            except BaseException:
                logger.exception("supervisor failed; stopping its workers first")
                self._stop_children_now()
                raise
            self._finish_housekeeping()
            logger.info("supervisor stopped")
        finally:
            if self.exporter is not None:
                self.exporter.stop()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            if self.embedded is not None:
                self.embedded.stop()
        if self.halt_reason:
            logger.error("pool halted: %s", self.halt_reason)
            return ExitCode.JOB_FAILED
        return ExitCode.OK

    def _tick(self) -> None:
        assert self.housekeeper is not None
        if self.exporter is not None:
            self.exporter.tick()  # /livez: the supervisor's loop runs
        if self.embedded is not None and not self.stopping and self.embedded.should_start():
            self._restart_embedded()  # it died, or its owner (another pool run) stopped: ours now
        self.housekeeper.tick(reclaim=not self.stopping, presence=self._presence())
        if self.stopping:
            self._kill_overdue()
        else:
            self._roll()
            self._spawn_missing()
            if self.exporter is not None:
                self.exporter.start_if_due(self.url, HANDLED_SIGNALS, self.housekeeper.disconnect)
        if self.metrics is not None:
            booted = sum(1 for child in self.children.values() if self._is_booted(child) and not child.killed)
            self.metrics.workers(booted, len(self.slots))
        try:
            signum = self.signals.get(timeout=self._wait_s())
        except queue.Empty:
            signum = None
        if signum is not None:
            self._dispatch(signum)
        self._reap()
        self._kill_frozen()

    def _wait_s(self) -> float:
        """Sleep until the next signal, at most 1 s, or until the next respawn is due."""
        if self.stopping:
            return 1.0
        now = time.monotonic()
        running = {child.index for child in self.children.values()}
        due = [s.spawn_at for i, s in enumerate(self.slots) if i not in running and s.spawn_at > now]
        return max(0.01, min([1.0, *(at - now for at in due)]))

    def _presence(self) -> dict[str, object]:
        """What `pool status` and `pool health` read about this supervisor (see housekeeping)."""
        crash_looping = any(slot.failures >= CRASH_LOOP_FAILURES for slot in self.slots)
        state = ("stopping" if self.stopping else "crash-looping" if crash_looping
                 else "reloading" if self.retiring else "running")
        by_index = sorted(self.children.values(), key=lambda child: child.index)
        return {
            "host": self.supervisor_id.rsplit(":", 2)[0], "pid": os.getpid(), "started_ms": self.started_ms,
            "state": state, "processes": len(self.slots), "workers": ",".join(c.worker_id for c in by_index),
            "restarts": self.restarts, "recycles": self.recycles, "config": str(self.config.path or ""),
            "metrics": self.exporter.address if self.exporter is not None else "",
        }

    def _finish_housekeeping(self) -> None:
        assert self.housekeeper is not None
        self.housekeeper.tick(reclaim=False)
        with contextlib.suppress(*OUTAGE_ERRORS, redis.exceptions.RedisError):
            self.housekeeper.withdraw()
        if self.housekeeper.dead_workers:
            logger.error("Redis is unreachable: the unfinished jobs of %s stay in their active lists "
                         "until a supervisor reclaims them", ", ".join(self.housekeeper.dead_workers))

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

    def handle_sighup(self) -> None:
        """Reload the config and handler code, then replace the workers one at a time."""
        if self.stopping:
            return
        if self.exporter is not None:
            self.exporter.tick(busy_s=IMPORT_CHECK_TIMEOUT_S)  # importing handlers may take a while
        try:
            fresh = self.overrides(config_module.load(self.config.path))
            check_importable(fresh)
            hooks.check_importable(fresh)
        except PoolError as exc:
            logger.error("reload refused, the running workers stay: %s", exc)
            return
        for name in FIXED_ON_RELOAD:
            if getattr(fresh, name) != getattr(self.config, name):
                logger.warning("reload: %s changed; it takes effect only after a restart", name)
                fresh = replace(fresh, **{name: getattr(self.config, name)})
        self.config = fresh
        if self.exporter is not None:
            self.exporter.reload(fresh)  # new queues and schedules in /metrics and /healthz
        self._resize(fresh.processes)
        self.retiring = set(self.children)
        logger.info("reloading %s: replacing %d worker(s) one at a time", fresh.path.name, len(self.retiring))

    def handle_sigttin(self) -> None:
        self._resize(len(self.slots) + 1)
        logger.info("SIGTTIN: now %d worker process(es)", len(self.slots))

    def handle_sigttou(self) -> None:
        if len(self.slots) <= 1:
            logger.warning("SIGTTOU ignored: at least one worker process must run")
            return
        self._resize(len(self.slots) - 1)
        logger.info("SIGTTOU: now %d worker process(es)", len(self.slots))

    def _resize(self, processes: int) -> None:
        self.slots = self.slots[:processes] + [_Slot() for _ in range(processes - len(self.slots))]
        for pid, child in list(self.children.items()):
            if child.index >= processes:
                self._signal(pid, signal.SIGTERM)

    def _signal_children(self, signum: int) -> None:
        for pid in list(self.children):
            self._signal(pid, signum)

    @staticmethod
    def _signal(pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone: the reaper will see it
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
        alive_file = self.run_dir / f"worker-{nonce}.alive"
        alive_file.touch()
        assert self.housekeeper is not None
        self.housekeeper.disconnect()  # no Redis connection crosses a fork
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        pid = os.fork()
        if pid == 0:
            self._become_worker(index, nonce, alive_file)  # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        worker_id = make_worker_id(nonce, pid)
        mtime = alive_file.stat().st_mtime
        self.children[pid] = _Child(index, worker_id, time.monotonic(), alive_file, mtime,
                                    last_mtime=mtime, last_change=time.monotonic())
        self.housekeeper.announce_soon()
        logger.info("started worker-%d pid %d (%s)", index + 1, pid, worker_id)

    def _become_worker(self, index: int, nonce: str, alive_file: Path) -> None:
        code: int = ExitCode.BOOT
        try:
            forking.reset_signals(HANDLED_SIGNALS)
            forking.set_title(f"worker {index + 1}", self.config.path)
            if self.exporter is not None:
                self.exporter.sock.close()  # the port belongs to the metrics process
            from pool import logs

            logs.setup(self.config.logging, f"worker-{index + 1}")
            code = ExitCode.JOB_FAILED
            code = self.worker_main(self.config, make_worker_id(nonce), self.url, str(alive_file), index == 0)
        except BaseException:  # the child must never return into the supervisor's loop
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
            if self.embedded is not None and pid == self.embedded.pid:
                self._embedded_exited(os.waitstatus_to_exitcode(status))
                continue
            if self.exporter is not None and pid == self.exporter.pid:
                self.exporter.exited(os.waitstatus_to_exitcode(status), self.stopping)
                continue
            child = self.children.pop(pid, None)
            if child is not None:
                child.booted = self._is_booted(child)  # decided before its file goes
                child.busy = _is_marked_busy(child.alive_file)
                child.alive_file.unlink(missing_ok=True)
                self._child_exited(pid, child, os.waitstatus_to_exitcode(status))

    def _embedded_exited(self, code: int) -> None:
        assert self.embedded is not None
        self.embedded.forget_process()
        if self.stopping:
            return
        logger.error("the embedded Redis %s; restarting it (its AOF keeps the jobs)", _describe_exit(code))
        self._restart_embedded()

    def _restart_embedded(self) -> None:
        assert self.embedded is not None
        if self.exporter is not None:
            self.exporter.tick(busy_s=EMBEDDED_START_S)
        try:
            self.embedded.start(EMBEDDED_START_S)
        except RedisUnavailable as exc:
            logger.error("%s; retrying in a second", exc)

    def _child_exited(self, pid: int, child: _Child, code: int) -> None:
        assert self.housekeeper is not None
        self.housekeeper.worker_died(child.worker_id, _death_cause(code, child.frozen))
        if self.exporter is not None:
            self.exporter.worker_exited(pid, set(self.children))
        name = f"worker-{child.index + 1} pid {pid}"
        retired = pid in self.retiring or child.index >= len(self.slots)
        self.retiring.discard(pid)
        if code == ExitCode.OK and (self.stopping or retired):
            logger.info("%s exited", name)
            return
        if code == ExitCode.RECYCLE and not self.stopping:
            self.recycles += 1
            logger.info("%s recycled itself (see its log for why); starting a fresh one", name)
            return
        if code == ExitCode.BOOT:
            self.halt_reason = f"worker-{child.index + 1} could not boot (see its log above)"
            if not self.stopping:
                self.handle_sigterm()
        reason = _describe_exit(code, child.frozen)
        if self.stopping:
            logger.warning("%s %s while stopping; its jobs are requeued", name, reason)
            return
        self.restarts += 1
        if self.metrics is not None:
            self.metrics.restarted()
        delay = self._backoff(child)
        blame = "while running jobs (counted against them)" if child.busy else "while idle"
        logger.error("%s %s %s; its jobs are requeued, restarting in %.1fs", name, reason, blame, delay)

    def _backoff(self, child: _Child) -> float:
        """Seconds before the slot's next worker: 0 after a death a job caused; doubling for a
        worker that keeps dying before it ran anything or while idle (a crash loop)."""
        if child.index >= len(self.slots):
            return 0.0
        slot = self.slots[child.index]
        if child.busy:  # a job killed it: max_deliveries deals with the job, nothing to slow down
            slot.failures = 0
            slot.spawn_at = time.monotonic()
            return 0.0
        if child.booted and time.monotonic() - child.started >= HEALTHY_RUN_S:
            slot.failures = 0
        delay = 0.0 if slot.failures == 0 else min(MAX_RESPAWN_DELAY_S, 0.5 * 2 ** (slot.failures - 1))
        slot.failures += 1
        slot.spawn_at = time.monotonic() + delay
        return delay

    def _kill_frozen(self) -> None:
        """SIGKILL workers whose event loop stopped touching their alive file.

        Staleness is judged on this process's monotonic clock (when the file was last seen to
        change), so a wall-clock step never makes every worker look frozen.
        """
        now = time.monotonic()
        for pid, child in self.children.items():
            if child.killed:
                continue
            try:
                mtime = child.alive_file.stat().st_mtime
            except FileNotFoundError:
                continue
            if mtime != child.last_mtime:
                child.last_mtime, child.last_change = mtime, now
            booted = mtime != child.created_mtime
            limit = self.config.heartbeat_ttl_s if booted else max(self.config.heartbeat_ttl_s, BOOT_ALLOWANCE_S)
            if now - child.last_change > limit:
                logger.error("worker-%d pid %d has not run its event loop for %.0fs (frozen? a blocking "
                             "call in an async handler?): killing it", child.index + 1, pid, now - child.last_change)
                child.killed = child.frozen = True
                self._signal(pid, signal.SIGKILL)

    def _roll(self) -> None:
        """During a reload, stop one old worker once every slot runs a booted worker."""
        self.retiring &= set(self.children)
        if not self.retiring or len(self.children) < len(self.slots):
            return
        if any(not self._is_booted(child) for child in self.children.values()):
            return
        if any(self.children[pid].killed for pid in self.retiring):
            return
        pid = min(self.retiring, key=lambda p: self.children[p].index)
        self.children[pid].killed = True  # marks "being replaced": not picked twice
        self._signal(pid, signal.SIGTERM)

    @staticmethod
    def _is_booted(child: _Child) -> bool:
        try:
            return child.alive_file.stat().st_mtime != child.created_mtime
        except FileNotFoundError:
            return False

    def _stop_children_now(self) -> None:
        """Last resort before the supervisor exits on an error: never leave workers behind."""
        self._signal_children(signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_timeout_s + KILL_GRACE_S
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)  # waiting for children to exit; SIGCHLD handling is what failed
        self._signal_children(signal.SIGKILL)
        self._reap()

    def _kill_overdue(self) -> None:
        if self.children and time.monotonic() >= self.stop_deadline:
            logger.warning("%d worker(s) still running past the shutdown deadline: SIGKILL", len(self.children))
            self._signal_children(signal.SIGKILL)

    # -- Redis ------------------------------------------------------------------------------------

    def _start_redis(self) -> str:
        if not self.config.redis.is_embedded:
            return resolve_url(self.config)
        self.embedded = EmbeddedServer(self.config.state_dir)
        return self.embedded.start()

    def _ping(self) -> None:
        """PING Redis. A refusal is an answer: MISCONF refuses even PING, and workers wait it out."""
        assert self.housekeeper is not None
        try:
            self.housekeeper.redis.ping()
        except redis.exceptions.ResponseError as exc:
            if not is_refusal(exc):
                raise

    def _wait_for_redis(self) -> bool:
        """Block until Redis answers PING; False if told to stop meanwhile."""
        assert self.housekeeper is not None
        attempt = 0
        while True:
            if self.exporter is not None:  # /livez answers, and /healthz says Redis is not there
                self.exporter.tick()
                self.exporter.start_if_due(self.url, HANDLED_SIGNALS, self.housekeeper.disconnect)
            try:
                self._ping()
                if attempt:
                    logger.info("Redis at %s answers; starting", redact(self.url))
                return True
            except (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
                raise describe_unreachable(self.url, exc) from None  # waiting would not fix it
            except OUTAGE_ERRORS as exc:
                if attempt == 0:
                    logger.warning("waiting for Redis at %s (%s); the pool starts once it answers",
                                   redact(self.url), describe_unreachable(self.url, exc))
                attempt += 1
            try:
                signum = self.signals.get(timeout=backoff_s(attempt, base_s=0.1, cap_s=1.0) + 0.05)
                if signum in (signal.SIGTERM, signal.SIGINT):
                    logger.info("stopped while waiting for Redis")
                    return False
            except queue.Empty:
                pass


def _is_marked_busy(alive_file: Path) -> bool:
    try:
        with open(alive_file, "rb") as file:
            return file.read(1) == BUSY_MARK
    except FileNotFoundError:
        return False


def _death_cause(code: int, frozen: bool = False) -> str:
    """How a worker died, as a dead job's error names it: 'killed by SIGSEGV', 'exited with code 3'."""
    if code < 0:
        name = signal.Signals(-code).name
        if frozen and -code == signal.SIGKILL:
            return "killed by the supervisor (SIGKILL) after its event loop froze"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {code}"


def _describe_exit(code: int, frozen: bool = False) -> str:
    cause = _death_cause(code, frozen)
    return f"was {cause}" if code < 0 else cause
