"""One queue's figures for `pool status` and the metrics' queue gauges: what waits, what is
delayed and dead, the totals, and the last minute and hour of attempts to the second, read in a
fixed number of commands per queue (queue_figures.lua, or the same reads as plain commands)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
import redis.cluster

from pool.config import Config
from pool.keys import Keys
from pool.lua import SOURCES

HOUR_MINUTES = 60
# A worker whose registry deadline is this close is counted from its list if its hash has gone.
EXPIRING_MS = 1000


def is_cluster(client: redis.Redis) -> bool:
    return isinstance(client, redis.cluster.RedisCluster)


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """An HGETALL reply as a script returns it (a flat list) as the dict redis-py would give."""
    items = iter(flat)
    return dict(zip(items, items, strict=True))


def read_queues(client: redis.Redis, keys: Keys, config: Config, now_s: int, server_ms: int) -> list[Any]:
    """queue_figures.lua once per queue, in one pipeline: a fixed number of commands per queue
    whatever the number of workers and however busy the hour was. The same reads as plain
    commands (:func:`_read_queues_plainly`) on a Cluster, whose pipelines take no scripts in
    every redis-py we support, or for a user not allowed to run scripts."""
    if is_cluster(client):
        return _read_queues_plainly(client, keys, config, now_s, server_ms)
    script = client.register_script(SOURCES["queue_figures"])
    minute, second = divmod(now_s, 60)
    first, last = boundary_seconds(second)
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in config.queues:
                script(keys=_queue_keys(keys, queue, minute),
                       args=[keys.queue_prefix(queue), server_ms + EXPIRING_MS, first, last], client=pipe)
            return list(pipe.execute())
    except redis.exceptions.NoPermissionError:
        return _read_queues_plainly(client, keys, config, now_s, server_ms)


def _queue_keys(keys: Keys, queue: str, minute: int) -> list[str]:
    """queue_figures.lua's KEYS, in its order."""
    return [keys.queue(queue), keys.stale(queue), keys.stats(queue), keys.dead(queue), keys.delayed(queue),
            keys.queue_registry(queue), keys.minutes(queue), keys.tally(queue, minute - 1),
            keys.tally(queue, minute - HOUR_MINUTES)]


def _read_queues_plainly(client: redis.Redis, keys: Keys, config: Config, now_s: int, server_ms: int) -> list[Any]:
    """queue_figures.lua's replies from plain commands, in two round trips (the head's record
    needs the head): the head is read as it is, a cancelled job's stale entry included."""
    minute, second = divmod(now_s, 60)
    fields = boundary_fields(second)
    with client.pipeline(transaction=False) as pipe:
        for queue in config.queues:
            queue_key, stale, stats, dead, delayed, registry, minutes, previous, hour_ago = \
                _queue_keys(keys, queue, minute)
            pipe.llen(queue_key)
            pipe.scard(stale)
            pipe.hgetall(stats)
            pipe.zcard(dead)
            pipe.zcard(delayed)
            pipe.zrangebyscore(registry, "-inf", server_ms + EXPIRING_MS)
            pipe.hgetall(minutes)
            for tally in (previous, hour_ago) if fields else ():
                pipe.hmget(tally, fields)
            pipe.lindex(queue_key, -1)
        replies = iter(pipe.execute())
    read = []
    for _ in config.queues:
        figures = [next(replies) for _ in range(7)]
        tallies = [next(replies), next(replies)] if fields else [[], []]
        read.append([*figures[:2], _flat(figures[2]), *figures[3:6], _flat(figures[6]), *tallies, next(replies)])
    heads = [(reply, keys.job(queue, reply[-1].decode())) for queue, reply in zip(config.queues, read, strict=True)
             if reply[-1] is not None]
    with client.pipeline(transaction=False) as pipe:
        for _, job_key in heads:
            pipe.hmget(job_key, "status", "updated_ms", "enqueued_ms", "due_ms", "started_ms")
        records = pipe.execute()
    for reply in read:
        reply[-1] = []
    for (reply, _), record in zip(heads, records, strict=True):
        reply[-1] = record
    return read


def _flat(pairs: dict[bytes, bytes]) -> list[bytes]:
    """An HGETALL dict as a script returns it: a flat list (:func:`_pairs` reverses it)."""
    return [item for pair in pairs.items() for item in pair]


