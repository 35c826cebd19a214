"""Outage pacing and logging: a retry waits out its backoff unless another path of the process gets
through; refusals are told from bugs; short outages are counted, not logged each."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis

from pool import connection
from pool.connection import Outage, describe_error, is_refusal, is_transient
from pool.testing import async_wait_until


async def waiting_retry(outage: Outage) -> asyncio.Task[None]:
    """A retry task, once it waits on the outage's wake-up."""
    task = asyncio.create_task(outage.retry_after(ConnectionError("gone")))

    async def waits() -> bool:
        return outage._ended is not None and not task.done()

    await async_wait_until(waits, timeout=5, message="the retry waiting")
    return task


async def test_a_retry_wakes_when_another_path_reconnects(monkeypatch):
    monkeypatch.setattr("pool.connection.backoff_s", lambda attempt: 30.0)
    outage = Outage("worker w", "redis://localhost")
    waiting = await waiting_retry(outage)
    assert outage.is_ongoing
    outage.recovered()  # say, the fetcher's claim went through
    await asyncio.wait_for(waiting, 5)  # not the 30 s backoff
    assert not outage.is_ongoing


async def test_a_retry_is_not_woken_while_redis_stays_down(monkeypatch):
    monkeypatch.setattr("pool.connection.backoff_s", lambda attempt: 30.0)
    outage = Outage("worker w", "redis://localhost")
    waiting = await waiting_retry(outage)
    wake_up = outage._ended
    for _ in range(20):  # other paths keep failing: nothing sets the wake-up
        outage.failed(ConnectionError("still gone"))
    assert wake_up is not None and not wake_up.is_set() and not waiting.done()
    outage.recovered()
    await asyncio.wait_for(waiting, 5)
    # a later outage waits on a fresh wake-up, not the one the last outage set
    second = await waiting_retry(outage)
    assert outage._ended is not wake_up and not outage._ended.is_set()
    outage.recovered()
    await asyncio.wait_for(second, 5)


# -- refusals and log damping ------------------------------------------------------------------------

OOM_IN_SCRIPT = redis.exceptions.OutOfMemoryError(
    "command not allowed when used memory > 'maxmemory'. script: cb9da4a01a9a246d841b9008dcbbfb80a1b9b4e0, "
    "on @user_script:29.")
BUSY_IN_PIPELINE = redis.exceptions.ResponseError(
    "Command # 1 (HSET pool:supervisor:h:1:a heartbeat_ms 1734000000123) of pipeline caused error: BUSY Valkey "
    "is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.")
MISCONF = redis.exceptions.ResponseError(
    "MISCONF Valkey is configured to save RDB snapshots, but it's currently unable to persist to disk. Commands "
    "that may modify the data set are disabled.")
OOM_ON_REDIS_62 = redis.exceptions.ResponseError(
    "Error running script (call to f_cb9d): @user_script:29: @user_script: 29: -OOM command not allowed when "
    "used memory > 'maxmemory'.")


@pytest.mark.parametrize("exc", [OOM_IN_SCRIPT, BUSY_IN_PIPELINE, MISCONF, OOM_ON_REDIS_62,
                                 redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
                                 redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory")])
def test_server_refusals_are_waited_out(exc):
    assert is_refusal(exc) and is_transient(exc)


@pytest.mark.parametrize("exc", [
    redis.exceptions.ResponseError("user_script:12: Script attempted to access nonexistent global variable 'x' "
                                   "script: cb9da4a01a9a246d841b9008dcbbfb80a1b9b4e0, on @user_script:12."),
    redis.exceptions.ResponseError("BUSYKEY Target key name already exists."),
    redis.exceptions.NoPermissionError("this user has no permissions to run the 'smembers' command"),
    redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
])
def test_a_bug_of_our_own_is_no_refusal(exc):
    """A Lua error of pool's own scripts, a wrong type, a missing permission: loud, never waited out."""
    assert not is_refusal(exc) and not is_transient(exc)


def test_messages_lose_the_scripts_sha_and_the_pipelines_quote_of_the_command():
    assert describe_error(OOM_IN_SCRIPT) == "OOM command not allowed when used memory > 'maxmemory'."
    assert describe_error(BUSY_IN_PIPELINE).startswith("BUSY Valkey is busy running a script.")
    assert "1734000000123" not in describe_error(BUSY_IN_PIPELINE)


def test_blips_are_counted_not_logged_each(monkeypatch, caplog):
    """Hundreds of connection resets that each heal at once make one line, then one a minute."""
    now = [1000.0]
    monkeypatch.setattr(connection.time, "monotonic", lambda: now[0])
    outage = Outage("worker w", "redis://localhost")
    with caplog.at_level(logging.WARNING, logger="pool.connection"):
        for _ in range(400):
            outage.failed(ConnectionResetError("Connection reset by peer"), "claim")
            now[0] += 0.01
            outage.recovered("claim")
        assert len(caplog.records) == 1
        assert "Connection reset by peer" in caplog.records[0].getMessage()
        now[0] += connection.BLIP_REPORT_S
        outage.failed(ConnectionResetError("Connection reset by peer"))
        outage.recovered("ack")
    assert len(caplog.records) == 2
    assert "400 blips" in caplog.records[1].getMessage()


def test_a_long_refusal_is_logged_once_at_its_start_and_once_at_its_end(monkeypatch, caplog):
    now = [1000.0]
    monkeypatch.setattr(connection.time, "monotonic", lambda: now[0])
    outage = Outage("supervisor", "redis://localhost")
    with caplog.at_level(logging.WARNING, logger="pool.connection"):
        for _ in range(60):  # 45 s of OOM, failing every 0.75 s
            outage.failed(OOM_IN_SCRIPT, "heartbeat")
            outage.recovered("claim")  # claims still pass under OOM: they do not end the heartbeat's refusal
            now[0] += 0.75
        outage.recovered("heartbeat")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "refuses commands (OOM command not allowed when used memory > 'maxmemory'.)" in lines[0]
    assert "accepts commands again after 45.0s" in lines[1]


def test_a_refusal_is_an_answer_so_the_connection_is_back(monkeypatch):
    outage = Outage("worker w", "redis://localhost")
    outage.failed(ConnectionError("gone"))
    assert outage.is_cut_off
    outage.failed(MISCONF, "heartbeat")
    assert not outage.is_cut_off and outage.is_ongoing
    assert outage.recovered("heartbeat") and not outage.is_ongoing


def test_housekeeping_reports_a_repeated_error_once_whatever_the_timestamp_it_quotes(caplog, tmp_path):
    """redis-py's pipeline error quotes the command, heartbeat_ms included: not part of what is compared."""
    from pool.config import from_mapping
    from pool.supervisor.housekeeping import Housekeeper

    config = from_mapping({"redis": {"url": "redis://127.0.0.1:1/0"}, "handlers": ["tests.sample_handlers"]},
                          tmp_path / "pool.yaml",
                          environ={})
    keeper = Housekeeper(config, "redis://127.0.0.1:1/0")
    with caplog.at_level(logging.ERROR, logger="pool.housekeeping"):
        for stamp in range(60):
            keeper._report_error(redis.exceptions.NoPermissionError(
                f"Command # 1 (HSET p:supervisor:h:1:a heartbeat_ms {1734000000000 + stamp}) of pipeline caused "
                "error: this user has no permissions to run the 'hset' command"))
    assert len(caplog.records) == 1
    assert "heartbeat_ms" not in caplog.records[0].getMessage()
