"""Prometheus metrics of the supervisor and its worker processes, summed by the exporter.

prometheus-client's multiprocess mode does the summing: every process writes its counters and
histograms to small memory-mapped files in one folder (the supervisor's, set in
``PROMETHEUS_MULTIPROC_DIR`` before it forks), and the exporter (exporter.py) adds them up at
each scrape. Counts of a worker that exited stay in its files, so totals never go down when a
worker is replaced; its in-flight gauge is dropped (``mark_dead``).

Metric names are the ones our users graph (``job_success_total``, ``job_failure_total``,
``job_queue_length``); labels are ``queue`` and, where it fits, ``handler``. Queue lengths are
not here: the exporter reads them from Redis at scrape time (one source of truth).

``metrics.namespace`` prefixes every name (``pool`` → ``pool_job_success_total``). The
supervisor fixes it with the folder (:func:`enable`), before it forks: every process that writes
into one folder must use the same names, and a reload cannot change either. The gauge of Redis
answering is ``pool_redis_up`` without a namespace, never ``redis_up``: that name is
redis_exporter's, and a Prometheus scraping both would mix the two.

A worker of a pool without ``metrics.port`` gets :class:`NoMetrics`: nothing is imported or written.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

from pool.jobs import Job, Status

DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
NAMESPACE_ENV = "POOL_METRICS_NAMESPACE"  # set by enable(), read by the processes it forks
REDIS_UP_NAMESPACE = "pool"  # the namespace of redis_up when metrics.namespace is not set
LOCK_FILE = ".lock"
COMPACT_AFTER = 8  # exited workers whose files are folded into the archive at once

# Job durations run from milliseconds (e-mail) to an hour (reports); waits likewise.
TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                600.0, 1800.0, 3600.0)


_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # matched whole (fullmatch)


def check_namespace(value: str) -> str:
    """The ``metrics.namespace`` parser's check: a Prometheus name part, without colons (those
    are for recording rules).

    Raises:
        ValueError: the value cannot start a metric name.
    """
    if not _NAMESPACE.fullmatch(value):
        raise ValueError(f"must be 1-64 letters, digits or '_', not starting with a digit, e.g. 'pool' (got {value!r})")
    return value


def enable(directory: str, namespace: str = "") -> None:
    """Switch this process (and the children it forks) to multiprocess metrics in ``directory``,
    with every metric name prefixed by ``namespace`` (none when empty).

    Call before any metric is created. prometheus-client picks its value class when first
    imported; if something imported it earlier without the variable, switch it here.
    """
    os.environ[DIR_ENV] = directory
    os.environ[NAMESPACE_ENV] = namespace
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


def is_enabled() -> bool:
    return bool(os.environ.get(DIR_ENV))


def enabled_namespace() -> str:
    """The namespace :func:`enable` set for this process tree ("" for none)."""
    return os.environ.get(NAMESPACE_ENV, "")


def metric_name(name: str, namespace: str) -> str:
    """``name`` under ``namespace``, as prometheus-client joins them (``pool_job_queue_length``)."""
    return f"{namespace}_{name}" if namespace else name


def redis_up_name(namespace: str) -> str:
    """The gauge of Redis answering a scrape: ``pool_redis_up`` unless a namespace replaces ``pool``."""
    return metric_name("redis_up", namespace or REDIS_UP_NAMESPACE)


def mark_dead(pid: int) -> None:
    """Drop the in-flight gauges of a worker process that exited (its counts stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, os.environ[DIR_ENV])


