"""Fault tolerance with real processes: kills, Redis restarts, partitions, signals. Nothing lost.

Each test says Given / When / Then. Timing figures are asserted against the bounds the README
promises, with the test's short heartbeat settings (heartbeat_interval 200ms, ttl 2s).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis
import yaml

from pool import Client, JobSpec, Status
from pool.embedded import EmbeddedServer, free_port
from pool.keys import Keys
from pool.testing import process_alive, wait_until
from tests.conftest import pool_cli
from tests.faults import FaultProxy
from tests.process.conftest import live_workers


def key_prefix(config: Path) -> Keys:
    return Keys(yaml.safe_load(config.read_text())["key_prefix"])


def read_journal(path: Path) -> list[tuple[str, str, int, float]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        kind, key, pid, at = line.split()
        rows.append((kind, key, int(pid), float(at)))
    return rows


def assert_drained(server: redis.Redis, keys: Keys, queue: str = "default") -> None:
    """Nothing waiting, nothing held in any worker's landing list or running set."""
    assert server.llen(keys.queue(queue)) == 0
    leftovers = [*server.scan_iter(f"{keys.prefix}:{{{queue}}}:active:*"),
                 *server.scan_iter(f"{keys.prefix}:{{{queue}}}:running:*")]  # (deleted when empty)
    assert leftovers == [], f"jobs left in workers' lists: {leftovers}"


@pytest.fixture
def own_server(tmp_path):
    """A private, persistent (AOF) server this test may kill and restart on the same port."""
    server = EmbeddedServer(tmp_path / "redis", persist=True, port=free_port())
    server.start()
    yield server
    server.stop()


def test_job_of_a_sigkilled_worker_runs_again_within_a_second(write_config, start_pool, tmp_path):
    # Given one worker process running a long job
    config = write_config(processes=1, concurrency=2)
    pool = start_pool(config)
    wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    started, release = tmp_path / "started", tmp_path / "release"
    with Client.from_config(config) as client:
        job = client.enqueue("tests.sample_handlers.start_then_wait", str(started), str(release))
        first = int(wait_until(lambda: started.exists() and started.read_text().split(), timeout=10)[0])
        # When that worker is SIGKILLed mid-job
        killed_at = time.monotonic()
        os.kill(first, signal.SIGKILL)
        # Then the supervisor requeues the job and a fresh worker starts it within a second
        second = wait_until(lambda: len(started.read_text().split()) >= 2, timeout=10, interval=0.005)
        recovery = time.monotonic() - killed_at
        assert second and recovery < 1.0, f"job ran again after {recovery:.2f}s"
        release.write_text("go")
        assert client.result(job.id, timeout=15) != first
        stored = client.get_job(job.id)
        assert (stored.status, stored.attempts) == (Status.COMPLETED, 2)
    assert "was killed by SIGKILL" in pool.output()
    assert pool.stop() == 0


@pytest.mark.parametrize("supervisors", [1, 2])
def test_lost_host_jobs_are_reclaimed_once_after_the_heartbeat_ttl(write_config, start_pool, tmp_path, url, supervisors):
    # Given supervisor A (its own process group, as on another host) running 6 long jobs
    config = write_config(processes=2, concurrency=3, reclaim_interval="200ms")
    host_a = start_pool(config, "a.log", new_session=True)
    started, release = tmp_path / "started", tmp_path / "release"
    keys = key_prefix(config)
    server = redis.Redis.from_url(url)
    wait_until(live_workers(config, 2), timeout=30, message="host A's workers")
    with Client.from_config(config) as client:
        jobs = client.enqueue_many(
            JobSpec("tests.sample_handlers.start_then_wait", (str(started), str(release))) for _ in range(6))
        wait_until(lambda: started.exists() and len(started.read_text().split()) == 6, timeout=15)
        # When host A is lost: its supervisor and workers SIGKILLed at once
        host_a.kill_group()
        lost_at = time.monotonic()
        # and one or two other supervisors are running (racing to reclaim)
        others = [start_pool(config, f"other{n}.log") for n in range(supervisors)]
        # Then every job starts again elsewhere after the heartbeat TTL (2s) + one reclaim interval
        wait_until(lambda: len(started.read_text().split()) >= 12, timeout=30, interval=0.02)
        recovery = time.monotonic() - lost_at
        assert recovery < 2.0 + 0.2 + 3.0, f"reclaim took {recovery:.1f}s"
        release.write_text("go")
        for job in jobs:
            client.result(job.id, timeout=20)
        # exactly once: each job ran twice (once on A, once after the reclaim), never three times
        assert [client.get_job(j.id).attempts for j in jobs] == [2] * 6
        assert len(started.read_text().split()) == 12
    assert server.hget(keys.stats("default"), "reclaimed") == b"6"
    assert_drained(server, keys)
    assert [other.stop() for other in others] == [0] * supervisors


