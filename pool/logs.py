"""Logging set-up for the supervisor and worker processes: text or JSON lines, one format each.

Every line says which process wrote it (``supervisor`` or ``worker-<n>``), so an operator reading
a merged journal can tell them apart. The one line per finished job comes from the ``pool.jobs``
logger (completed at info, a retry at warning, failed and dead at error), so
``levels: {pool.jobs: warning}`` keeps only the failures.

Completed jobs are the bulk of the lines, and a log record costs ~5 µs of Python, a fifth of a
no-op job: :class:`CompletedLines` gathers the jobs that complete in one event-loop turn into
one record, which both formats still print as one line per job. Any other handler (a file, Sentry's
breadcrumbs, OpenTelemetry) sees that record's message as the jobs' lines joined by "; ", built
only if it asks, and a record of one job also carries that job's fields as attributes. Failed and
dead jobs are one record each, with the exception attached (``exc_info``) for those handlers;
pool's own text format keeps them to one line (the traceback is in `pool job ID`), its JSON
format carries it in ``exception``.

JSON lines carry every attribute a log call adds with ``extra={...}``, pool's own and the user's,
as python-json-logger does.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, NamedTuple

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


class _Joined:
    """The message of a completed-jobs record, joined only when a handler formats it."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[Completed]) -> None:
        self.lines = lines

    def __str__(self) -> str:
        return "; ".join([line.message for line in self.lines])


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
        if not lines:
            return
        extra: dict[str, Any] = {"jobs": lines}
        if len(lines) == 1:
            job = lines[0]
            extra.update(job_id=job.job_id, queue=job.queue, handler=job.handler, outcome="completed",
                         wait_ms=job.wait_ms, run_ms=round(job.run_ms, 1))
        self.logger.info("%s", _Joined(lines), extra=extra)


# Every attribute a LogRecord has without `extra` (3.12 adds taskName), plus what formatters set.
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_OWN = frozenset({"ts", "level", "process", "pid", "logger", "message", "exception"})  # always encodable


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> [<process> <pid>] <message>``; a record of completed jobs as one line each,
    and a finished job's line always one line (its exception is for other handlers)."""

    def __init__(self, role: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)-7s [{role} %(process)d] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        jobs: list[Completed] | None = getattr(record, "jobs", None)
        if not jobs:
            if record.exc_info and getattr(record, "outcome", None) is not None:
                record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
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
        for key, value in record.__dict__.items():  # a user's extra never replaces the fields above
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            # default=str: a user's extra may hold any object (a UUID, a model, a set)
            return orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:  # what default cannot mend: an int over 64 bits, a non-str key
            return orjson.dumps({key: value if key in _OWN else repr(value) for key, value in entry.items()}).decode()

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
