"""The pre-fork supervisor behind `pool run`: start workers, watch them, replace them, stop them.

It never runs jobs, never imports handler code and holds no event loop. Shape (gunicorn's arbiter):

    bind the metrics port → start embedded Redis if the config names none → wait until Redis
    answers → check it
    loop every ≤ 1 s: start auxiliary children that are due (auxiliary.py) → housekeeping
    (requeue the jobs of the dead, reclaim expired workers, watch for data loss) → roll one
    worker if reloading → spawn up to `processes` (with backoff against crash loops) → dispatch
    signals (handle_<signame>) → reap children → kill frozen ones

Signals (gunicorn's conventions): TERM/INT graceful stop, a second one fast; HUP reloads the
config and handler code by replacing workers one at a time; TTIN/TTOU add or remove a worker.
Handlers only put the signal number on a queue; the loop does the work.

Each worker is watched through a file it touches from its event loop (children.py); a worker
that stops touching it is SIGKILLed, even one already told to stop (a frozen loop cannot run
its SIGTERM handler). Every child is forked by forking.fork_child.
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
from pathlib import Path

import redis

from pool import clock
from pool.config import Config
from pool.config_values import redact_url
from pool.connection import (
    OUTAGE_ERRORS,
    backoff_s,
    check_server,
    describe_unreachable,
    resolve_url,
)
from pool.embedded import EmbeddedServer
from pool.errors import ExitCode, PoolError
from pool.handlers import IMPORT_CHECK_TIMEOUT_S
from pool.keys import make_worker_id
from pool.supervisor import exporter, forking, reload
from pool.supervisor.auxiliary import Auxiliary, EmbeddedRedis
from pool.supervisor.children import HEALTHY_RUN_S, ProcessSlot, WorkerChild
from pool.supervisor.forking import death_cause, describe_exit
from pool.supervisor.housekeeping import Housekeeper

logger = logging.getLogger("pool.supervisor")  # the name JSON logs show, kept stable

HANDLED_SIGNALS = forking.HANDLED_BY_SUPERVISOR
KILL_GRACE_S = 5.0  # after the shutdown deadline, workers get this long before SIGKILL
CRASH_LOOP_FAILURES = 3  # a slot whose worker died this often in a row, each quickly, is crash-looping

# What a forked child runs: (config, worker_id, url, alive_file, runs_scheduler) -> exit code.
# The first worker slot also runs the scheduler (delayed jobs, schedules): one per supervisor.
WorkerMain = Callable[[Config, str, str, str, bool], int]


class Supervisor:
    """Runs `processes` worker processes for one config until told to stop.

    Besides its workers it keeps its auxiliary children running (auxiliary.py): the metrics
    process, and the embedded Redis when the config names no server. It is their
    :class:`pool.supervisor.auxiliary.Host`.

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
        self.children: dict[int, WorkerChild] = {}
        self.slots = [ProcessSlot() for _ in range(config.processes)]
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.stop_deadline = 0.0
        self.halt_reason: str | None = None
        self.retiring: set[int] = set()  # pids to replace, one at a time, after a reload
        self.url = ""
        self.housekeeper: Housekeeper  # built by run() once the Redis URL is known; used only after
        self.run_dir = Path(tempfile.mkdtemp(prefix="pool-run-"))
        self.supervisor_id = make_worker_id(secrets.token_hex(3))
        self.started_ms = clock.now_ms()
        self.restarts = 0  # workers that died unexpectedly and were replaced
        self.recycles = 0  # workers that asked to be replaced (max jobs, memory, stuck thread)
        self.exporter: exporter.ExporterProcess | exporter.NoExporter = exporter.NoExporter()
        self.auxiliaries: list[Auxiliary] = []

    # -- main loop --------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the process exit code (0 after a clean stop)."""
        forking.set_title("supervisor", self.config.path)
        self._install_signal_handlers()
        try:
            self._start_services()
            if not self._wait_for_redis():
                return ExitCode.OK
            check_server(self.housekeeper.redis, self.url)
            logger.info("supervisor pid %d starting %d worker(s) x %d slots on %s, queues: %s",
                        os.getpid(), self.config.processes, self.config.concurrency,
                        redact_url(self.url), ", ".join(self.config.queues))
            self._supervise()
            self._finish_housekeeping()
            logger.info("supervisor stopped")
        finally:
            for auxiliary in self.auxiliaries:
                auxiliary.stop()
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.halt_reason:
            logger.error("pool halted: %s", self.halt_reason)
            return ExitCode.JOB_FAILED
        return ExitCode.OK

    def _start_services(self) -> None:
        """Metrics first (a port in use fails at once), then Redis, then the housekeeper."""
        self.exporter = exporter.for_config(self.config, self.supervisor_id, self.run_dir)
        self.auxiliaries.append(self.exporter)
        self.url = self._start_redis()
        recorder = self.exporter.recorder
        self.housekeeper = Housekeeper(self.config, self.url, self.supervisor_id,
                                       on_reconnect=recorder.reconnected, on_requeue=recorder.requeued)

    def _supervise(self) -> None:
        try:
            while self.children or not self.stopping:
                self._tick()
        except BaseException:
            logger.exception("supervisor failed; stopping its workers first")
            self._stop_children_now()
            raise

    def _tick(self) -> None:
        self.exporter.tick()  # /livez: the supervisor's loop runs
        if not self.stopping:
            for auxiliary in self.auxiliaries:
                auxiliary.start_if_due(self)
        self.housekeeper.tick(reclaim=not self.stopping, presence=self._presence())
        if self.stopping:
            self._kill_overdue()
        else:
            self._roll()
            self._spawn_missing()
        booted = sum(1 for child in self.children.values() if child.is_booted() and not child.is_leaving)
        self.exporter.recorder.workers(booted, len(self.slots))
        signum = self._next_signal(self._wait_s())
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
            "metrics": self.exporter.address,
        }

    def _finish_housekeeping(self) -> None:
        self.housekeeper.tick(reclaim=False)
        with contextlib.suppress(*OUTAGE_ERRORS, redis.exceptions.RedisError):
            self.housekeeper.withdraw()
        if self.housekeeper.dead_workers:
            logger.error("Redis is unreachable: the unfinished jobs of %s stay in their running sets "
                         "until a supervisor reclaims them", ", ".join(self.housekeeper.dead_workers))

    # -- what auxiliary children ask of their host ----------------------------------------------------

    def fork(self, role: str, run: Callable[[], int]) -> int:
        """Fork a child (a worker or an auxiliary one) that runs ``run``; returns its pid."""
        self.housekeeper.disconnect()  # no Redis connection crosses a fork
        return forking.fork_child(role, self.config, run)

    def busy_for(self, seconds: float) -> None:
        """The loop is about to block for up to ``seconds`` on purpose: /livez stays up meanwhile."""
        self.exporter.tick(busy_s=seconds)

    # -- signals ----------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._enqueue_signal)

    def _enqueue_signal(self, signum: int, frame: object) -> None:
        # Async-signal context: no logging, no Redis, no os.kill here; the loop does the work.
        self.signals.put_nowait(signum)

    def _next_signal(self, timeout_s: float) -> int | None:
        try:
            return self.signals.get(timeout=timeout_s)
        except queue.Empty:
            return None

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
        self.busy_for(IMPORT_CHECK_TIMEOUT_S)  # importing handlers may take a while
        try:
            fresh = reload.reloaded(self.config, self.overrides)
        except PoolError as exc:
            logger.error("reload refused, the running workers stay: %s", exc)
            return
        self.config = fresh
        self.housekeeper.reload(fresh)  # requeue and reclaim on the new queues, bury by the new rules
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
        self.slots = self.slots[:processes] + [ProcessSlot() for _ in range(processes - len(self.slots))]
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
        config, url = self.config, self.url

        def run() -> int:
            self.exporter.close_in_worker()
            return self.worker_main(config, make_worker_id(nonce), url, str(alive_file), index == 0)

        pid = self.fork(f"worker {index + 1}", run)
        worker_id = make_worker_id(nonce, pid)
        mtime = alive_file.stat().st_mtime
        self.children[pid] = WorkerChild(index, worker_id, time.monotonic(), alive_file, mtime,
                                    last_mtime=mtime, last_change=time.monotonic())
        self.housekeeper.announce_soon()
        logger.info("started worker-%d pid %d (%s)", index + 1, pid, worker_id)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._exited(pid, os.waitstatus_to_exitcode(status))

    def _exited(self, pid: int, code: int) -> None:
        auxiliary = next((a for a in self.auxiliaries if a.pid == pid), None)
        if auxiliary is not None:
            auxiliary.exited(code, self.stopping)
            return
        child = self.children.pop(pid, None)
        if child is not None:
            child.reaped()
            self._child_exited(pid, child, code)

    def _child_exited(self, pid: int, child: WorkerChild, code: int) -> None:
        self.housekeeper.worker_died(child.worker_id, death_cause(code, child.frozen))
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
        reason = describe_exit(code, child.frozen)
        if self.stopping:
            logger.warning("%s %s while stopping; its jobs are requeued", name, reason)
            return
        self.restarts += 1
        self.exporter.recorder.restarted()
        delay = self._backoff(child)
        blame = "while running jobs (counted against them)" if child.busy else "while idle"
        logger.error("%s %s %s; its jobs are requeued, restarting in %.1fs", name, reason, blame, delay)

    def _backoff(self, child: WorkerChild) -> float:
        """Seconds before the slot's next worker: 0 after a death a job caused (see ProcessSlot)."""
        if child.index >= len(self.slots):
            return 0.0
        slot, now = self.slots[child.index], time.monotonic()
        if child.busy:
            slot.forgive(now)
            return 0.0
        return slot.crashed(now, ran_healthy=child.booted and now - child.started >= HEALTHY_RUN_S)

    def _kill_frozen(self) -> None:
        """SIGKILL workers whose event loop stopped touching their alive file, those a reload or
        a stop already SIGTERMed included: a frozen loop cannot run its SIGTERM handler."""
        now = time.monotonic()
        for pid, child in self.children.items():
            if child.frozen:
                continue  # SIGKILLed already: the reaper will see it
            stalled_s = child.stalled_s(now, self.config.heartbeat_ttl_s)
            if stalled_s is not None:
                logger.error("worker-%d pid %d has not run its event loop for %.0fs (frozen? a blocking "
                             "call in an async handler?): killing it", child.index + 1, pid, stalled_s)
                child.mark_frozen()
                self._signal(pid, signal.SIGKILL)

    def _roll(self) -> None:
        """During a reload, stop one old worker once every slot runs a booted worker."""
        self.retiring &= set(self.children)
        if not self.retiring or len(self.children) < len(self.slots):
            return
        if any(not child.is_booted() for child in self.children.values()):
            return
        if any(self.children[pid].is_leaving for pid in self.retiring):
            return
        pid = min(self.retiring, key=lambda p: self.children[p].index)
        self.children[pid].mark_retired()  # not picked twice
        self._signal(pid, signal.SIGTERM)

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
        server = EmbeddedServer(self.config.state_dir)
        self.auxiliaries.append(EmbeddedRedis(server))
        return server.start()

    def _wait_for_redis(self) -> bool:
        """Block until Redis answers PING; False if told to stop meanwhile."""
        attempt = 0
        while True:
            self.exporter.tick()  # /livez answers, and /healthz says Redis is not there
            self.exporter.start_if_due(self)
            try:
                self.housekeeper.ping()
                if attempt:
                    logger.info("Redis at %s answers; starting", redact_url(self.url))
                return True
            except (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
                raise describe_unreachable(self.url, exc) from None  # waiting would not fix it
            except OUTAGE_ERRORS as exc:
                if attempt == 0:
                    logger.warning("waiting for Redis at %s (%s); the pool starts once it answers",
                                   redact_url(self.url), describe_unreachable(self.url, exc))
                attempt += 1
            if self._next_signal(backoff_s(attempt, base_s=0.1, cap_s=1.0) + 0.05) in (signal.SIGTERM, signal.SIGINT):
                logger.info("stopped while waiting for Redis")
                return False
