"""A read-only snapshot of the pool for `pool status`: queues, supervisors, workers, schedules.

The JSON shape (``pool status --json``) is stable; new fields may be added, none renamed:

    {"time_ms": int,                                   # the Redis server's clock
     "redis": {"url": str, "version": str},
     "pool": {"state": "up" | "degraded" | "down", "hosts": int, "supervisors": int,
              "workers": int, "workers_expected": int | None, "problems": [str]},
     "queues": {name: {"queued": int, "active": int, "delayed": int, "dead": int,
                       "completed": int, "failed": int, "reclaimed": int,    # totals, ever
                       "last_minute": {"completed": int, "failed": int},
                       "last_hour": {"completed": int, "failed": int},
                       "jobs_per_s": float,                    # finished, over the last minute
                       "oldest_wait_s": float | None}},        # the next job's time in the queue
     "supervisors": [{"id", "host", "pid", "state", "processes", "workers", "restarts",
                      "recycles", "metrics", "started_ms", "uptime_s", "heartbeat_age_s"}],
     "workers": [{"id", "host", "pid", "state", "supervisor", "name", "queues", "in_flight",
                  "done", "failed", "concurrency", "memory_bytes", "started_ms",
                  "heartbeat_age_s", "uptime_s",
                  "active"}],                          # {queue: jobs it holds} at its last beat, or None
     "schedules": {name: {"handler": str, "queue": str, "when": str, "last_ms": int | None,
                          "last_job_id": str | None, "next_ms": int}},
     "warnings": [str]}

``last_minute`` and ``last_hour`` count attempts that finished in the last 60 s and 3,600 s of the
server's clock, to the second: ``completed``, and ``failed`` for every failed attempt (also those
that are retried). The totals (``completed``, ``failed``) count outcomes since the queue began.
A queue's ``active`` counts the jobs its workers hold: what each live worker's last heartbeat
said (so it may lag by one heartbeat interval), plus the lists of lost workers not yet reclaimed.

A supervisor's ``state`` is running, reloading, stopping or crash-looping from its own heartbeat,
or ``lost`` once that heartbeat expired. A worker's is busy, idle or stopping, or ``lost`` when
it is still registered but its heartbeat has expired (its jobs stay counted as active until a
supervisor reclaims them). The pool is ``down`` when nothing has a heartbeat, ``degraded`` when
something is lost, missing or crash-looping; ``problems`` says what, in words.

Everything is read in three pipelined round trips, whatever the number of workers and queues
(who is registered; the fields shown of every supervisor's and worker's hash, a few hundred
hashes per read_fields.lua call; one queue_figures.lua call per queue), one more when lost
workers (or workers of an earlier version) hold active lists, and one more on a Cluster or for
a user not allowed to run scripts (a read-only ACL user), where the same reads go as plain
pipelined commands. The cost is O(workers + queues), never O(workers x queues): per queue
one call, and an hour of tallies in at most 120 per-minute totals and 60 per-second counts
(bench/growth_status.py: 10,000 workers and 1,000 queues in about 1,000 calls).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
import redis

from pool import clock
from pool.config import Config
from pool.config_values import redact_url
from pool.connection import server_info
from pool.keys import Keys
from pool.lua import SOURCES
from pool.schedules import Schedule
from pool.status_queues import figures, is_cluster, read_queues


def snapshot(client: redis.Redis, config: Config, url: str) -> dict[str, Any]:
    """Read everything `pool status` shows. Raises redis errors as they come (the CLI reports them)."""
    keys = Keys(config.key_prefix)
    schedule_keys = [keys.schedule(s.queue or config.queues[0], s.name) for s in config.schedules]
    now_s, server_ms, supervisor_ids, worker_ids, marker, *schedule_states = _read_registries(client, keys,
                                                                                              schedule_keys)
    now_ms = clock.now_ms()  # heartbeats carry their writer's clock: ages are judged on ours
    supervisors = [supervisor_record(sid, values, now_ms) for sid, values in zip(
        supervisor_ids, read_fields(client, list(map(keys.supervisor, supervisor_ids)), SUPERVISOR_FIELDS),
        strict=True)]
    workers = [worker_record(wid, values, now_ms) for wid, values in zip(
        worker_ids, read_fields(client, list(map(keys.worker, worker_ids)), WORKER_FIELDS), strict=True)]
    schedules = {s.name: _schedule(s, state, now_ms) for s, state in zip(config.schedules, schedule_states, strict=True)}
    name_workers(workers, supervisors)
    read = {queue: figures(reply, now_s, server_ms)
            for queue, reply in zip(config.queues, read_queues(client, keys, config, now_s, server_ms), strict=True)}
    queues = {queue: figures for queue, (figures, _) in read.items()}
    _count_active(client, keys, queues, workers, {queue: expiring for queue, (_, expiring) in read.items()})
    return {
        "time_ms": server_ms, "redis": {"url": redact_url(url), "version": _server_version(client)},
        "pool": _pool(supervisors, workers), "queues": queues, "supervisors": supervisors,
        "workers": workers, "schedules": schedules, "warnings": _warnings(marker, now_ms) + _eviction_warnings(client, keys),
    }


def _read_registries(client: redis.Redis, keys: Keys, schedule_keys: list[str]) -> list[Any]:
    """The first round trip: the server's time (seconds, ms), who is registered (supervisors,
    workers), the marker's hash and each schedule's state hash."""
    with client.pipeline(transaction=False) as pipe:
        if not is_cluster(client):  # (redis-py allows no keyless command in a Cluster pipeline)
            pipe.time()
        pipe.smembers(keys.supervisors())
        pipe.smembers(keys.workers())
        pipe.hgetall(keys.marker())
        for key in schedule_keys:
            pipe.hgetall(key)
        replies = pipe.execute()
    seconds, micros = client.time() if is_cluster(client) else replies.pop(0)
    supervisors, workers = (sorted(member.decode() for member in members) for members in replies[:2])
    return [int(seconds), int(seconds) * 1000 + int(micros) // 1000, supervisors, workers, *replies[2:]]


# How many hashes one read_fields.lua call reads: about a millisecond of the server's time.
HASHES_PER_CALL = 500


def read_fields(client: redis.Redis, names: list[str], fields: tuple[str, ...]) -> list[list[bytes | None]]:
    """HMGET of ``fields`` of every key, in order, in one round trip: read_fields.lua a few
    hundred keys per call (redis-py's cost per command, not the server's, is what 10,000
    HMGETs spend); a pipeline of HMGETs on a Cluster (the keys are in many slots) or for a user
    not allowed to run scripts (a read-only ACL user)."""
    if not is_cluster(client):
        try:
            with client.pipeline(transaction=False) as pipe:
                script = client.register_script(SOURCES["read_fields"])
                for at in range(0, len(names), HASHES_PER_CALL):
                    script(keys=names[at:at + HASHES_PER_CALL], args=fields, client=pipe)
                return [values for chunk in pipe.execute() for values in chunk]
        except redis.exceptions.NoPermissionError:
            pass
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(name, fields)
        return list(pipe.execute())


def _count_active(client: redis.Redis, keys: Keys, queues: dict[str, dict[str, Any]], workers: list[dict[str, Any]],
                  expiring: dict[str, list[str]]) -> None:
    """Each queue's active jobs: what each worker's heartbeat says it holds there (its ``active``),
    and the length of the lists of workers that say nothing: lost ones (their heartbeat expired,
    the queue's registry still holds them: their jobs wait to be reclaimed) and those of an
    earlier version. O(workers) in memory and O(lost workers) in commands, not one LLEN per
    worker and queue (10k workers, 1,000 queues: 10M commands, 175 s)."""
    counted = {worker["id"] for worker in workers if worker["active"] is not None}
    for worker in workers:
        for queue, count in (worker["active"] or {}).items():
            if queue in queues:
                queues[queue]["active"] += count
    unread = {(queue, worker_id) for queue, ids in expiring.items() for worker_id in ids if worker_id not in counted}
    unread |= {(queue, worker["id"]) for worker in workers if worker["active"] is None
               for queue in worker["queues"] if queue in queues}
    pairs = sorted(unread)
    for (queue, _), length in zip(pairs, active_lengths(client, keys, pairs), strict=True):
        queues[queue]["active"] += length


def active_lengths(client: redis.Redis, keys: Keys, pairs: list[tuple[str, str]]) -> list[int]:
    """How many ids each (queue, worker) holds, started (its running set) or moved by BLMOVE and
    not started yet (its landing list), in one round trip (none if no pairs). The one read of
    those keys in this module."""
    if not pairs:
        return []
    with client.pipeline(transaction=False) as pipe:
        for queue, worker_id in pairs:
            pipe.llen(keys.active(queue, worker_id))
            pipe.zcard(keys.running(queue, worker_id))
        lengths = [int(length) for length in pipe.execute()]
    return [landed + running for landed, running in zip(lengths[::2], lengths[1::2], strict=True)]


def active_by_queue(field: str) -> dict[str, int] | None:
    """A worker hash's ``active`` field (JSON, its jobs by queue; heartbeat.py writes it), or None
    for a worker of an earlier version, which does not write it."""
    if not field:
        return None
    try:
        counts = orjson.loads(field)
    except orjson.JSONDecodeError:
        return None
    return {str(queue): int(count) for queue, count in counts.items()} if isinstance(counts, dict) else None


# -- supervisors and workers -----------------------------------------------------------------------

# The fields of a supervisor's and a worker's hash that status and health read (HMGET order).
SUPERVISOR_FIELDS = ("host", "pid", "state", "processes", "workers", "restarts", "recycles", "metrics",
                     "started_ms", "heartbeat_ms")
WORKER_FIELDS = ("host", "pid", "state", "queues", "in_flight", "done", "failed", "concurrency", "rss_bytes",
                 "started_ms", "heartbeat_ms", "active")


def _texts(values: Sequence[bytes | None]) -> list[str]:
    return [value.decode() if value else "" for value in values]


def supervisor_record(supervisor_id: str, values: Sequence[bytes | None], now_ms: int) -> dict[str, Any]:
    """Decode a supervisor hash's :data:`SUPERVISOR_FIELDS` (all missing: its heartbeat expired,
    ``lost``); health.py reads the same."""
    host_part, pid_part, _ = ([*supervisor_id.rsplit(":", 2), "", ""])[:3]
    if all(value is None for value in values):  # (HMGET of a key that is gone)
        return {"id": supervisor_id, "host": host_part, "pid": int(pid_part) if pid_part.isdigit() else None,
                "state": "lost", "processes": None, "workers": [], "restarts": None, "recycles": None,
                "metrics": None, "started_ms": None, "uptime_s": None, "heartbeat_age_s": None}
    host, pid, state, processes, workers, restarts, recycles, metrics, started, beat = _texts(values)
    started_ms = int(started or now_ms)
    return {
        "id": supervisor_id, "host": host or host_part, "pid": int(pid or 0),
        "state": state or "running", "processes": int(processes or 0),
        "workers": [w for w in workers.split(",") if w],
        "restarts": int(restarts or 0), "recycles": int(recycles or 0),
        "metrics": metrics or None, "started_ms": started_ms, "uptime_s": _age_s(now_ms, started_ms),
        "heartbeat_age_s": _age_s(now_ms, int(beat or now_ms)),
    }


def worker_record(worker_id: str, values: Sequence[bytes | None], now_ms: int) -> dict[str, Any]:
    """Decode a worker hash's :data:`WORKER_FIELDS` (all missing: its heartbeat expired,
    ``lost``); health.py reads the same. Called once per worker of the fleet: positional, no
    dict of the hash built first."""
    if all(value is None for value in values):  # (HMGET of a key that is gone)
        host, pid, _ = ([*worker_id.rsplit(":", 2), "", ""])[:3]
        return {"id": worker_id, "host": host, "pid": int(pid) if pid.isdigit() else None,
                "state": "lost", "supervisor": None, "name": None, "queues": [], "in_flight": None,
                "done": None, "failed": None, "concurrency": None, "memory_bytes": None,
                "started_ms": None, "heartbeat_age_s": None, "uptime_s": None, "active": None}
    host, pid, state, queues, in_flight, done, failed, concurrency, rss, started, beat, active = _texts(values)
    started_ms = int(started or now_ms)
    return {
        "id": worker_id, "host": host, "pid": int(pid or 0), "state": state or "idle",
        "supervisor": None, "name": None,
        "queues": [q for q in queues.split(",") if q],
        "in_flight": int(in_flight or 0), "done": int(done or 0), "failed": int(failed or 0),
        "concurrency": int(concurrency or 0), "memory_bytes": int(rss) if rss else None,
        "started_ms": started_ms, "heartbeat_age_s": _age_s(now_ms, int(beat or now_ms)),
        "uptime_s": _age_s(now_ms, started_ms),
        "active": active_by_queue(active),  # jobs in its active lists by queue, at its last beat
    }


def name_workers(workers: list[dict[str, Any]], supervisors: list[dict[str, Any]]) -> None:
    """Tie each worker to the supervisor that lists it, and name it by its place in that list (worker-1...)."""
    by_id = {w["id"]: w for w in workers}
    for supervisor in supervisors:
        for index, worker_id in enumerate(supervisor["workers"]):
            worker = by_id.get(worker_id)
            if worker is not None:
                worker["supervisor"], worker["name"] = supervisor["id"], f"worker-{index + 1}"


def _pool(supervisors: list[dict[str, Any]], workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The one-line verdict: up, degraded or down, and why."""
    live_supervisors = [s for s in supervisors if s["state"] != "lost"]
    supervised_hosts = {s["host"] for s in live_supervisors}
    # A worker counts when a live supervisor lists it, or when it runs without one (embedded in
    # an application); an unlisted one on a supervised host has just exited or not yet been listed.
    live_workers = [w for w in workers if w["state"] != "lost"
                    and (w["supervisor"] is not None or w["host"] not in supervised_hosts)]
    running_by_supervisor = Counter(w["supervisor"] for w in live_workers)
    problems = []
    for supervisor in supervisors:
        where = f"supervisor {supervisor['host']} pid {supervisor['pid']}"
        if supervisor["state"] == "lost":
            problems.append(f"{where} lost (no heartbeat): its workers' jobs are reclaimed by the others")
        elif supervisor["state"] == "crash-looping":
            problems.append(f"{where}: a worker keeps dying at start-up (see its log)")
        elif supervisor["state"] != "stopping":
            running = running_by_supervisor[supervisor["id"]]
            if running < supervisor["processes"]:
                problems.append(f"{where}: {running} of {supervisor['processes']} workers running")
    lost = [w for w in workers if w["state"] == "lost"]
    if lost:
        problems.append(f"{len(lost)} worker(s) lost (heartbeat expired): their jobs wait to be reclaimed")
    expected = sum(s["processes"] for s in live_supervisors) if live_supervisors else None
    state = "down" if not live_supervisors and not live_workers else "degraded" if problems else "up"
    return {
        "state": state, "hosts": len({s["host"] for s in live_supervisors} | {w["host"] for w in live_workers}),
        "supervisors": len(live_supervisors), "workers": len(live_workers), "workers_expected": expected,
        "problems": problems,
    }