@contextlib.contextmanager
def files_locked(directory: str, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """The exporter reads the files under a shared lock, :func:`compact` rewrites them under an
    exclusive one, so a scrape never sees a count both in an exited worker's file and in the
    archive (which would read as a counter going up, then down: a reset).

    Yields whether the lock is held (always, when ``wait``)."""
    with open(os.path.join(directory, LOCK_FILE), "a") as lock:
        try:
            fcntl.flock(lock, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def compact(directory: str, pids: Iterable[int]) -> bool:
    """Fold the counter and histogram files of exited workers into one archive file per type.

    Each worker process leaves files behind (its counts must outlive it), so a pool that
    recycles workers often would otherwise make every scrape read thousands of files. Never
    waits: returns False when a scrape holds the files (the caller tries again later). The
    caller must leave out pids that a live process uses again (pid reuse: its file is live).
    """
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    pids = list(dict.fromkeys(pids))
    with files_locked(directory, exclusive=True, wait=False) as locked:
        if not locked:
            return False
        for kind in ("counter", "histogram"):
            archive = os.path.join(directory, f"{kind}_archive.db")
            sources = [path for path in (os.path.join(directory, f"{kind}_{pid}.db") for pid in pids)
                       if os.path.exists(path)]
            if not sources:
                continue
            merged = MultiProcessCollector.merge([*sources, archive] if os.path.exists(archive) else sources,
                                                 accumulate=False)
            fresh = archive + ".new"  # not *.db: a scrape never globs it
            out = MmapedDict(fresh)
            try:
                for metric in merged:
                    for sample in metric.samples:
                        key = mmap_key(metric.name, sample.name, list(sample.labels), list(sample.labels.values()),
                                       metric.documentation)
                        out.write_value(key, sample.value, 0.0)
            finally:
                out.close()
            os.replace(fresh, archive)
            for path in sources:
                os.remove(path)
        for pid in pids:  # the supervisor's gauges, copied into a worker at fork: never set there
            for path in glob.glob(os.path.join(directory, f"gauge_*_{pid}.db")):
                os.remove(path)
    return True


def folder_collector(directory: str) -> Any:
    """The collector a scrape reads the folder with: under the shared lock (see
    :func:`files_locked`), and blind to a file a new process is creating this instant.

    prometheus-client creates a file empty and then sizes it; a scrape that reads it in between
    fails on a struct error (one dropped scrape per worker start, often where workers recycle).
    An empty file holds no counts yet, so it is left out."""
    from prometheus_client.multiprocess import MultiProcessCollector

    class FolderCollector(MultiProcessCollector):
        def collect(self) -> Any:
            with files_locked(self._path, exclusive=False):
                return list(self.merge(_files_with_content(self._path), accumulate=True))

    return FolderCollector(None, directory)


def _files_with_content(directory: str) -> list[str]:
    files = []
    for path in glob.glob(os.path.join(directory, "*.db")):
        try:
            if os.stat(path).st_size > 0:
                files.append(path)
        except FileNotFoundError:  # an exited worker's live gauges, removed since the glob
            continue
    return files


# The queue gauges the exporter reads from Redis at each scrape: (name, help, field of the
# status snapshot's per-queue counts). Here, beside the other names, so one place lists them all.
QUEUE_GAUGES = (
    ("job_queue_length", "Jobs waiting in the queue, ready to run.", "queued"),
    ("job_active_length", "Jobs claimed by workers and not yet finished.", "active"),
    ("job_delayed_length", "Jobs waiting for their time (delayed or retrying).", "delayed"),
    ("job_dead_length", "Jobs in the dead-letter set.", "dead"),
    ("job_oldest_wait_seconds", "How long the next job of the queue has waited.", "oldest_wait_s"),
)

# The samples a family of each type shows in a multiprocess scrape (no ``_created`` there).
_SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def sample_names(namespace: str = "") -> set[str]:
    """Every sample name a scrape of pool can show (``job_success_total``, ``job_duration_seconds_bucket``,
    ...): what alert rules and dashboards may refer to. For tests and tooling: call it where
    :func:`enable` has not run (it builds the recorders, and their unlabelled children)."""
    families = [*WorkerMetrics(namespace).families, *SupervisorMetrics(namespace).families]
    names = {described.name + suffix for family in families for described in family.describe()
             for suffix in _SAMPLE_SUFFIXES[described.type]}
    names.update(metric_name(name, namespace) for name, _, _ in QUEUE_GAUGES)
    names.add(redis_up_name(namespace))
    return names


def _namespace(given: str | None) -> str:
    return enabled_namespace() if given is None else given


class NoMetrics:
    """What a worker records when metrics are off: nothing."""

    def started(self, job: Job) -> None:
        pass

    def acked(self, job: Job, status: Status, run_ms: float) -> None:
        pass

    def ended(self, queue: str) -> None:
        pass

    def reconnected(self) -> None:
        pass


class WorkerMetrics(NoMetrics):
    """What a worker process records: when a job starts (started), when its outcome is written
    (acked) and when its task ends (ended).

    Args:
        namespace: prefix of every name; None: the one :func:`enable` set.
    """

    def __init__(self, namespace: str | None = None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        ns = _namespace(namespace)
        both = ("queue", "handler")
        self._success = Counter("job_success", "Jobs that completed.", both, namespace=ns, registry=None)
        self._failure = Counter("job_failure", "Failed attempts (also those retried later).", both, namespace=ns,
                                registry=None)
        self._retries = Counter("job_retries", "Failed attempts that will be retried.", both, namespace=ns,
                                registry=None)
        self._dead = Counter("job_dead", "Jobs moved to the dead-letter set.", both, namespace=ns, registry=None)
        self._cancelled = Counter("job_cancelled", "Jobs cancelled while running.", both, namespace=ns,
                                  registry=None)
        self._duration = Histogram("job_duration_seconds", "Run time of attempts.", both,
                                   buckets=TIME_BUCKETS, namespace=ns, registry=None)
        self._wait = Histogram("job_queue_wait_seconds", "Time from ready (enqueued or due) to start.",
                               ("queue",), buckets=TIME_BUCKETS, namespace=ns, registry=None)
        self._in_flight = Gauge("jobs_in_flight", "Jobs running now.", ("queue",), multiprocess_mode="livesum",
                                namespace=ns, registry=None)
        reconnects = Counter("redis_reconnects", "Times a process got Redis back after losing it.",
                             ("process",), namespace=ns, registry=None)
        self._reconnects = reconnects.labels("worker")
        self.families = (self._success, self._failure, self._retries, self._dead, self._cancelled,
                         self._duration, self._wait, self._in_flight, reconnects)
        # Label lookups cost more than the increments: keep the children per queue and handler.
        self._children: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._queues: dict[str, tuple[Any, Any]] = {}

    def _per_queue(self, queue: str) -> tuple[Any, Any]:
        children = self._queues.get(queue)
        if children is None:
            children = self._queues[queue] = (self._wait.labels(queue), self._in_flight.labels(queue))
        return children

    def _per_handler(self, queue: str, handler: str) -> tuple[Any, ...]:
        key = (queue, handler)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = tuple(
                metric.labels(queue, handler)
                for metric in (self._success, self._failure, self._retries, self._dead, self._cancelled,
                               self._duration))
        return children

    def started(self, job: Job) -> None:
        wait, in_flight = self._per_queue(job.queue)
        wait.observe(job.wait_ms / 1000)
        in_flight.inc()

    def ended(self, queue: str) -> None:
        """The job's task ended, whatever happened (also when requeued at a stop)."""
        self._per_queue(queue)[1].dec()

    def acked(self, job: Job, status: Status, run_ms: float) -> None:
        """An attempt's outcome was written (not called when its ack was refused)."""
        success, failure, retries, dead, cancelled, duration = self._per_handler(job.queue, job.handler)
        duration.observe(run_ms / 1000)
        if status is Status.COMPLETED:
            success.inc()
        elif status is Status.CANCELLED:
            cancelled.inc()
        else:
            failure.inc()
            if status is Status.RETRYING:
                retries.inc()
            elif status is Status.DEAD:
                dead.inc()

    def reconnected(self) -> None:
        self._reconnects.inc()


class SupervisorMetrics:
    """What the supervisor records: its live workers, the jobs it requeued, its reconnects.

    Args:
        namespace: prefix of every name; None: the one :func:`enable` set.
    """

    def __init__(self, namespace: str | None = None) -> None:
        from prometheus_client import Counter, Gauge

        ns = _namespace(namespace)
        self._alive = Gauge("workers_alive", "Worker processes of this supervisor that run their event loop.",
                            multiprocess_mode="max", namespace=ns, registry=None)
        self._configured = Gauge("workers_configured", "Worker processes this supervisor should run.",
                                 multiprocess_mode="max", namespace=ns, registry=None)
        self._restarts = Counter("worker_restarts", "Worker processes that died and were replaced.", namespace=ns,
                                 registry=None)
        self._reclaimed = Counter("job_reclaimed", "Jobs of dead workers put back in their queue.",
                                  ("queue", "reason"), namespace=ns, registry=None)
        self._quarantined = Counter("job_quarantined", "Jobs moved to the dead set because their workers "
                                    "kept dying (max_deliveries).", ("queue",), namespace=ns, registry=None)
        reconnects = Counter("redis_reconnects", "Times a process got Redis back after losing it.",
                             ("process",), namespace=ns, registry=None)
        self._reconnects = reconnects.labels("supervisor")
        self.families = (self._alive, self._configured, self._restarts, self._reclaimed, self._quarantined,
                         reconnects)

    def workers(self, alive: int, configured: int) -> None:
        self._alive.set(alive)
        self._configured.set(configured)

    def restarted(self) -> None:
        self._restarts.inc()

    def requeued(self, queue: str, reason: str, requeued: int, buried: int) -> None:
        if requeued:
            self._reclaimed.labels(queue, reason).inc(requeued)
        if buried:
            self._quarantined.labels(queue).inc(buried)

    def reconnected(self) -> None:
        self._reconnects.inc()
