"""Tick arithmetic of schedules (pure functions: no Redis)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pool.config import from_mapping
from pool.errors import ConfigError
from pool.schedules import Schedule

BERLIN = ZoneInfo("Europe/Berlin")


def ms(*args: int, tz: ZoneInfo = BERLIN) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)


def test_interval_ticks_are_multiples_of_the_interval_since_the_epoch():
    every = Schedule("s", "m.f", every_s=30)
    assert every.next_tick_ms(0) == 30_000
    assert every.next_tick_ms(29_999) == 30_000
    assert every.next_tick_ms(30_000) == 60_000  # strictly after


def test_cron_ticks_follow_the_time_zone_and_its_daylight_saving_rules():
    daily = Schedule("s", "m.f", cron="30 2 * * *", timezone="Europe/Berlin")
    assert daily.next_tick_ms(ms(2026, 3, 27, 12, 0)) == ms(2026, 3, 28, 2, 30)
    # 02:30 does not exist on 29 March 2026 in Berlin (clocks jump 02:00 -> 03:00): cron runs it at 03:00.
    assert daily.next_tick_ms(ms(2026, 3, 28, 12, 0)) == ms(2026, 3, 29, 3, 0)
    utc = Schedule("s", "m.f", cron="0 9 * * 1-5")
    assert utc.next_tick_ms(ms(2026, 11, 27, 10, 0, tz=ZoneInfo("UTC"))) == ms(2026, 11, 30, 9, 0, tz=ZoneInfo("UTC"))


def test_a_new_schedule_starts_with_its_next_tick():
    assert Schedule("s", "m.f", every_s=10).first_due_ms(None, 25_000) == 30_000


def test_after_downtime_missed_ticks_are_caught_up_or_skipped_beyond_grace():
    catch_up = Schedule("s", "m.f", every_s=10, catch_up=True)
    skip = Schedule("s", "m.f", every_s=10, grace_s=15)
    last, now = 100_000, 200_000
    assert catch_up.first_due_ms(last, now) == 110_000  # every missed tick, oldest first
    assert skip.first_due_ms(last, now) == 190_000  # ticks overdue by more than 15 s are skipped
    assert skip.first_due_ms(195_000, 200_000) == 200_000  # nothing missed: the next one


@pytest.mark.parametrize(("entry", "message"), [
    ({"handler": "m.f"}, "needs exactly one of `cron:`"),
    ({"handler": "m.f", "cron": "* * * * *", "every": "1s"}, "needs exactly one of `cron:`"),
    ({"cron": "* * * * *"}, "needs `handler:`"),
    ({"handler": "m", "every": "1s"}, "must be the dotted path of a function"),
    ({"handler": "m.f", "cron": "61 * * * *"}, "is not a cron expression"),
    ({"handler": "m.f", "cron": "* * * * *", "timezone": "Atlantis/Capital"}, "is not a known IANA time zone"),
    ({"handler": "m.f", "every": "1s", "timezone": "UTC"}, "applies to `cron:` schedules only"),
    ({"handler": "m.f", "every": "1s", "args": "x"}, "must be a list of arguments"),
    ({"handler": "m.f", "every": "1s", "colour": "red"}, "unknown key"),
])
def test_bad_schedules_are_named_with_what_to_write(entry, message):
    with pytest.raises(ConfigError, match=message) as info:
        from_mapping({"schedules": {"nightly": entry}}, environ={})
    assert "schedules.nightly" in str(info.value)


def test_schedules_default_to_the_first_queue():
    config = from_mapping({"queues": ["high", "low"], "schedules": {"x": {"handler": "m.f", "every": "1m"}}},
                          environ={})
    assert config.schedules[0].queue == "high"


@pytest.mark.parametrize("free", [1, 2, 3, 7, 16])
def test_weighted_shares_follow_the_weights_whatever_the_free_slots(free):
    from pool.worker.fetcher import WeightedShares

    shares = WeightedShares({"a": 3, "b": 1})
    totals = {"a": 0, "b": 0}
    for _ in range(40):
        for queue, count in shares.split(["a", "b"], free):
            totals[queue] += count
    assert totals == {"a": 30 * free, "b": 10 * free}


def test_weighted_shares_interleave_one_slot_at_a_time():
    from pool.worker.fetcher import WeightedShares

    shares = WeightedShares({"a": 5, "b": 3, "c": 1})
    picks = "".join(shares.split(["a", "b", "c"], 1)[0][0] for _ in range(9))
    assert sorted(picks) == sorted("aaaaabbbc") and "aa" not in picks[:4]


def test_the_scheduling_example_config_is_valid():
    from pathlib import Path

    from pool.config import load

    config = load(Path(__file__).resolve().parents[2] / "examples" / "scheduling.yaml", environ={})
    assert config.queue_weights == {"critical": 5, "default": 3, "mail": 1}
    assert config.rate_limits == {"mail": (100, 60_000)}
    assert [s.name for s in config.schedules] == ["nightly-report", "ping"]
    assert config.schedules[0].queue == "critical" and config.schedules[1].queue == "critical"
