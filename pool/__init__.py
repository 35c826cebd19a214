"""pool: a Redis-backed, multi-process job worker pool that never loses a job.

The public API is what ``__all__`` lists; everything else is internal.

    from pool import Client
    client = Client.from_config("pool.yaml")
    job = client.enqueue("examples.tasks.add", 1, 2)
    client.result(job.id, timeout=10)   # 3
"""

from pool.client import AsyncClient, Client, JobSpec
from pool.context import CurrentJob, current_job
from pool.errors import (
    ConfigError,
    CorruptJob,
    HandlerError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    NotReplicated,
    PayloadTooLarge,
    PoolError,
    RedisUnavailable,
    ResultTimeout,
    Retry,
    SerializationError,
    UsageError,
)
from pool.handlers import task
from pool.jobs import Job, Status

__all__ = [
    "AsyncClient",
    "Client",
    "ConfigError",
    "CorruptJob",
    "CurrentJob",
    "HandlerError",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "JobSpec",
    "NotReplicated",
    "PayloadTooLarge",
    "PoolError",
    "RedisUnavailable",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "Status",
    "UsageError",
    "current_job",
    "task",
]
