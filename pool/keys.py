"""The whole Redis key schema of `pool`, one function per key.

Every key of one queue carries the hash tag ``{queue}`` so that all of them live in one Cluster
slot, and each Lua script touches a single slot.

| key                                   | type | written by                  | read by                   |
| ------------------------------------- | ---- | --------------------------- | ------------------------- |
| ``<p>:{q}:queue``                     | list | enqueue (LPUSH), requeue    | worker claim (BLMOVE)     |
| ``<p>:{q}:active:<worker_id>``        | list | BLMOVE (landed, not started)| claim, handback, requeue  |
| ``<p>:{q}:running:<worker_id>``       | zset | claim (score = started_ms)  | ack, handback, requeue    |
| ``<p>:{q}:job:<id>``                  | hash | enqueue, claim, ack         | client, worker, status    |
| ``<p>:{q}:done:<id>``                 | list | ack (one token, with TTL)   | client waiting on result  |
| ``<p>:{q}:stats``                     | hash | ack, reclaim (totals)       | status                    |
| ``<p>:{q}:tally:<minute>``            | hash | ack (counts per s, 62 min)  | status: last minute, hour |
| ``<p>:{q}:minutes``                   | hash | ack (counts per minute, 1 h)| status: last hour         |
| ``<p>:{q}:recent:<status>``           | list | ack, cancel (newest 1000)   | `pool jobs --status`      |
| ``<p>:{q}:delayed``                   | zset | enqueue (delay), ack (retry)| claim (promotes due jobs) |
| ``<p>:{q}:retrying``                  | zset | ack (retry), by due_ms      | `pool jobs --status retrying` |
| ``<p>:{q}:wake`` (channel)            | pub  | enqueue, ack: new earliest  | the scheduler (promotion) |
| ``<p>:{q}:ready``                     | list | enqueue, promote, claim, handback, requeue, retry_dead, fire, signal (one token) | shared-wait workers (BLPOP) |
| ``<p>:{q}:rate``                      | zset | claim (one entry per start) | claim (rate limit window) |
| ``<p>:{q}:schedule:<name>``           | hash | fire (the latest tick)      | scheduler, status         |
| ``<p>:{q}:dead``                      | zset | ack (dead), requeue poison  | status, `pool dead`       |
| ``<p>:{q}:cancel:<worker_id>``        | set  | cancel (running jobs)       | the worker's heartbeat    |
| ``<p>:{q}:stale``                     | set  | cancel (queued jobs)        | claim, status, listing    |
| ``<p>:{q}:events`` (channel)          | pub  | ack, cancel, requeue        | `pool events`, clients    |
| ``<p>:{q}:registry``                  | zset | worker heartbeat (deadline) | reclaim (expired.lua)     |
| ``<p>:{q}:workers`` (earlier pools)   | set  | workers of earlier versions | reclaim, until it empties |
| ``<p>:{q}:alive:<worker_id>``         | str  | worker heartbeat (PX ttl)   | reclaim: expired = dead   |
| ``<p>:ready:<worker_id>``             | list | the worker itself           | its own BLPOP (interrupt) |
| ``<p>:workers``                       | set  | worker heartbeat            | status                    |
| ``<p>:worker:<worker_id>``            | hash | worker heartbeat (with TTL) | status                    |
| ``<p>:supervisors``                   | set  | supervisor heartbeat        | status, health            |
| ``<p>:supervisor:<supervisor_id>``    | hash | supervisor heartbeat (TTL)  | status, health            |
| ``<p>:marker``                        | hash | supervisor (once per data)  | supervisor, status        |

The per-queue ``registry`` and ``alive`` keys repeat, in each queue's hash tag, what the global
registry says: reclaim needs liveness, registry and a worker's lists in one slot. The registry is
scored by each worker's liveness deadline in the server's clock, so that a supervisor finds the
expired workers without asking every worker's key (expired.lua).

A worker's claimed ids are in two keys: ``active`` only because BLMOVE needs a list to move
into, ``running`` because an ack must find its id without scanning every running job (LREM on a
list of 1,000 ids blocked Redis ~74 us per ack). An id is in at most one of the two.

``ready`` holds at most one token: "this queue may hold claimable jobs" (lua/includes/signal.lua).
A worker process serving many queues blocks in one BLPOP on the ready lists of the queues it
found empty, plus its own ``ready:<worker_id>`` list, which it pushes onto to end that BLPOP
early (never cancelled in flight). Not the ``wake`` channel: that is the scheduler's pub/sub.

``<p>`` is ``key_prefix`` from pool.yaml (default ``pool``).
"""

from __future__ import annotations

import os
import re
import socket

# How many ids each ``recent:<status>`` list keeps (completed, failed, cancelled), newest first.
RECENT_JOBS = 1000

# Queue names become part of keys and hash tags: no braces, colons or spaces (whole-string
# match: a '$' anchor would let a trailing newline through).
QUEUE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
QUEUE_NAME_RULE = "1-64 characters: letters, digits, '_', '.', '-', starting with a letter or digit"


