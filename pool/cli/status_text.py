"""`pool status` for a terminal: the snapshot of status.py as aligned tables an operator reads at
a glance. The verdict comes first (up, degraded, down, and why), then queues, schedules, and the
workers grouped by host and supervisor.

Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pool import clock

_COLOURS = {"green": "32", "yellow": "33", "red": "31", "bold": "1", "dim": "2"}
_STATE_COLOURS = {"up": "green", "degraded": "yellow", "down": "red", "lost": "red",
                  "crash-looping": "red", "stopping": "yellow", "busy": "green"}


def render(data: dict[str, Any], config_name: str, colour: bool = False) -> str:
    """The snapshot as text; ``colour`` adds ANSI colours (for a terminal)."""
    paint = _painter(colour)
    at = clock.format_ms(data["time_ms"])
    lines = [paint("bold", f"pool status · Redis {data['redis']['version']} at {data['redis']['url']} · {at}")]
    lines += [paint("red", f"WARNING: {warning}") for warning in data.get("warnings", [])]
    lines += _verdict(data["pool"], config_name, paint)
    lines += ["", *_queues(data["queues"])]
    if data.get("schedules"):
        lines += ["", *_schedules(data["schedules"])]
    lines += _hosts(data["supervisors"], data["workers"], paint)
    return "\n".join(lines)


def _verdict(pool: dict[str, Any], config_name: str, paint: Any) -> list[str]:
    state = pool["state"]
    if state == "down":
        return [paint("red", "POOL DOWN · no supervisor or worker has a heartbeat in Redis"),
                f"  start it with `pool run {config_name}`"]
    expected = pool["workers_expected"]
    workers = f"{pool['workers']}/{expected} workers" if expected is not None else f"{pool['workers']} workers"
    head = (f"POOL {state.upper()} · {_plural(pool['hosts'], 'host')} · "
            f"{_plural(pool['supervisors'], 'supervisor')} · {workers}")
    return [paint(_STATE_COLOURS[state], head), *(paint("yellow", f"  ! {p}") for p in pool["problems"])]


def _queues(queues: dict[str, Any]) -> list[str]:
    rows = [["QUEUE", "QUEUED", "ACTIVE", "DELAYED", "DEAD", "OLDEST", "DONE/1M", "FAILED/1M", "JOBS/S",
             "DONE/1H", "FAILED/1H"]]
    for name, q in queues.items():
        rows.append([
            name, _n(q["queued"]), _n(q["active"]), _n(q["delayed"]), _n(q["dead"]),
            clock.describe_s(q["oldest_wait_s"]), _n(q["last_minute"]["completed"]),
            _n(q["last_minute"]["failed"]), f"{q['jobs_per_s']:,.1f}", _n(q["last_hour"]["completed"]),
            _n(q["last_hour"]["failed"]),
        ])
    return _table(rows, right_from=1)


def _schedules(schedules: dict[str, Any]) -> list[str]:
    rows = [["SCHEDULE", "WHEN", "HANDLER", "QUEUE", "LAST RUN", "NEXT RUN"]]
    for name, s in schedules.items():
        rows.append([name, s["when"], s["handler"], s["queue"] or "",
                     "never" if s["last_ms"] is None else clock.format_ms(s["last_ms"]),
                     clock.format_ms(s["next_ms"])])
    return _table(rows, right_from=6)


def _hosts(supervisors: list[dict[str, Any]], workers: list[dict[str, Any]], paint: Any) -> list[str]:
    """One block per supervisor (host first), then workers no live supervisor lists."""
    lines: list[str] = []
    listed: set[str] = set()
    for s in sorted(supervisors, key=lambda s: (s["host"], s["pid"] or 0)):
        mine = [w for w in workers if w["supervisor"] == s["id"]]
        listed.update(w["id"] for w in mine)
        if s["state"] == "lost":
            head = f"HOST {s['host']} · supervisor pid {s['pid']} · " + paint("red", "lost (no heartbeat)")
        else:
            alive = sum(1 for w in mine if w["state"] != "lost")
            head = (f"HOST {s['host']} · supervisor pid {s['pid']} · "
                    f"{paint(_STATE_COLOURS.get(s['state'], 'green'), s['state'])} · "
                    f"up {clock.describe_s(s['uptime_s'])} · {alive}/{s['processes']} workers · "
                    f"{_plural(s['restarts'], 'restart')}" + (f" · metrics {s['metrics']}" if s["metrics"] else ""))
        lines += ["", paint("bold", head), *_workers(mine, paint)]
    others = [w for w in workers if w["id"] not in listed]
    for host in sorted({w["host"] for w in others}):
        lines += ["", paint("bold", f"HOST {host} · no live supervisor lists these workers"),
                  *_workers([w for w in others if w["host"] == host], paint)]
    return lines


def _workers(workers: Iterable[dict[str, Any]], paint: Any) -> list[str]:
    rows = [["WORKER", "PID", "STATE", "IN FLIGHT", "DONE", "FAILED", "MEMORY", "HEARTBEAT", "UPTIME"]]
    colours = []
    for w in sorted(workers, key=lambda w: (w["name"] or "~", w["id"])):
        in_flight = _n(w["in_flight"]) + (f"/{w['concurrency']}" if w["concurrency"] else "")
        rows.append([
            w["name"] or w["id"], str(w["pid"] or "?"), w["state"], in_flight, _n(w["done"]), _n(w["failed"]),
            _bytes(w["memory_bytes"]),
            "expired" if w["heartbeat_age_s"] is None else f"{clock.describe_s(w['heartbeat_age_s'])} ago",
            clock.describe_s(w["uptime_s"]),
        ])
        colours.append(_STATE_COLOURS.get(w["state"]))
    if len(rows) == 1:
        return ["  (no worker registered yet)"]
    table = _table(rows, right_from=3)
    return ["  " + table[0], *("  " + paint(c, line) if c else "  " + line for c, line in zip(colours, table[1:],
                                                                                          strict=True))]


def _painter(colour: bool) -> Any:
    def paint(name: str | None, text: str) -> str:
        if not colour or name is None:
            return text
        return f"\x1b[{_COLOURS[name]}m{text}\x1b[0m"
    return paint


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _plural(count: int | None, noun: str) -> str:
    return f"{count or 0} {noun}" + ("" if count == 1 else "s")


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    if value >= 10 * 2**30:
        return f"{value / 2**30:.0f} GiB"
    if value >= 2**30:
        return f"{value / 2**30:.1f} GiB"
    return f"{value / 2**20:.0f} MiB"


def _table(rows: list[list[str]], right_from: int) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [cell.rjust(w) if i >= right_from else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return out
