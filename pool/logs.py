"""Logging set-up for the supervisor and worker processes: text or JSON lines, one format each.

Every line says which process wrote it (``supervisor`` or ``worker-<n>``), so an operator reading
a merged journal can tell them apart. The one line per finished job comes from the ``pool.jobs``
logger (completed at info, failures at warning), so ``levels: {pool.jobs: warning}`` keeps only
the failures.

Completed jobs are the bulk of the lines, and a log record costs ~5 µs of Python, a fifth of a
no-op job: :class:`CompletedLines` gathers the jobs that complete in one event-loop turn into
one record, which both formats still print as one line per job.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import NamedTuple

import orjson

from pool.config import LoggingSettings


class Completed(NamedTuple):
    """One completed job's line."""

    job_id: str
    handler: str
    queue: str
    wait_ms: int
    run_ms: float

    @property
    def message(self) -> str:
        return (f"job {self.job_id} {self.handler} queue={self.queue} wait={self.wait_ms}ms "
                f"run={self.run_ms:.1f}ms completed")


class CompletedLines:
    """Completed jobs' lines, sent to the ``pool.jobs`` logger as one record per event-loop turn
    (its ``jobs`` attribute holds them; the formatters below print one line per job)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._pending: list[Completed] = []

    def add(self, line: Completed) -> None:
        if not self._pending:
            # after the job tasks already woken (by the same ack reply): they join this record
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(line)

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        if lines:
            self.logger.info("%d jobs completed", len(lines), extra={"jobs": lines})


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> [<process> <pid>] <message>``; a record of completed jobs as one line each."""

    def __init__(self, role: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)-7s [{role} %(process)d] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        jobs: list[Completed] | None = getattr(record, "jobs", None)
        if not jobs:
            return super().format(record)
        prefix = super().format(logging.makeLogRecord({**record.__dict__, "msg": "", "args": None}))
        return "\n".join([prefix + job.message for job in jobs])


class JSONFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (Loki, Elasticsearch, CloudWatch)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        jobs: list[Completed] | None = getattr(record, "jobs", None)
        if jobs:
            return "\n".join([self._completed(record, job) for job in jobs])
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "process": self.role,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "worker_id", "queue", "handler", "outcome", "wait_ms", "run_ms"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()

    def _completed(self, record: logging.LogRecord, job: Completed) -> str:
        return orjson.dumps({
            "ts": round(record.created, 3), "level": "info", "process": self.role, "pid": record.process,
            "logger": record.name, "message": job.message, "job_id": job.job_id, "queue": job.queue,
            "handler": job.handler, "outcome": "completed", "wait_ms": job.wait_ms, "run_ms": round(job.run_ms, 1),
        }).decode()


def setup(settings: LoggingSettings, role: str) -> None:
    """Configure the root logger of this process (called again in each forked worker)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter(role) if settings.format == "json" else TextFormatter(role))
    # The logging docs' own optimisations: our formats use no caller, thread or process name.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    for name, level in settings.levels.items():
        logging.getLogger(name).setLevel(level.upper())
