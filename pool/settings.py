"""The frozen settings of one pool.yaml: `Config` and its sections, with their defaults.

Built only by config.py (`load`, `from_mapping`), which owns the key tables, the parsing and
every check; these classes hold values and a few properties derived from them. Import them
from `pool.config`, their public path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pool.schedules import Schedule


@dataclass(frozen=True)
class TLSSettings:
    """Client TLS for ``rediss://`` URLs; all paths optional (system CAs by default)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class RedisSettings:
    """Where Redis is. ``url=None`` means: run (or find) the embedded valkey-server."""

    url: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    socket_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    tls: TLSSettings = TLSSettings()
    cluster: bool = False  # url is one seed node of a Redis Cluster
    sentinels: tuple[str, ...] = ()  # host:port of each Sentinel; the master is asked of them
    service_name: str | None = None  # the master's name in the Sentinels' config
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def is_embedded(self) -> bool:
        return self.url is None and not self.sentinels


@dataclass(frozen=True)
class RetrySettings:
    """How failed jobs are retried. In a handler entry, None means "inherit the pool's `retries`".

    Attributes:
        max_retries: retries after the first attempt (0: none).
        backoff_s: delay before the first retry; each next one doubles (with ±20% jitter).
        backoff_max_s: the longest delay between two attempts.
        retry_on: exception class names that retry; empty means every exception.
        fail_on: exception class names that never retry (checked first).
        dead_letter: exhausted jobs go to the dead set (True) or end as `failed` with a TTL.
    """

    max_retries: int | None = 0
    backoff_s: float | None = 1.0
    backoff_max_s: float | None = 600.0
    retry_on: tuple[str, ...] | None = ()
    fail_on: tuple[str, ...] | None = ()
    dead_letter: bool | None = True

    def merged_over(self, base: RetrySettings) -> RetrySettings:
        """These settings, with every None taken from ``base``."""
        return RetrySettings(**{
            f.name: getattr(base, f.name) if getattr(self, f.name) is None else getattr(self, f.name)
            for f in dataclasses.fields(self)
        })


INHERIT = RetrySettings(None, None, None, None, None, None)


@dataclass(frozen=True)
class DeadLetterSettings:
    """How long and how many dead jobs are kept per queue (the oldest go first)."""

    ttl_s: float = 7 * 86400.0
    max_jobs: int = 10_000


@dataclass(frozen=True)
class ScriptSettings:
    """Script jobs (the built-in `pool.script` handler): where executables may live."""

    allowed_dirs: tuple[str, ...] = ()
    max_output_bytes: int = 64 * 1024
    env: tuple[str, ...] = ()  # variables of the pool's environment a script gets beside the base set


@dataclass(frozen=True)
class LoggingSettings:
    """Log level and format; ``levels`` sets single loggers (``pool.jobs: warning`` keeps only
    the lines of failed jobs)."""

    level: str = "info"
    format: str = "text"
    levels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsSettings:
    """The supervisor's HTTP server for Prometheus (``/metrics``) and probes (``/healthz``).

    Off unless ``port`` is set; port 0 picks a free one (shown by `pool status`)."""

    port: int | None = None
    host: str = "0.0.0.0"
    namespace: str = ""  # prefix of every metric name ("pool": pool_job_success_total); none by default

    @property
    def enabled(self) -> bool:
        return self.port is not None


@dataclass(frozen=True)
class Config:
    """Validated settings of one pool.yaml. Build with :func:`load` or :func:`from_mapping`."""

    path: Path
    redis: RedisSettings = RedisSettings()
    processes: int = 2
    concurrency: int = 16
    queues: tuple[str, ...] = ("default",)
    # Empty: strict priority in the order of `queues`; else each queue's weight (missing ones 1).
    queue_weights: Mapping[str, int] = field(default_factory=dict)
    rate_limits: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # queue → (jobs, window ms)
    schedules: tuple[Schedule, ...] = ()
    handlers: tuple[str, ...] = ()
    handler_retries: Mapping[str, RetrySettings] = field(default_factory=dict)
    on_startup: tuple[str, ...] = ()  # functions each worker process calls before its first job
    on_shutdown: tuple[str, ...] = ()  # ... and after its last job ended
    retries: RetrySettings = RetrySettings()
    dead_letter: DeadLetterSettings = DeadLetterSettings()
    scripts: ScriptSettings = ScriptSettings()
    max_result_bytes: int = 1024 * 1024
    events: bool = True
    timeout_s: float = 30.0
    result_ttl_s: float = 3600.0
    key_prefix: str = "pool"
    shutdown_timeout_s: float = 30.0
    max_payload_bytes: int = 1024 * 1024
    heartbeat_interval_s: float = 1.0
    heartbeat_ttl_s: float = 10.0
    reclaim_interval_s: float = 2.0
    max_deliveries: int = 5
    max_jobs_per_process: int = 0
    # A worker process serving at least this many queues waits for jobs in one BLPOP on the
    # queues' ready tokens instead of one BLMOVE per empty queue (0: never; never on Cluster).
    shared_wait_from: int = 8
    max_memory_per_process: int = 0
    timeout_grace_s: float = 10.0
    # "replicated": enqueue and ack return only once a replica has the write (WAIT), so a
    # failover loses no acknowledged enqueue or result; "fast": Redis's asynchronous replication.
    durability: str = "fast"
    replication_timeout_s: float = 2.0
    state_dir: Path = Path(".pool")
    # Folders put on the workers' import path before the config's own (relative to it), like
    # gunicorn's --pythonpath: `pythonpath: [".."]` lets examples/scheduling.yaml import `examples`.
    pythonpath: tuple[str, ...] = ()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()

    @property
    def base_dir(self) -> Path:
        """Folder of the config file: relative paths and handler imports start here."""
        return self.path.parent

    @property
    def import_paths(self) -> tuple[Path, ...]:
        """Where workers import handlers from, first first: ``pythonpath`` entries, then the
        config's folder (before the interpreter's own path)."""
        return (*(self.base_dir / p for p in self.pythonpath), self.base_dir)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)