def figures(reply: list[Any], now_s: int, server_ms: int) -> tuple[dict[str, Any], list[str]]:
    """One queue's figures from its queue_figures.lua reply, and the workers about to expire."""
    listed, stale, stats, dead, delayed, expiring, totals, previous, hour_ago, head = reply
    stats = pairs(stats)
    minute, second = divmod(now_s, 60)
    fields = boundary_fields(second)
    last_minute, last_hour = window_counts(minute, second, pairs(totals), dict(zip(fields, previous, strict=True)),
                                           dict(zip(fields, hour_ago, strict=True)))
    return {
        "queued": waiting(listed, stale), "active": 0, "delayed": delayed, "dead": dead,
        "completed": int(stats.get(b"completed", 0)), "failed": int(stats.get(b"failed", 0)),
        "reclaimed": int(stats.get(b"reclaimed", 0)),
        "last_minute": last_minute, "last_hour": last_hour,
        "jobs_per_s": round((last_minute["completed"] + last_minute["failed"]) / 60, 2),
        "oldest_wait_s": _oldest_wait_s(head, server_ms) if head else None,
    }, [member.decode() for member in expiring]


def waiting(listed: int, stale: int) -> int:
    """Jobs waiting in a queue: its list's length less the entries that cancel.lua left there
    (lua/includes/stale.lua). Exact, except for a stale entry a BLMOVE has just moved into a
    landing list, whose claim drops it a moment later: the figure is then one short, never over."""
    return max(0, listed - stale)


def _oldest_wait_s(fields: list[bytes | None], server_ms: int) -> float | None:
    """How long the job at the head of the queue has waited: since it entered the queue (enqueue,
    promotion or requeue all set updated_ms). If a worker took it meanwhile (read in two round
    trips, without scripts), the wait it ended with (start minus ready) stands in."""
    state = fields[0]
    updated, enqueued, due, started = (int(v) if v and v.isdigit() else None for v in fields[1:])
    if state == b"queued" and updated:
        return round(max(0, server_ms - updated) / 1000, 1)
    if started:
        return round(max(0, started - max(enqueued or 0, due or 0)) / 1000, 1)
    return None


def boundary_seconds(second: int) -> tuple[int, int]:
    """The first and last second to read (inclusive; first > last: none) of the two minutes a
    window starts in (the minute before this one, the minute an hour before), ``second`` into
    the current minute: the seconds after ``second``, or the seconds up to it when they are
    fewer (:func:`window_counts` then takes them from the minute's total). At most 30 seconds of
    each kind, none at second 59."""
    return (0, second) if _counts_head(second) else (second + 1, 59)


def boundary_fields(second: int) -> list[str]:
    """The per-second fields :func:`boundary_seconds` names, as queue_figures.lua reads them."""
    first, last = boundary_seconds(second)
    return [f"{kind}{s}" for kind in "cf" for s in range(first, last + 1)]


def _counts_head(second: int) -> bool:
    return second + 1 < 59 - second


def window_counts(
    minute: int, second: int, totals: Mapping[bytes, bytes], previous: Mapping[str, bytes | None],
    hour_ago: Mapping[str, bytes | None],
) -> tuple[dict[str, int], dict[str, int]]:
    """Completed and failed attempts in the last 60 s and the last 3,600 s, to the second.

    ack.lua counts each minute's attempts per second (``tally:<minute>``, ``c<s>`` completed,
    ``f<s>`` failed) and in total (``minutes``: ``c<minute>``, ``f<minute>``). The window ending
    now (``second`` into ``minute``) takes the current minute whole and, of the minute before
    it (for the hour: the minute an hour before), only the seconds after ``second``; the hour
    takes the 59 minutes between whole. Bounded work: 120 totals and 60 seconds at most.

    Args:
        minute, second: the current minute (unix seconds // 60) and the seconds into it (server clock).
        totals: the queue's ``minutes`` hash.
        previous, hour_ago: the fields :func:`boundary_fields` named, read from the tallies of
            the minute before and of the minute an hour before (None: nothing counted then).
    """
    first = minute - HOUR_MINUTES + 1
    hour = {b"c": 0, b"f": 0}
    for field, value in totals.items():  # one pass over at most ~120 fields, not 120 lookups
        at = field[1:]
        if at.isdigit() and first <= int(at) <= minute and field[:1] in hour:
            hour[field[:1]] += int(value)
    last_minute, last_hour = {}, {}
    for kind, name in (("c", "completed"), ("f", "failed")):
        def total(at: int, kind: str = kind) -> int:
            return int(totals.get(f"{kind}{at}".encode(), 0))

        def tail(at: int, seconds: Mapping[str, bytes | None], kind: str = kind) -> int:
            read = sum(int(value) for field, value in seconds.items() if value and field[:1] == kind)
            # (a minute counted by an earlier version has no total: its head is then not subtracted)
            return max(0, total(at) - read) if _counts_head(second) else read

        last_minute[name] = total(minute) + tail(minute - 1, previous)
        last_hour[name] = hour[kind.encode()] + tail(minute - HOUR_MINUTES, hour_ago)
    return last_minute, last_hour