def test_redis_restart_mid_run_loses_nothing(write_config, start_pool, own_server, tmp_path):
    # Given a pool on a persistent (AOF always) Redis working through 2,000 jobs
    r = redis.Redis.from_url(own_server.url)
    r.config_set("appendfsync", "always")
    config = write_config(redis={"url": own_server.url}, processes=2, concurrency=8)
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    journal_file = tmp_path / "journal"
    with Client.from_config(config) as client:
        jobs = client.enqueue_many(
            JobSpec("tests.sample_handlers.journal", (str(journal_file), f"k{i}", 2)) for i in range(2000))
        wait_until(lambda: sum(1 for row in read_journal(journal_file) if row[0] == "end") > 600, timeout=30)
        # When Redis is SIGKILLed and comes back on the same port and data folder
        own_server.kill()
        own_server.start()
        back_at = time.monotonic()
        # Then the workers resume and every job completes
        ends_before = sum(1 for row in read_journal(journal_file) if row[0] == "end")
        wait_until(lambda: sum(1 for row in read_journal(journal_file) if row[0] == "end") > ends_before + 10,
                   timeout=10, interval=0.02)
        resumed = time.monotonic() - back_at
        results = [client.result(j.id, timeout=60) for j in jobs]
    assert results == [f"k{i}" for i in range(2000)]
    assert resumed < 3.0, f"claiming resumed {resumed:.1f}s after Redis came back"
    assert "reconnected to Redis" in pool.output()
    assert "was killed" not in pool.output() and "exited with code" not in pool.output(), "no worker died"
    assert_drained(redis.Redis.from_url(own_server.url), key_prefix(config))
    assert pool.stop() == 0


def test_network_blackhole_heals_without_loss(write_config, start_pool, server, url, tmp_path):
    # Given a pool that reaches Redis only through a proxy
    with FaultProxy(server.port) as proxy:
        config = write_config(redis={"url": proxy.url, "socket_timeout": "1s", "connect_timeout": "1s"},
                              processes=2, concurrency=4)
        pool = start_pool(config)
        wait_until(live_workers(config, 2), timeout=30, message="2 workers")
        journal_file = tmp_path / "journal"
        # (the test's own client talks to Redis directly)
        direct = write_config("direct.yaml", redis={"url": url})
        with Client.from_config(direct) as client:
            first = client.enqueue_many(
                JobSpec("tests.sample_handlers.journal", (str(journal_file), f"a{i}", 5)) for i in range(200))
            wait_until(lambda: len(read_journal(journal_file)) > 20, timeout=10)
            # When the network black-holes for 4 seconds while more jobs arrive
            proxy.blackhole()
            second = client.enqueue_many(
                JobSpec("tests.sample_handlers.journal", (str(journal_file), f"b{i}", 0)) for i in range(200))
            time.sleep(4)  # the length of the partition is the scenario under test
            proxy.heal()
            healed_at = time.monotonic()
            # Then blocked claims recover and every job completes
            results = [client.result(j.id, timeout=60) for j in first + second]
        assert results == [f"a{i}" for i in range(200)] + [f"b{i}" for i in range(200)]
        assert time.monotonic() - healed_at < 30
        assert "lost Redis" in pool.output() and "reconnected to Redis" in pool.output()
        # the supervisor was cut off too: it must not take the partition for dead workers
        assert "heartbeat expired" not in pool.output()
        assert pool.stop() == 0
    assert_drained(redis.Redis.from_url(url), key_prefix(config))


@pytest.mark.parametrize(("command", "shared_wait_from"), [(b"BLMOVE", 0), (b"BLPOP", 1)],
                         ids=["watcher", "shared-wait"])
def test_lost_claim_reply_is_recovered_without_waiting_for_a_heartbeat(write_config, start_pool, server, url,
                                                                       command, shared_wait_from):
    # Given an idle worker blocked in BLMOVE (or, in shared-wait mode, in the BLPOP on the ready
    # tokens) through a proxy, with a long heartbeat TTL (30s)
    with FaultProxy(server.port) as proxy:
        config = write_config(redis={"url": proxy.url}, processes=1, concurrency=2,
                              heartbeat_interval="1s", heartbeat_ttl="30s", shared_wait_from=shared_wait_from)
        pool = start_pool(config)
        wait_until(live_workers(config, 1), timeout=30, message="1 worker")
        direct = write_config("direct.yaml", redis={"url": url})
        with Client.from_config(direct) as client:
            # When the server moves a job into the worker's list (or pops the queue's ready token)
            # but the reply is lost on the way back
            proxy.drop_reply_of(command)
            time.sleep(2.5)  # let the worker's current BLMOVE (≤ 2 s) end, so the next one is armed
            job = client.enqueue("tests.sample_handlers.add", 20, 22)
            # Then the worker finds it in its own active list (or, its token lost, claims from every
            # queue once before blocking again) and runs it, long before 30s
            assert client.result(job.id, timeout=10) == 42
            assert client.get_job(job.id).attempts == 1
        assert proxy.dropped_replies == 1
        assert pool.stop() == 0


