"""Cron and interval schedules: what pool.yaml's ``schedules:`` declare, and the time of each tick.

A tick is a point in time a schedule names (09:00 every weekday, every 30 s since the epoch), not
the moment it happens to run. Every supervisor computes the same ticks from the same YAML, so a
tick can be claimed exactly once in Redis (fire.lua) by its time, whoever gets there first.

Cron expressions are evaluated by cronsim (the evaluator behind healthchecks.io, tested against
cronie), in the schedule's time zone: DST gaps and repeats follow cron's rules instead of ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError


@dataclass(frozen=True)
class Schedule:
    """One entry of ``schedules:``.

    Attributes:
        name: the key in pool.yaml; names the job ids (``<name>@<tick_ms>``) and the Redis state.
        handler: dotted path of a registered handler.
        cron: a 5-field cron expression, or None when ``every_s`` is set.
        every_s: an interval in seconds; ticks are multiples of it since the epoch (UTC).
        timezone: IANA zone the cron expression is read in.
        queue: the queue its jobs go to (None: the pool's first queue; set by config).
        catch_up: after downtime, enqueue every missed tick (True) or skip them (False).
        grace_s: a tick overdue by less than this is still fired when catch_up is False, so a
            restart or a brief outage loses no tick.
    """

    name: str
    handler: str
    cron: str | None = None
    every_s: float | None = None
    timezone: str = "UTC"
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    catch_up: bool = False
    grace_s: float = 60.0
    timeout_s: float | None = None

    def next_tick_ms(self, after_ms: int) -> int:
        """The first tick strictly after ``after_ms`` (epoch milliseconds)."""
        if self.every_s is not None:
            every_ms = max(1, int(self.every_s * 1000))
            return (after_ms // every_ms + 1) * every_ms
        assert self.cron is not None
        after = datetime.fromtimestamp(after_ms / 1000, ZoneInfo(self.timezone))
        return int(next(CronSim(self.cron, after)).timestamp() * 1000)

    def first_due_ms(self, last_ms: int | None, now_ms: int) -> int:
        """The first tick to fire when starting at ``now_ms``, given the last tick fired (if any).

        A new schedule starts with its next tick. After downtime: every missed tick with
        ``catch_up``, else the missed ticks still within ``grace_s``.
        """
        if last_ms is None:
            return self.next_tick_ms(now_ms)
        tick = self.next_tick_ms(last_ms)
        if not self.catch_up:
            tick = max(tick, self.next_tick_ms(now_ms - int(self.grace_s * 1000) - 1))
        return tick

    def job_id(self, tick_ms: int) -> str:
        return f"{self.name}@{tick_ms}"

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron '{self.cron}' ({self.timezone})"
        return f"every {self.every_s:g}s"


def check_cron(expression: str) -> str:
    """The expression, if cronsim accepts it. Raises ValueError naming what is wrong."""
    try:
        CronSim(expression, datetime.now(UTC))
    except CronSimError as exc:
        raise ValueError(f"is not a cron expression ({exc}); use 5 fields: minute hour day month weekday") from None
    return expression


def check_timezone(name: str) -> str:
    """The zone name, if this machine knows it. Raises ValueError otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("is not a known IANA time zone such as 'UTC' or 'Europe/Berlin'") from None
    return name
