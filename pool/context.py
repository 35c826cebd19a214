"""`pool.current_job()`: which job the calling code runs in, for handlers and the code they call.

The worker (execution.py) sets a context variable in each job's own task for the length of the
handler call, and runs a plain-function handler in a copy of that context, so its thread sees it
too. This module owns the variable and the read-only view of it; it imports nothing of the worker,
so `import pool` stays light for clients.

Outside a job, :func:`current_job` returns None, as Celery's ``current_task`` and rq's
``get_current_job`` do: code shared between jobs and other callers (a web request, a script) can
test for it instead of catching an error. A thread the handler starts itself sees the job only if
it is started in a copy of the context (``contextvars.copy_context().run``, or
``asyncio.to_thread``), which is how context variables work everywhere.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from pool.jobs import Job


@dataclass(frozen=True, slots=True)
class CurrentJob:
    """The job the calling code runs in.

    Attributes:
        id: the job's id.
        queue: the queue it was claimed from.
        handler: its handler's dotted path.
        attempt: which run of the job this is, from 1 (a retry, a handback by a stopping worker
            and a redelivery after a lost worker each count one).
        enqueued_ms: when it was enqueued, in ms since the epoch (None if unknown).
        deadline_ms: when this run's timeout expires, in ms since the epoch: the handler is
            cancelled (async) or abandoned (plain function) then.
    """

    id: str
    queue: str
    handler: str
    attempt: int
    enqueued_ms: int | None
    deadline_ms: int


# (job, deadline_ms), set by the runner around the handler call; the view is built only when
# asked for, so a job that never asks pays one tuple, not a dataclass.
_running: contextvars.ContextVar[tuple[Job, int] | None] = contextvars.ContextVar("pool_current_job", default=None)


def current_job() -> CurrentJob | None:
    """The job the calling code runs in, or None outside a job (see the module docstring).

    Works in async handlers and in plain-function handlers (their worker thread); the view is a
    snapshot taken as the handler started.
    """
    running = _running.get()
    if running is None:
        return None
    job, deadline_ms = running
    return CurrentJob(job.id, job.queue, job.handler, job.attempts, job.enqueued_ms, deadline_ms)


def enter(job: Job, deadline_ms: int) -> contextvars.Token[tuple[Job, int] | None]:
    """Mark ``job`` as the current one in this context; :func:`leave` with the token undoes it."""
    return _running.set((job, deadline_ms))


def leave(token: contextvars.Token[tuple[Job, int] | None]) -> None:
    _running.reset(token)