def test_enqueue_retried_after_a_lost_reply_creates_one_job(make_config, server, r):
    with FaultProxy(server.port) as proxy:
        config = make_config(redis={"url": proxy.url})
        with Client(config) as client:
            proxy.drop_reply_of(b"EVALSHA")
            job = client.enqueue("tests.sample_handlers.add", 1, 2)
        assert proxy.dropped_replies == 1
    keys = Keys(config.key_prefix)
    assert r.lrange(keys.queue("default"), 0, -1) == [job.id.encode()]


def test_sigterm_under_load_loses_nothing(write_config, start_pool, tmp_path, url):
    # Given 400 short jobs and 4 that outlive shutdown_timeout, all in flight or queued
    config = write_config(processes=2, concurrency=4, shutdown_timeout="500ms")
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    journal_file = tmp_path / "journal"
    with Client.from_config(config) as client:
        short = client.enqueue_many(
            JobSpec("tests.sample_handlers.journal", (str(journal_file), f"s{i}", 10)) for i in range(400))
        long = client.enqueue_many(JobSpec("tests.sample_handlers.async_sleep", (30,)) for _ in range(4))
        wait_until(lambda: len(read_journal(journal_file)) > 40, timeout=10)
        # When the pool gets SIGTERM
        assert pool.stop(signal.SIGTERM) == 0
        # Then every job is either completed or back in the queue; none is held anywhere
        records = [client.get_job(j.id) for j in short + long]
    statuses = {str(r.status) for r in records}
    assert statuses <= {"completed", "queued"}, statuses
    keys = key_prefix(config)
    server = redis.Redis.from_url(url)
    queued = {r.id for r in records if r.status is Status.QUEUED}
    assert {m.decode() for m in server.lrange(keys.queue("default"), 0, -1)} == queued
    assert {j.id for j in long} <= queued
    ends = [row for row in read_journal(journal_file) if row[0] == "end"]
    assert len(ends) == sum(1 for r in records if r.status is Status.COMPLETED) - 0
    # And a second run finishes the rest
    again = start_pool(config, "second.log")
    with Client.from_config(config) as client:
        assert [client.result(j.id, timeout=30) for j in short] == [f"s{i}" for i in range(400)]
    again.stop(signal.SIGINT)
    server.delete(keys.queue("default"))


def test_sighup_under_load_loses_nothing_and_runs_new_code(write_config, start_pool, tmp_path):
    # Given handlers in a module of our own, version 1
    module = tmp_path / "versioned.py"
    module.write_text("import time\ndef version(i):\n    time.sleep(0.005)\n    return 1\n")
    config = write_config(handlers=["versioned"], processes=2, concurrency=4)
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    with Client.from_config(config) as client:
        before = client.enqueue_many(JobSpec("versioned.version", (i,)) for i in range(600))
        wait_until(lambda: client.get_job(before[50].id).status is Status.COMPLETED, timeout=10)
        # When the code changes and the pool gets SIGHUP while jobs are running
        module.write_text("import time\ndef version(i):\n    time.sleep(0.005)\n    return 22\n")
        pool.proc.send_signal(signal.SIGHUP)
        pool.wait_for_log("reloading pool.yaml")
        pool.wait_for_log("exited", count=2, timeout=30)
        wait_until(live_workers(config, 2), timeout=30, message="2 new workers")
        after = client.enqueue_many(JobSpec("versioned.version", (i,)) for i in range(100))
        # Then nothing is lost and the new jobs ran the new code
        assert set(client.result(j.id, timeout=60) for j in before) <= {1, 22}
        assert [client.result(j.id, timeout=60) for j in after] == [22] * 100
    assert pool.stop() == 0


