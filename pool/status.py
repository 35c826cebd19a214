"""A read-only snapshot of the pool for `pool status`: queues, workers, and their counts.

The JSON shape (``pool status --json``) is stable; new fields may be added, none renamed:

    {"redis": {"url": str, "version": str},
     "queues": {name: {"queued": int, "active": int, "delayed": int, "completed": int,
                       "failed": int, "dead": int, "reclaimed": int}},
     "workers": [{"id", "host", "pid", "state", "queues", "in_flight", "done", "failed",
                  "concurrency", "started_ms", "heartbeat_age_s", "uptime_s"}],
     "schedules": {name: {"handler": str, "queue": str, "when": str, "last_ms": int | None,
                          "last_job_id": str | None, "next_ms": int}},
     "warnings": [str]}

``warnings`` says, in words, what an operator must know first: Redis lost the pool's data
(restarted without persistence), or no pool has ever run against this Redis.

``state`` is busy, idle or stopping from the worker's own heartbeat, or ``lost`` when the worker
is still registered but its heartbeat has expired (its jobs stay counted as active).
Everything is read in two pipelined round trips, whatever the number of workers and queues.
"""

from __future__ import annotations

from typing import Any

import redis

from pool import clock
from pool.config import Config
from pool.connection import redact
from pool.keys import Keys
from pool.schedules import Schedule


def snapshot(client: redis.Redis, config: Config, url: str) -> dict[str, Any]:
    """Read queues and workers. Raises redis errors as they come (the CLI reports them)."""
    keys = Keys(config.key_prefix)
    worker_ids = sorted(member.decode() for member in client.smembers(keys.workers()))
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.marker())
        for worker_id in worker_ids:
            pipe.hgetall(keys.worker(worker_id))
        for queue in config.queues:
            pipe.llen(keys.queue(queue))
            pipe.hgetall(keys.stats(queue))
            pipe.zcard(keys.dead(queue))
            pipe.zcard(keys.delayed(queue))
            for worker_id in worker_ids:
                pipe.llen(keys.active(queue, worker_id))
        for schedule in config.schedules:
            pipe.hgetall(keys.schedule(schedule.queue or config.queues[0], schedule.name))
        replies = iter(pipe.execute())
    marker = next(replies)
    now_ms = clock.now_ms()
    workers = [_worker(worker_id, next(replies), now_ms) for worker_id in worker_ids]
    queues = {}
    for queue in config.queues:
        queued, stats, dead, delayed = next(replies), next(replies), next(replies), next(replies)
        active = sum(next(replies) for _ in worker_ids)
        queues[queue] = {
            "queued": queued,
            "active": active,
            "delayed": delayed,
            "completed": int(stats.get(b"completed", 0)),
            "failed": int(stats.get(b"failed", 0)),
            "dead": dead,
            "reclaimed": int(stats.get(b"reclaimed", 0)),
        }
    schedules = {s.name: _schedule(s, next(replies), now_ms) for s in config.schedules}
    version = _server_version(client)
    return {"redis": {"url": redact(url), "version": str(version)}, "queues": queues, "workers": workers,
            "schedules": schedules, "warnings": _warnings(marker, now_ms)}


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


def _warnings(marker: dict[bytes, bytes], now_ms: int) -> list[str]:
    if not marker:
        return ["no pool has run against this Redis yet (or it lost its data before one started)"]
    lost = marker.get(b"data_lost_ms")
    if lost:
        ago = _duration((now_ms - int(lost)) / 1000)
        return [f"Redis LOST ITS DATA {ago} ago (restarted without persistence?): jobs queued before then are gone"]
    return []


def _worker(worker_id: str, fields: dict[bytes, bytes], now_ms: int) -> dict[str, Any]:
    host, pid, _ = ([*worker_id.rsplit(":", 2), "", ""])[:3]
    if not fields:
        return {"id": worker_id, "host": host, "pid": int(pid) if pid.isdigit() else None,
                "state": "lost", "queues": [], "in_flight": None, "done": None, "failed": None,
                "concurrency": None, "started_ms": None, "heartbeat_age_s": None, "uptime_s": None}
    get = lambda name: fields.get(name.encode(), b"").decode()  # noqa: E731
    started_ms = int(get("started_ms") or now_ms)
    return {
        "id": worker_id,
        "host": get("host"),
        "pid": int(get("pid") or 0),
        "state": get("state") or "idle",
        "queues": [q for q in get("queues").split(",") if q],
        "in_flight": int(get("in_flight") or 0),
        "done": int(get("done") or 0),
        "failed": int(get("failed") or 0),
        "concurrency": int(get("concurrency") or 0),
        "started_ms": started_ms,
        "heartbeat_age_s": round(max(0, now_ms - int(get("heartbeat_ms") or now_ms)) / 1000, 1),
        "uptime_s": round(max(0, now_ms - started_ms) / 1000, 1),
    }


def render(data: dict[str, Any], config_name: str) -> str:
    """The snapshot as an aligned text view for a terminal."""
    lines = [f"pool status  ·  Redis {data['redis']['version']} at {data['redis']['url']}", ""]
    lines[1:1] = [f"WARNING: {warning}" for warning in data.get("warnings", [])]
    columns = ("queued", "active", "delayed", "completed", "failed", "dead", "reclaimed")
    queue_rows = [["QUEUE", *(c.upper() for c in columns)]]
    for name, counts in data["queues"].items():
        queue_rows.append([name, *(str(counts[k]) for k in columns)])
    lines += [*_table(queue_rows, right_from=1), ""]
    if data.get("schedules"):
        rows = [["SCHEDULE", "WHEN", "HANDLER", "QUEUE", "LAST RUN", "NEXT RUN"]]
        for name, s in data["schedules"].items():
            rows.append([name, s["when"], s["handler"], s["queue"],
                         "never" if s["last_ms"] is None else clock.format_ms(s["last_ms"]),
                         clock.format_ms(s["next_ms"])])
        lines += [*_table(rows, right_from=6), ""]
    workers = data["workers"]
    if not workers:
        lines.append(f"no workers running: start them with `pool run {config_name}`")
        return "\n".join(lines)
    rows = [["WORKER", "HOST", "PID", "STATE", "IN FLIGHT", "DONE", "FAILED", "HEARTBEAT", "UPTIME"]]
    for w in workers:
        rows.append([
            w["id"], w["host"], str(w["pid"] or "?"), w["state"],
            _dash(w["in_flight"]) + (f"/{w['concurrency']}" if w["concurrency"] else ""),
            _dash(w["done"]), _dash(w["failed"]),
            "expired" if w["heartbeat_age_s"] is None else f"{w['heartbeat_age_s']:.1f}s ago",
            _duration(w["uptime_s"]),
        ])
    lines += _table(rows, right_from=4)
    return "\n".join(lines)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _table(rows: list[list[str]], right_from: int) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [cell.rjust(w) if i >= right_from else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=False))]
        out.append("  ".join(cells).rstrip())
    return out