def _age_s(now_ms: int, then_ms: int) -> float:
    return round(max(0, now_ms - then_ms) / 1000, 1)


# -- schedules and warnings ------------------------------------------------------------------------

def _schedule(schedule: Schedule, state: dict[bytes, bytes], now_ms: int) -> dict[str, Any]:
    last = int(state[b"last_ms"]) if b"last_ms" in state else None
    return {
        "handler": schedule.handler, "queue": schedule.queue, "when": schedule.describe(),
        "last_ms": last, "last_job_id": state[b"job_id"].decode() if b"job_id" in state else None,
        "next_ms": schedule.first_due_ms(last, now_ms),
    }


def _server_version(client: redis.Redis) -> str:
    """The server's version, or 'unknown' where INFO is not allowed (managed Redis, ACL)."""
    try:
        info = client.info("server")
    except redis.exceptions.ResponseError:
        return "unknown"
    return str(info.get("valkey_version") or info.get("redis_version") or "unknown")


_LOSS_CAUSES = {  # the housekeeper's finding (housekeeping.check_data), as status says it
    "evicting": "evicting: maxmemory-policy {policy}", "restarted": "restarted without persistence?",
    "flushed": "FLUSHALL or a deletion?",
}


def _warnings(marker: dict[bytes, bytes], now_ms: int) -> list[str]:
    if not marker:
        return ["no pool has run against this Redis yet (or it lost its data before one started)"]
    lost = marker.get(b"data_lost_ms")
    if lost:
        ago = clock.describe_s((now_ms - int(lost)) / 1000)
        cause = _LOSS_CAUSES.get(marker.get(b"cause", b"restarted").decode(), _LOSS_CAUSES["restarted"])
        cause = cause.format(policy=marker.get(b"policy", b"?").decode() or "?")
        return [f"Redis LOST ITS DATA {ago} ago ({cause}): jobs queued before then are gone"]
    return []


def _eviction_warnings(client: redis.Redis, keys: Keys) -> list[str]:
    """Redis evicting now (its policy is not noeviction): queued jobs can vanish at any moment."""
    try:
        memory = server_info(client, "memory", keys.marker())
        evicted = int(server_info(client, "stats", keys.marker()).get("evicted_keys", 0))
    except redis.exceptions.ResponseError:
        return []  # INFO not allowed for this user
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if policy == "noeviction":
        return []
    return [f"Redis is evicting (maxmemory-policy {policy}, {evicted:,} keys evicted so far): queued jobs "
            "can vanish; set maxmemory-policy noeviction"]