def test_poison_job_ends_in_the_dead_set_while_other_jobs_run(write_config, start_pool, tmp_path):
    # Given a job that SIGKILLs whichever worker runs it, among ordinary jobs
    config = write_config(processes=2, concurrency=2, max_deliveries=3)
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    with Client.from_config(config) as client:
        poison = client.enqueue("tests.sample_handlers.kill_own_process")
        others = client.enqueue_many(JobSpec("tests.sample_handlers.add", (i, i)) for i in range(300))
        # Then it is quarantined after 3 deliveries, with a clear reason, and the rest complete
        dead = client.wait(poison.id, timeout=30)
        assert [client.result(j.id, timeout=30) for j in others] == [2 * i for i in range(300)]
    assert dead.status is Status.DEAD
    assert dead.error.startswith("PoisonJob: delivered 3 times and its worker died each time")
    status = json.loads(pool_cli("status", str(config), "--json").stdout)
    assert status["queues"]["default"]["dead"] == 1
    assert "moved 1 job(s)" in pool.output() and "to the dead set" in pool.output()
    assert pool.stop() == 0


def test_frozen_event_loop_is_killed_and_replaced(write_config, start_pool):
    # Given an async handler that blocks its worker's event loop for a minute
    config = write_config(processes=1, concurrency=2, max_deliveries=1, heartbeat_ttl="1500ms")
    pool = start_pool(config)
    wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    with Client.from_config(config) as client:
        frozen = client.enqueue("tests.sample_handlers.freeze_event_loop", 60)
        # Then its supervisor kills the frozen worker (its loop stopped touching the alive file)
        pool.wait_for_log("has not run its event loop for", timeout=15)
        # the job is quarantined (max_deliveries 1) and a fresh worker serves other jobs
        assert client.wait(frozen.id, timeout=15).status is Status.DEAD
        job = client.enqueue("tests.sample_handlers.add", 1, 1)
        assert client.result(job.id, timeout=15) == 2
    assert pool.stop() == 0


def test_a_worker_that_freezes_while_a_reload_stops_it_is_killed_and_replaced(write_config, start_pool, tmp_path):
    # Given one worker running a job that freezes the event loop once the job is cancelled
    config = write_config(processes=1, max_deliveries=1, shutdown_timeout="1s", heartbeat_ttl="1500ms")
    pool = start_pool(config)
    wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    started = tmp_path / "started"
    with Client.from_config(config) as client:
        frozen = client.enqueue("tests.sample_handlers.freeze_when_cancelled", str(started))
        wait_until(started.exists, timeout=15, message="the job started")
        # When a reload SIGTERMs that worker: its drain cancels the job after shutdown_timeout,
        # and the cancelled job blocks the loop
        pool.proc.send_signal(signal.SIGHUP)
        pool.wait_for_log("reloading pool.yaml")
        # Then the supervisor SIGKILLs it once its alive file is stale for heartbeat_ttl
        pool.wait_for_log("has not run its event loop for", timeout=1.0 + 1.5 + 10)
        pool.wait_for_log("was killed by the supervisor (SIGKILL) after its event loop froze while running jobs")
        # its job counts that death (max_deliveries 1: quarantined), and a fresh worker serves
        assert client.wait(frozen.id, timeout=15).status is Status.DEAD
        job = client.enqueue("tests.sample_handlers.add", 1, 1)
        assert client.result(job.id, timeout=15) == 2
    assert pool.stop() == 0


def test_workers_stop_when_their_supervisor_is_killed(write_config, start_pool):
    # Given a supervisor with two workers
    config = write_config(processes=2)
    pool = start_pool(config)
    data = wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    pids = [w["pid"] for w in data["workers"]]
    # When the supervisor alone is SIGKILLed
    pool.kill()
    # Then its orphaned workers notice and exit by themselves
    wait_until(lambda: not any(process_alive(pid) for pid in pids), timeout=15, message="orphans to exit")
    assert "is gone; stopping" in pool.output()


def test_orphans_exit_even_when_redis_is_gone_too(write_config, start_pool, own_server):
    # Given a supervisor and its worker on a Redis that then goes away
    config = write_config(redis={"url": own_server.url}, processes=1, shutdown_timeout="1s", heartbeat_ttl="2s")
    pool = start_pool(config)
    [pid] = [w["pid"] for w in wait_until(live_workers(config, 1), timeout=30, message="1 worker")["workers"]]
    own_server.stop()
    # When the supervisor is SIGKILLed: the worker can neither requeue nor deregister
    pool.kill()
    # Then it still exits (after shutdown_timeout + heartbeat_ttl + 5 s), leaving its jobs to reclaim
    wait_until(lambda: not process_alive(pid), timeout=30, message="the orphan to exit")
    assert "orphaned and still unable to stop" in pool.output()