def make_worker_id(nonce: str, pid: int | None = None) -> str:
    """``host:pid:nonce``: unique across hosts and across pid reuse; logs and keys carry it."""
    return f"{socket.gethostname()}:{pid or os.getpid()}:{nonce}"


def is_valid_queue_name(name: str) -> bool:
    """Whether ``name`` may be used as a queue name (and so inside a hash tag)."""
    return bool(QUEUE_NAME_PATTERN.fullmatch(name))


class Keys:
    """Key builder for one key prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def queue(self, queue: str) -> str:
        return f"{self.prefix}:{{{queue}}}:queue"

    def active(self, queue: str, worker_id: str) -> str:
        """The worker's landing list: ids its BLMOVE moved whose claim has not started them (at
        most one per watched queue). Pool versions before :meth:`running` kept started ids here
        too; requeue still gives those back."""
        return f"{self.prefix}:{{{queue}}}:active:{worker_id}"

    def running(self, queue: str, worker_id: str) -> str:
        """The jobs a worker has started and not acknowledged (zset, score = started_ms): ack and
        handback remove one in O(log n), where the :meth:`active` list would be scanned."""
        return f"{self.prefix}:{{{queue}}}:running:{worker_id}"

    def queue_prefix(self, queue: str) -> str:
        """``<p>:{q}:``: Lua scripts build job and done keys from it, in the queue's slot."""
        return f"{self.prefix}:{{{queue}}}:"

    def job(self, queue: str, job_id: str) -> str:
        return f"{self.prefix}:{{{queue}}}:job:{job_id}"

    def done(self, queue: str, job_id: str) -> str:
        return f"{self.prefix}:{{{queue}}}:done:{job_id}"

    def stats(self, queue: str) -> str:
        return f"{self.prefix}:{{{queue}}}:stats"

    def tally(self, queue: str, minute: int) -> str:
        """Counts of finished attempts in one minute (server clock: unix seconds // 60)."""
        return f"{self.prefix}:{{{queue}}}:tally:{minute}"

    def minutes(self, queue: str) -> str:
        """Counts of finished attempts per minute (``c<minute>``, ``f<minute>``), the last 62."""
        return f"{self.prefix}:{{{queue}}}:minutes"

    def recent(self, queue: str, status: str) -> str:
        """Ids of the latest jobs that finished with ``status`` (completed, failed, cancelled)."""
        return f"{self.prefix}:{{{queue}}}:recent:{status}"

    def delayed(self, queue: str) -> str:
        return f"{self.prefix}:{{{queue}}}:delayed"

    def retrying(self, queue: str) -> str:
        """The retrying jobs among the delayed ones, by due time: leaves with the delayed set."""
        return f"{self.prefix}:{{{queue}}}:retrying"

    def wake(self, queue: str) -> str:
        """Pub/sub channel telling the scheduler a new earliest due time (a channel, not a key)."""
        return f"{self.prefix}:{{{queue}}}:wake"

    def ready(self, queue: str) -> str:
        """At most one token: the queue may hold claimable jobs (list; lua/includes/signal.lua)."""
        return f"{self.prefix}:{{{queue}}}:ready"

    def wait_interrupt(self, worker_id: str) -> str:
        """A worker's own list in its shared BLPOP: it pushes here to end that wait now."""
        return f"{self.prefix}:ready:{worker_id}"

    def rate(self, queue: str) -> str:
        return f"{self.prefix}:{{{queue}}}:rate"

    def schedule(self, queue: str, name: str) -> str:
        """State of a schedule whose jobs go to ``queue`` (in that queue's slot, for fire.lua)."""
        return f"{self.prefix}:{{{queue}}}:schedule:{name}"

    def cancel(self, queue: str, worker_id: str) -> str:
        return f"{self.prefix}:{{{queue}}}:cancel:{worker_id}"

    def stale(self, queue: str) -> str:
        """Ids of queue entries left behind by a cancel, to drop when met (lua/includes/stale.lua)."""
        return f"{self.prefix}:{{{queue}}}:stale"

    def events(self, queue: str) -> str:
        """Pub/sub channel of a queue's finished jobs (a channel, not a key)."""
        return f"{self.prefix}:{{{queue}}}:events"

    def dead(self, queue: str) -> str:
        return f"{self.prefix}:{{{queue}}}:dead"

    def queue_registry(self, queue: str) -> str:
        """The queue's workers by liveness deadline (zset, server ms): what reclaim reads."""
        return f"{self.prefix}:{{{queue}}}:registry"

    def queue_workers(self, queue: str) -> str:
        """The queue's workers as pool versions before :meth:`queue_registry` registered them
        (set): still read, while it exists, for the workers of a pool upgraded in place."""
        return f"{self.prefix}:{{{queue}}}:workers"

    def alive(self, queue: str, worker_id: str) -> str:
        return f"{self.prefix}:{{{queue}}}:alive:{worker_id}"

    def marker(self) -> str:
        return f"{self.prefix}:marker"

    def supervisors(self) -> str:
        return f"{self.prefix}:supervisors"

    def supervisor(self, supervisor_id: str) -> str:
        return f"{self.prefix}:supervisor:{supervisor_id}"

    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"
