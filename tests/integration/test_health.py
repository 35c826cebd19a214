"""`pool health` and ``/healthz`` judge this host from its own records only: their answer and
their cost do not depend on the rest of the fleet, on the queues or on their tallies."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import redis

from pool import health, status
from pool.connection import sync_client
from pool.keys import Keys
from tests.fleet import write_fleet, write_supervisor

HOST = "web-1"
OURS = f"{HOST}:100:sup"
WORKERS = [f"{HOST}:101:wa", f"{HOST}:102:wb"]

# A server busy in a script for ARGV[1] µs of its CPU (os.clock: TIME is frozen inside a script)
BUSY_LOOP = """
local until_s = os.clock() + tonumber(ARGV[1]) / 1000000
while os.clock() < until_s do end
return 1
"""


@pytest.fixture
def keys(prefix: str, r: redis.Redis) -> Iterator[Keys]:
    yield Keys(prefix)
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):  # the fleets are large: keep the server small
        r.unlink(key)


@pytest.fixture
def config(make_config):
    return make_config(heartbeat_interval="500ms", heartbeat_ttl="2s", queues=[f"q{n}" for n in range(50)])


def _judge(client: redis.Redis, config, url: str, supervisor_id: str | None = None) -> tuple[health.Health, int]:
    """The verdict, and how many commands the server ran for it (its tot-cmds on this connection)."""
    before = _client_info(client)
    verdict = health.check(client, config, url, HOST, supervisor_id)
    after = _client_info(client)
    assert after["id"] == before["id"], "the check must run on the one connection measured"
    return verdict, int(after["tot-cmds"]) - int(before["tot-cmds"]) - 1  # less the CLIENT INFO itself


def _client_info(client: redis.Redis) -> dict[str, str]:
    line = client.execute_command("CLIENT", "INFO")
    return dict(field.split("=", 1) for field in (line.decode() if isinstance(line, bytes) else line).split())


@pytest.mark.parametrize("supervisor_id", [None, OURS], ids=["pool-health", "healthz"])
def test_health_costs_the_same_commands_beside_10_or_2000_other_workers_and_busy_queues(
        r, keys, config, url, supervisor_id):
    """Beside 10 other workers, then 2,000 and 50 queues with an hour of tallies, the verdict and
    the number of commands it costs stay the same: only this host's records are read."""
    write_supervisor(r, keys, OURS, WORKERS)
    client = redis.Redis.from_url(url)
    try:
        write_fleet(r, keys, hosts=10, workers_per_host=1, queues=["q0"])
        small, small_commands = _judge(client, config, url, supervisor_id)
        write_fleet(r, keys, hosts=200, workers_per_host=10, queues=config.queues)
        write_supervisor(r, keys, OURS, WORKERS)  # fresh heartbeats again, however long the writing took
        large, large_commands = _judge(client, config, url, supervisor_id)
    finally:
        client.close()
    assert small == large == health.Health(True, f"host {HOST}: supervisor pid 100 running, 2/2 workers; Redis answers")
    assert small_commands == large_commands == (3 if supervisor_id else 4)  # (SMEMBERS,) its hash, 2 workers
    assert len(status.snapshot(r, config, url)["workers"]) == 2 + 2000  # the fleet is really there (the small one is part of it)


def test_health_reports_this_hosts_problems_and_ignores_every_other_hosts(r, keys, config, url):
    """Each of this host's faults gives today's message; other hosts' lost, stopping and
    silent workers change nothing."""
    write_fleet(r, keys, hosts=20, workers_per_host=2, queues=["q0"])
    write_supervisor(r, keys, "web-2:7:bad", ["web-2:8:gone"], processes=3, state="stopping", heartbeat_age_s=1)
    client = redis.Redis.from_url(url)
    try:
        absent = health.check(client, config, url, HOST)
        assert absent == health.Health(False, f"no supervisor is running on host {HOST} "
                                              "(start one with `pool run pool.yaml`)")
        assert health.check(client, config, url, HOST, OURS) == \
            health.Health(False, "this supervisor has no heartbeat in Redis")
        write_supervisor(r, keys, OURS, WORKERS, processes=3, worker_ages_s={WORKERS[1]: 10})
        assert health.check(client, config, url, HOST).message == (
            f"host {HOST}: supervisor pid 100: 2 of 3 workers running; "
            "supervisor pid 100: worker-2 pid 102 last heartbeat 10s ago")
        r.delete(keys.worker(WORKERS[1]))  # its hash expired: lost, not running
        assert health.check(client, config, url, HOST, OURS).message == \
            f"host {HOST}: supervisor pid 100: 1 of 3 workers running"
        write_supervisor(r, keys, OURS, WORKERS, state="crash-looping")
        assert health.check(client, config, url, HOST).message == f"host {HOST}: supervisor pid 100 is crash-looping"
        write_supervisor(r, keys, OURS, WORKERS)
        assert health.check(client, config, url, HOST, "web-2:7:bad").healthy is False  # another host's id
        assert health.check(client, config, url, "web-2").message == "host web-2: supervisor pid 7 is stopping"
        assert health.check(client, config, url, HOST).healthy
    finally:
        client.close()


def test_health_answers_with_the_right_verdict_while_redis_is_busy_for_half_a_second(
        r, keys, config, url):
    """A server busy in a script for 0.5 s delays the probe, which still answers in time and right."""
    write_supervisor(r, keys, OURS, WORKERS, worker_ages_s={WORKERS[0]: 30})
    client = sync_client(config, url)  # the probes' own client and timeouts (5 s: README, Health checks)
    busy = redis.Redis.from_url(url)
    try:
        client.ping()
        connection = busy.connection_pool.make_connection()  # (get_connection's signature differs across redis-py)
        started = time.monotonic()
        connection.send_command("EVAL", BUSY_LOOP, 0, 500_000)  # runs while the probe asks
        verdict = health.check(client, config, url, HOST, OURS)
        elapsed_s = time.monotonic() - started
        assert connection.read_response() == 1
        connection.disconnect()
    finally:
        client.close()
        busy.close()
    assert not verdict.healthy
    assert re.fullmatch(f"host {HOST}: supervisor pid 100: worker-1 pid 101 last heartbeat 3[01]s ago", verdict.message)
    assert 0.4 <= elapsed_s < config.redis.socket_timeout_s, elapsed_s  # it waited for the server, and no longer


def test_pool_health_says_in_one_line_that_redis_is_unreachable_when_busier_than_its_timeout(
        r, keys, write_config, url):
    """Busier than ``redis.socket_timeout``: one line on stderr and exit 3, as for a server that is down."""
    from tests.conftest import pool_cli

    config = write_config(redis={"url": url, "socket_timeout": "200ms"})
    busy = redis.Redis.from_url(url)
    try:
        connection = busy.connection_pool.make_connection()  # (get_connection's signature differs across redis-py)
        connection.send_command("EVAL", BUSY_LOOP, 0, 3_000_000)
        probe = pool_cli("health", str(config))
        assert connection.read_response() == 1
        connection.disconnect()
    finally:
        busy.close()
    assert probe.returncode == 3, probe.stderr
    assert probe.stderr.startswith("unhealthy: cannot reach Redis") and probe.stderr.count("\n") == 1, probe.stderr
