"""The metrics process: serves ``/metrics`` (Prometheus), ``/healthz`` and ``/livez`` for one supervisor.

The supervisor binds the port (so a port in use fails `pool run` at once, exit 2) and forks this
process before its workers; the supervisor itself never runs a thread, because it forks. Here a
threaded HTTP server answers:

- ``/metrics``: the counters and histograms of every process of this supervisor, summed from
  the multiprocess folder (metrics.py), plus the queue gauges read from Redis at scrape time
  with the same code as `pool status` (``job_queue_length`` and friends, ``pool_redis_up``);
  gzipped when the scraper accepts it (Prometheus always does: scrapes grow with handlers ×
  queues × 18 buckets).
- ``/healthz``: 200 when this supervisor and all its workers have fresh heartbeats and Redis
  answers, else 503; the body says why (health.py). For readiness probes and alerting.
- ``/livez``: 200 while the supervisor's loop runs (a file it touches every tick), without
  asking Redis: a liveness probe must never restart a pool that is waiting out a Redis outage.

Queue gauges describe the whole pool, so every supervisor reports the same values: aggregate
them with ``max by (queue)``, not ``sum``.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis

from pool import health, metrics, status
from pool.config import Config
from pool.connection import OUTAGE_ERRORS, describe_unreachable, sync_client
from pool.errors import ConfigError

if TYPE_CHECKING:
    from pool.supervisor.auxiliary import Host

logger = logging.getLogger("pool.exporter")  # the name JSON logs show, kept stable

SCRAPE_SOCKET_TIMEOUT_S = 5.0
LIVE_AFTER_S = 10.0  # /livez fails once the supervisor's loop has not run for this long
INDEX = (b"pool: /metrics (Prometheus), /healthz (this supervisor, its workers and Redis: readiness), "
         b"/livez (the supervisor's loop runs: liveness, no Redis)\n")


RESPAWN_DELAY_S = 1.0
# Whatever goes wrong asking Redis, a scrape answers (pool_redis_up 0) and /healthz says 503.
_REDIS_ERRORS: tuple[type[BaseException], ...] = (*OUTAGE_ERRORS, redis.exceptions.RedisError)


class ExporterProcess:
    """The supervisor's side of metrics: the port, the metrics process (fork, respawn, stop),
    the supervisor's own recorder, and the files of exited workers.

    Binds the port (a port in use raises ConfigError: exit 2) and switches this process, and the
    workers it forks, to multiprocess metrics in ``run_dir``/metrics.

    Args:
        config: the pool's settings (metrics.host, metrics.port).
        supervisor_id: whose workers ``/healthz`` judges.
        run_dir: the supervisor's private folder (metrics files, the loop's tick file).
    """

    def __init__(self, config: Config, supervisor_id: str, run_dir: Path) -> None:
        self.config = config
        self.supervisor_id = supervisor_id
        self.tick_file = run_dir / "supervisor.tick"
        self.pid: int | None = None
        self.spawn_at = 0.0
        self.reloading = False
        self.exited_pids: list[int] = []  # workers whose files wait to be compacted
        self.sock = self._bind()
        self.folder = run_dir / "metrics"
        self.folder.mkdir()
        metrics.enable(str(self.folder), config.metrics.namespace)
        self.recorder = metrics.SupervisorMetrics()
        logger.info("metrics files in %s", self.folder)

    def tick(self, busy_s: float = 0.0) -> None:
        """The supervisor's loop ran (what ``/livez`` checks). ``busy_s``: it is about to block
        on purpose for up to this long (a reload's import check, restarting the embedded Redis),
        so the tick is dated that far ahead and /livez stays up meanwhile."""
        now = time.time() + busy_s
        self.tick_file.touch()
        os.utime(self.tick_file, (now, now))

    def worker_exited(self, pid: int, live_pids: set[int]) -> None:
        """Drop the worker's in-flight gauges now; fold its counts into the archive later.

        Args:
            live_pids: the running workers: a pid the system gave to a new worker meanwhile
                names that worker's live files now, and must not be folded.
        """
        metrics.mark_dead(pid)
        if pid not in self.exited_pids:
            self.exited_pids.append(pid)
        self.exited_pids = [p for p in self.exited_pids if p not in live_pids]
        if len(self.exited_pids) < metrics.COMPACT_AFTER:
            return
        try:
            done = metrics.compact(str(self.folder), self.exited_pids)
        except OSError as exc:  # metrics must never stop the supervisor: try again next time
            logger.error("could not fold exited workers' metrics files: %s", exc)
            return
        if done:
            self.exited_pids.clear()

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _bind(self) -> socket.socket:
        """Listen on metrics.host:metrics.port (in the supervisor, before any fork)."""
        host, port = self.config.metrics.host, self.config.metrics.port or 0
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"metrics: cannot listen on {host}:{port} ({exc.strerror}); choose another "
                              "metrics.port, or 0 for any free port") from None
        return sock

    def start_if_due(self, host: Host) -> None:
        """Fork the metrics process unless it runs (or waits out its respawn delay)."""
        if self.pid is not None or time.monotonic() < self.spawn_at:
            return
        config, url, supervisor_pid = self.config, host.url, os.getpid()

        def run() -> int:
            serve(config, url, self.sock, self.supervisor_id, supervisor_pid, self.tick_file)
            return 0

        self.pid = host.fork("metrics", run)
        logger.info("metrics on http://%s/metrics and /healthz (pid %d)", self.address, self.pid)

    def reload(self, config: Config) -> None:
        """Serve a reloaded config: replace the process. It answers the requests it accepted
        before it exits, and the socket stays bound, so later ones wait in the backlog for the
        new process: no scrape is refused or cut off."""
        self.config = config
        if self.pid is not None:
            self.reloading = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def close_in_worker(self) -> None:
        """In a forked worker: the port belongs to the metrics process."""
        self.sock.close()

    def exited(self, code: int, stopping: bool) -> None:
        self.pid = None
        if self.reloading:
            self.reloading = False
            self.spawn_at = 0.0
        elif not stopping:
            logger.error("the metrics process exited with code %d; restarting it in %gs", code, RESPAWN_DELAY_S)
            self.spawn_at = time.monotonic() + RESPAWN_DELAY_S

    def stop(self) -> None:
        """Terminate the metrics process and wait for it (the supervisor's last step)."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGTERM)
                os.waitpid(self.pid, 0)
            self.pid = None
        self.sock.close()


class NoSupervisorMetrics:
    """What the supervisor records when metrics are off: nothing (like metrics.NoMetrics for workers)."""

    def workers(self, alive: int, configured: int) -> None:
        pass

    def restarted(self) -> None:
        pass

    def requeued(self, queue: str, reason: str, requeued: int, buried: int) -> None:
        pass

    def reconnected(self) -> None:
        pass


class NoExporter:
    """Metrics off: the supervisor talks to this as it would to an :class:`ExporterProcess`."""

    pid: int | None = None
    address = ""

    def __init__(self) -> None:
        self.recorder: metrics.SupervisorMetrics | NoSupervisorMetrics = NoSupervisorMetrics()

    def tick(self, busy_s: float = 0.0) -> None:
        """No /livez to keep up."""

    def start_if_due(self, host: Host) -> None:
        """No process to start."""

    def worker_exited(self, pid: int, live_pids: set[int]) -> None:
        """No metrics files to fold."""

    def close_in_worker(self) -> None:
        """No port to close."""

    def reload(self, config: Config) -> None:
        """Nothing serves the config."""

    def exited(self, code: int, stopping: bool) -> None:
        """Never started, so never reaped."""

    def stop(self) -> None:
        """Nothing to stop."""


def for_config(config: Config, supervisor_id: str, run_dir: Path) -> ExporterProcess | NoExporter:
    """The metrics side of a supervisor: an :class:`ExporterProcess` when metrics are on (it
    binds the port now: one in use raises ConfigError), else a :class:`NoExporter`."""
    return ExporterProcess(config, supervisor_id, run_dir) if config.metrics.enabled else NoExporter()


class PoolCollector:
    """Queue gauges from Redis, read at each scrape."""

    def __init__(self, config: Config, url: str) -> None:
        self.config = config
        self.url = url
        self.client = sync_client(config, url)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily  # (prometheus_client loads only where metrics run)

        namespace = self.config.metrics.namespace
        up = GaugeMetricFamily(metrics.redis_up_name(namespace), "Whether Redis answered this scrape.")
        try:
            data = status.snapshot(self.client, self.config, self.url)
        except _REDIS_ERRORS:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, text, field in metrics.QUEUE_GAUGES:
            family = GaugeMetricFamily(metrics.metric_name(name, namespace), text, labels=["queue"])
            for queue, counts in data["queues"].items():
                family.add_metric([queue], float(counts[field] or 0))
            yield family


def serve(config: Config, url: str, sock: socket.socket, supervisor_id: str, supervisor_pid: int,
          tick_file: Path) -> None:
    """Run the HTTP server until the supervisor goes away (runs in the forked metrics process)."""
    from prometheus_client import CollectorRegistry  # only the metrics process loads it

    registry = CollectorRegistry()
    registry.register(metrics.folder_collector(os.environ[metrics.DIR_ENV]))
    registry.register(PoolCollector(config, url))
    probe_client = sync_client(config, url)

    def healthz() -> tuple[int, str]:
        try:
            verdict = health.check(probe_client, config, url, supervisor_id.rsplit(":", 2)[0], supervisor_id)
        except _REDIS_ERRORS as exc:
            return 503, f"unhealthy: {describe_unreachable(url, exc)}"
        return (200, f"ok: {verdict.message}") if verdict.healthy else (503, f"unhealthy: {verdict.message}")

    def livez() -> tuple[int, str]:
        """No Redis here: a liveness probe must not restart a pool that waits out an outage."""
        # One housekeeping call may block for the Redis timeouts when Redis hangs: that is no death.
        limit = max(LIVE_AFTER_S, 3 * config.heartbeat_interval_s) + config.redis.socket_timeout_s \
            + config.redis.connect_timeout_s
        try:
            age = time.time() - tick_file.stat().st_mtime
        except FileNotFoundError:
            return 503, "not live: the supervisor has not started its loop"
        if age < 0:
            return 200, f"live: the supervisor is busy for up to {-age:.0f}s more (reload or Redis restart)"
        if age > limit:
            return 503, f"not live: the supervisor's loop last ran {age:.0f}s ago"
        return 200, f"live: the supervisor's loop ran {age:.1f}s ago"

    server = _Server(sock, registry, {"/healthz": healthz, "/livez": livez})
    threading.Thread(target=_exit_when_orphaned, args=(supervisor_pid,), daemon=True).start()
    # SIGTERM (a reload or the supervisor's stop): accept nothing more, answer what was accepted.
    # shutdown() waits for serve_forever, so it runs in a thread, not in this (main) thread.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    server.serve_forever()
    drain_s = SCRAPE_SOCKET_TIMEOUT_S + config.redis.connect_timeout_s + config.redis.socket_timeout_s
    if not server.drained(drain_s):
        logger.warning("stopping with %d request(s) still unanswered after %gs", server.in_flight, drain_s)


def _exit_when_orphaned(supervisor_pid: int) -> None:
    """A killed supervisor cannot stop this process: it stops itself, freeing the port."""
    while os.getppid() == supervisor_pid:
        time.sleep(1.0)
    os._exit(0)


class _Server(ThreadingHTTPServer):
    """Serves on the supervisor's listening socket and counts the requests it has accepted, so
    that a stop answers each of them: connections not yet accepted wait in the socket's backlog
    for the next metrics process, and none is cut off mid-answer."""

    daemon_threads = True
    block_on_close = False  # drained() waits instead, with a deadline

    def __init__(self, sock: socket.socket, registry: Any, probes: dict[str, Any]) -> None:
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_name, self.server_port = str(sock.getsockname()[0]), int(sock.getsockname()[1])
        self.registry = registry
        self.probes = probes
        self.in_flight = 0
        self.idle = threading.Condition()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.idle:  # counted before its thread starts: serve_forever may return right after
            self.in_flight += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._finished()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._finished()

    def _finished(self) -> None:
        with self.idle:
            self.in_flight -= 1
            self.idle.notify_all()

    def drained(self, timeout: float) -> bool:
        """Wait until every accepted request is answered; False if some still run at the deadline."""
        with self.idle:
            return self.idle.wait_for(lambda: self.in_flight <= 0, timeout)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header asks for gzip. prometheus-client's ``gzip_accepted``
    would do, but it reads ``gzip;q=0`` (gzip refused) as a yes."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SCRAPE_SOCKET_TIMEOUT_S

    def do_GET(self) -> None:
        from prometheus_client.exposition import choose_encoder  # as above: metrics process only

        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                body = encoder(self.server.registry)
            except Exception as exc:  # a scraper gets an answer it can count as failed, not a cut
                logger.error("a scrape failed: %s: %s", type(exc).__name__, exc)
                self._reply(500, "text/plain; charset=utf-8", f"scrape failed: {type(exc).__name__}\n".encode())
                return
            if accepts_gzip(self.headers.get("Accept-Encoding", "")):
                self._reply(200, content_type, gzip.compress(body), {"Content-Encoding": "gzip"})
            else:
                self._reply(200, content_type, body)
        elif path in self.server.probes:
            code, text = self.server.probes[path]()
            self._reply(code, "text/plain; charset=utf-8", (text + "\n").encode())
        elif path == "/":
            self._reply(200, "text/plain; charset=utf-8", INDEX)
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found\n" + INDEX)

    def _reply(self, code: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.path.startswith("/metrics"):  # caches must keep the gzipped and the plain answer apart
            self.send_header("Vary", "Accept-Encoding")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every 15 s are not news: no access log."""