def test_redis_that_comes_back_empty_is_reported_loudly(write_config, start_pool, tmp_path):
    # Given a pool on a Redis without persistence
    server = EmbeddedServer(tmp_path / "volatile", persist=False, port=free_port())
    server.start()
    try:
        config = write_config(redis={"url": server.url}, processes=1, reclaim_interval="200ms")
        pool = start_pool(config)
        wait_until(live_workers(config, 1), timeout=30, message="1 worker")
        pool.wait_for_log("Redis", timeout=5)
        wait_until(lambda: redis.Redis.from_url(server.url).exists(key_prefix(config).marker()), timeout=10)
        # When it restarts empty
        server.kill()
        server.start()
        # Then the supervisor says so loudly, and so does pool status
        pool.wait_for_log("restarted without its data", timeout=20)
        status = json.loads(pool_cli("status", str(config), "--json").stdout)
        assert any("LOST ITS DATA" in w for w in status["warnings"])
        assert "WARNING: Redis LOST ITS DATA" in pool_cli("status", str(config)).stdout
        assert pool.stop() == 0
    finally:
        server.stop()


def test_embedded_redis_that_dies_is_restarted_with_its_data(tmp_path, start_pool):
    # Given the documented pool.yaml on its embedded server, with one job's result stored
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({"processes": 1, "handlers": ["examples.tasks"]}))
    pool = start_pool(config)
    wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    before = pool_cli("enqueue", str(config), "examples.tasks.add", "1", "2")
    server_pid = json.loads((tmp_path / ".pool" / "server.json").read_text())["pid"]
    # When valkey-server is SIGKILLed
    os.kill(server_pid, signal.SIGKILL)
    # Then the supervisor restarts it from its AOF and the pool carries on
    pool.wait_for_log("the embedded Redis was killed by SIGKILL (out of memory?); restarting it")
    after = pool_cli("enqueue", str(config), "examples.tasks.add", "2", "3", "--wait", "--wait-timeout", "20")
    assert after.stdout.strip() == "5", after.stderr
    assert json.loads(pool_cli("job", str(config), before.stdout.strip(), "--json").stdout)["result"] == 3
    assert pool.stop() == 0


def test_wrong_password_stops_pool_run_with_one_line(write_config, server, r):
    name = "u" + os.urandom(4).hex()
    r.acl_setuser(name, enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"])
    try:
        config = write_config(redis={"url": f"redis://{name}:wrong@127.0.0.1:{server.port}/0"})
        result = pool_cli("run", str(config), timeout=30)
        assert result.returncode == 3
        assert "invalid username-password pair" in result.stderr.strip().splitlines()[-1]
        assert "wrong" not in result.stderr.replace("wrong@", "").replace("WRONGPASS", "")
    finally:
        r.acl_deluser(name)


def test_workers_ignore_signals_meant_for_the_supervisor(write_config, start_pool):
    config = write_config(processes=1)
    pool = start_pool(config)
    data = wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    pid = data["workers"][0]["pid"]
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTTIN):
        os.kill(pid, signum)
    with Client.from_config(config) as client:
        assert client.result(client.enqueue("tests.sample_handlers.pid").id, timeout=10) == pid
    assert pool.stop() == 0


def test_supervisor_outlives_redis_errors_in_housekeeping(write_config, start_pool, server, r):
    """A user without SMEMBERS: reclaim fails every tick, is logged once, and jobs still run."""
    name, password = "u" + os.urandom(4).hex(), os.urandom(8).hex()
    r.acl_setuser(name, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-smembers"])
    try:
        config = write_config(redis={"url": f"redis://{name}:{password}@127.0.0.1:{server.port}/0"},
                              processes=1, reclaim_interval="100ms")
        pool = start_pool(config)
        pool.wait_for_log("housekeeping failed on Redis")
        with Client.from_config(config) as client:
            job = client.enqueue("tests.sample_handlers.add", 3, 4)
            assert client.result(job.id, timeout=15) == 7
        assert pool.output().count("housekeeping failed on Redis") == 1
        assert pool.stop() == 0
    finally:
        r.acl_deluser(name)


def test_recycled_workers_are_replaced_and_lose_nothing(write_config, start_pool):
    config = write_config(processes=2, concurrency=2, max_jobs_per_process=10)
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    with Client.from_config(config) as client:
        jobs = client.enqueue_many(JobSpec("tests.sample_handlers.add", (i, 1)) for i in range(100))
        assert [client.result(j.id, timeout=60) for j in jobs] == [i + 1 for i in range(100)]
    assert pool.output().count("recycled itself") >= 4
    assert "restarting in" not in pool.output()  # a recycle is no crash: no backoff
    assert pool.stop() == 0
