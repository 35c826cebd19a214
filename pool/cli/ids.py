"""Job ids by unique prefix: what the CLI does when the id it was given names no job.

A full id never comes here: each command first does exactly what it always did with the id, and
only a miss asks for candidates. They come from the structures pool keeps per queue, never from
a SCAN of the keyspace: the queue list (its newest and oldest ``LIST_ENDS`` ids, which is where
a just-enqueued job and the next to run are), the workers' landing lists and running sets, the
delayed and dead sets (ZSCAN with MATCH on that one key), and the ``recent:<status>`` lists (newest 1,000 each).
A finished job that has fallen out of its recent list is found by its full id only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import redis

from pool.config import Config
from pool.connection import OUTAGE_ERRORS, describe_unreachable, resolve_url, sync_client
from pool.errors import JobNotFound, UsageError
from pool.keys import Keys

LIST_ENDS = 5000  # ids read from each end of a queue list
RECENT_STATUSES = ("completed", "failed", "cancelled")
SHOWN = 5  # candidates named in the "ambiguous" message


def resolve(config: Config, prefix: str, queue: str | None = None, dead_only: bool = False) -> tuple[str, str]:
    """The (queue, id) of the one job whose id starts with ``prefix``.

    Args:
        queue: look only in this queue (default: every queue of the config).
        dead_only: look only in the dead sets (`pool dead`).

    Raises:
        JobNotFound: no job's id starts with it.
        UsageError: several do (the message names a few).
        RedisUnavailable: Redis cannot be reached.
    """
    url = resolve_url(config)
    client = sync_client(config, url)
    keys = Keys(config.key_prefix)
    try:
        found = sorted({(name, job_id) for name in ([queue] if queue else config.queues)
                        for job_id in _candidates(client, keys, name, prefix, dead_only)})
    except OUTAGE_ERRORS as exc:
        raise describe_unreachable(url, exc) from None
    finally:
        client.close()
    if not found:
        what = "dead job" if dead_only else "job"
        raise JobNotFound(f"no {what} {prefix} (no id, nor the start of one: never enqueued, or its record expired)")
    exact = [(name, job_id) for name, job_id in found if job_id == prefix]
    if len(exact) > 1:  # ids are unique per queue only
        raise UsageError(f"job id {prefix} exists on queues {', '.join(name for name, _ in exact)} "
                         "(ids are unique per queue): name the queue with --queue")
    if exact:  # an id that is also the start of others ("invoice-4", "invoice-42") means itself
        return exact[0]
    if len(found) > 1:
        names = ", ".join(job_id for _, job_id in found[:SHOWN]) + (", ..." if len(found) > SHOWN else "")
        raise UsageError(f"job id prefix {prefix!r} is ambiguous: {len(found)} jobs start with it ({names}); "
                         "give more characters")
    return found[0]


def _candidates(client: redis.Redis, keys: Keys, queue: str, prefix: str, dead_only: bool) -> set[str]:
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    ids = set(_decoded(client.zscan_iter(keys.dead(queue), match=pattern, count=1000)))
    if dead_only:
        return ids
    ids.update(_decoded(client.zscan_iter(keys.delayed(queue), match=pattern, count=1000)))
    workers = {*_decoded(client.zrange(keys.queue_registry(queue), 0, -1)),
               *_decoded(client.smembers(keys.queue_workers(queue)))}  # (an earlier pool version's)
    with client.pipeline(transaction=False) as pipe:
        pipe.lrange(keys.queue(queue), 0, LIST_ENDS - 1)
        pipe.lrange(keys.queue(queue), -LIST_ENDS, -1)
        for status in RECENT_STATUSES:
            pipe.lrange(keys.recent(queue, status), 0, -1)
        for worker in workers:
            pipe.lrange(keys.active(queue, worker), 0, -1)
            pipe.zrange(keys.running(queue, worker), 0, -1)
        for found in pipe.execute():
            ids.update(job_id for job_id in _decoded(found) if job_id.startswith(prefix))
    return ids


def _decoded(raw: Iterable[Any]) -> list[str]:
    """Ids from LRANGE (bytes) or ZSCAN ((member, score)) replies."""
    return [bytes(item[0] if isinstance(item, tuple) else item).decode() for item in raw]
