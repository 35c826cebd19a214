"""Logging set-up for the supervisor and worker processes: text or JSON lines, one format each.

Every line says which process wrote it (``supervisor`` or ``worker-<n>``), so an operator reading
a merged journal can tell them apart. The one line per finished job comes from the ``pool.jobs``
logger (completed at info, failures at warning), so ``levels: {pool.jobs: warning}`` keeps only
the failures.
"""

from __future__ import annotations

import logging
import sys

import orjson

from pool.config import LoggingSettings


class JSONFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (Loki, Elasticsearch, CloudWatch)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
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


def setup(settings: LoggingSettings, role: str) -> None:
    """Configure the root logger of this process (called again in each forked worker)."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JSONFormatter(role))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s [{role} %(process)d] %(message)s")
        )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    for name, level in settings.levels.items():
        logging.getLogger(name).setLevel(level.upper())
