"""Scale-out on real servers: several hosts on one Redis, a 3-master Valkey Cluster, Sentinel.

Each test says Given / When / Then. "Hosts" are supervisors in their own process groups; the
Cluster and the Sentinel set are real valkey-server processes (tests/topologies.py).
"""

from __future__ import annotations

import collections
import json
import os
import signal
from pathlib import Path

import pytest
import redis
import redis.cluster

from pool import Client, JobSpec, Status
from pool.errors import RedisUnavailable
from pool.keys import Keys
from pool.testing import wait_until
from tests.conftest import pool_cli
from tests.process.conftest import PoolProcess, live_workers
from tests.process.test_faults import assert_drained, key_prefix, read_journal
from tests.topologies import Cluster, SentinelSet


def runs_per_job(journal: Path, what: str = "start") -> collections.Counter[str]:
    return collections.Counter(key for kind, key, _, _ in read_journal(journal) if kind == what)


def skewed_pool(config: Path, log: Path, skew_s: float) -> PoolProcess:
    """`pool run` in its own process group on a host whose wall clock is ``skew_s`` off."""
    code = ("import sys, time; real, real_ns = time.time, time.time_ns; "
            f"time.time = lambda: real() + {skew_s}; time.time_ns = lambda: real_ns() + {int(skew_s * 1e9)}; "
            "from pool.cli import main; sys.exit(main(sys.argv[1:]))")
    return PoolProcess(config, log, new_session=True, python=("-c", code))


# -- many hosts -------------------------------------------------------------------------------------


def test_two_hosts_ten_minutes_apart_share_a_queue_and_one_finishes_all_when_the_other_dies(
        write_config, start_pool, tmp_path, url):
    # Given two supervisors standing in for two hosts, B's clock 10 minutes ahead of A's
    config = write_config(processes=2, concurrency=4, reclaim_interval="200ms")
    keys = key_prefix(config)
    host_a = start_pool(config, "a.log", new_session=True)
    host_b = skewed_pool(config, tmp_path / "b.log", skew_s=600)
    try:
        wait_until(live_workers(config, 4), timeout=30, message="both hosts' workers")
        status = json.loads(pool_cli("status", str(config), "--json").stdout)
        assert status["pool"]["supervisors"] == 2
        journal = tmp_path / "journal"
        with Client.from_config(config) as client:
            jobs = client.enqueue_many(JobSpec("tests.sample_handlers.journal", (str(journal), f"j{i}", 20))
                                       for i in range(400))
            # When both hosts have been running jobs for longer than a heartbeat TTL (2s)
            pids = lambda: {pid for _, _, pid, _ in read_journal(journal)}  # noqa: E731
            wait_until(lambda: len(pids()) >= 4 and len(runs_per_job(journal, "end")) >= 150, timeout=30,
                       message="both hosts running jobs")
            server = redis.Redis.from_url(url)
            # (no false reclaim while both live, whatever their clocks say)
            assert server.hget(keys.stats("default"), "reclaimed") in (None, b"0")
            # and host A is lost: its supervisor and workers SIGKILLed at once
            host_a.kill_group()
            # Then host B finishes every job, A's unfinished ones after A's heartbeat expired
            results = [client.result(job.id, timeout=60) for job in jobs]
        assert results == [f"j{i}" for i in range(400)]
        starts, ends = runs_per_job(journal, "start"), runs_per_job(journal, "end")
        assert set(ends) == {f"j{i}" for i in range(400)}
        duplicates = {key for key, n in starts.items() if n > 1}
        # duplicates are exactly the jobs A held unacknowledged: running in its 8 slots, or done
        # with the ack in flight (a slot takes its next job while the last one's ack is sent)
        # Every duplicate was reclaimed; a reclaimed job need not be one: A may have claimed it and
        # died before its handler began (a loaded machine), so B ran it once.
        reclaimed = int(server.hget(keys.stats("default"), "reclaimed") or 0)
        assert len(duplicates) <= reclaimed <= 2 * 2 * 4, (duplicates, reclaimed)
        assert_drained(server, keys)
        assert host_b.stop() == 0
    finally:
        if host_b.proc.poll() is None:
            host_b.kill_group()


# -- Redis Cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    topology = Cluster(tmp_path_factory.mktemp("cluster"))
    yield topology
    topology.stop()


def queues_on_every_node(cluster: Cluster, prefix: str, per_node: int = 1) -> dict[str, int]:
    """Queue names whose hash tags land on each node of the cluster: {queue: port}."""
    chosen: dict[str, int] = {}
    counts: collections.Counter[int] = collections.Counter()
    for index in range(200):
        name = f"q{index}"
        port = cluster.node_of(Keys(prefix).queue(name)).port
        if counts[port] < per_node:
            chosen[name] = port
            counts[port] += 1
        if len(chosen) == per_node * len(cluster.nodes):
            return chosen
    raise AssertionError(f"no queue names found for every node: {chosen}")


def test_cluster_runs_queues_on_every_node_and_a_killed_worker_loses_nothing(write_config, start_pool, tmp_path,
                                                                              cluster, prefix):
    # Given a 3-master cluster and six queues, two on each node
    placement = queues_on_every_node(cluster, prefix, per_node=2)
    queues = list(placement)
    assert len(set(placement.values())) == 3
    config = write_config(redis={"url": cluster.url, "cluster": True}, queues=queues, processes=2,
                          concurrency=4)
    keys = key_prefix(config)
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="workers on the cluster")
    journal = tmp_path / "journal"
    with Client.from_config(config) as client:
        jobs = client.enqueue_many(
            JobSpec("tests.sample_handlers.journal", (str(journal), f"j{i}", 10), queue=queues[i % 6])
            for i in range(600))
        # When a worker process is SIGKILLed mid-run
        wait_until(lambda: len(runs_per_job(journal, "end")) >= 100, timeout=30, message="100 jobs done")
        victim = json.loads(pool_cli("status", str(config), "--json").stdout)["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        # Then every job completes, and each queue's keys live on the node its hash tag names
        results = [client.result(job.id, timeout=60) for job in jobs]
        assert results == [f"j{i}" for i in range(600)]
        stored = [client.get_job(job.id) for job in jobs[:12]]
    assert {job.status for job in stored} == {Status.COMPLETED}
    assert set(runs_per_job(journal, "end")) == {f"j{i}" for i in range(600)}
    for queue, port in placement.items():
        node = next(n for n in cluster.nodes if n.port == port)
        with node.client() as direct:  # a plain client: it would get MOVED from any other node
            assert int(direct.hget(keys.stats(queue), "completed") or 0) == 100
            assert direct.llen(keys.queue(queue)) == 0
            held = [*direct.scan_iter(f"{keys.prefix}:{{{queue}}}:active:*"),
                    *direct.scan_iter(f"{keys.prefix}:{{{queue}}}:running:*")]
            assert held == []  # (both are deleted when they empty)
    assert f"pid {victim['pid']} was killed by SIGKILL" in pool.output()
    ran_twice = [key for key, n in runs_per_job(journal).items() if n > 1]
    assert len(ran_twice) <= 2 * 4, ran_twice  # the victim's 4 slots, and acks it had in flight
    status = pool_cli("status", str(config))
    assert status.returncode == 0, status.stderr
    assert all(queue in status.stdout for queue in queues)
    assert pool.stop() == 0


def test_cluster_client_sees_one_slot_per_queue(cluster, make_config, prefix):
    # Given a cluster client of the pool
    config = make_config(redis={"url": cluster.url.replace("redis://", "redis+cluster://")})
    assert config.redis.cluster
    keys = Keys(prefix)
    # Then every key of one queue is in one slot, and the global keys need no other key
    with redis.cluster.RedisCluster.from_url(cluster.url) as client:
        slots = {client.keyslot(key) for key in (keys.queue("a"), keys.active("a", "h:1:x"),
                                                  keys.running("a", "h:1:x"), keys.job("a", "id"),
                                                  keys.delayed("a"), keys.dead("a"), keys.alive("a", "h:1:x"),
                                                  keys.queue_workers("a"), keys.schedule("a", "s"))}
        assert len(slots) == 1


# -- Sentinel ---------------------------------------------------------------------------------------


class Producer:
    """Enqueues journal jobs j0, j1, ... with fixed ids; an enqueue counts once acknowledged."""

    def __init__(self, client: Client, journal: Path) -> None:
        self.client, self.journal = client, journal
        self.acked: set[str] = set()
        self.refused = 0  # attempts that raised RedisUnavailable (NotReplicated included)

    def try_enqueue(self, index: int) -> bool:
        try:
            self.client.enqueue("tests.sample_handlers.journal", str(self.journal), f"j{index}", 5,
                                job_id=f"j{index}")
        except RedisUnavailable:
            self.refused += 1
            return False
        self.acked.add(f"j{index}")
        return True

    def enqueue(self, index: int, timeout: float = 60) -> None:
        """Retry until acknowledged: what a producer does that must not drop work."""
        wait_until(lambda: self.try_enqueue(index), timeout=timeout, interval=0.05, message=f"enqueue of j{index}")

    def settled(self) -> tuple[set[str]] | None:
        """Once every acknowledged job is completed or gone: (the ids that are gone,). None before."""
        jobs = {job_id: self.client.get_job(job_id) for job_id in self.acked}
        if any(job is not None and job.status is not Status.COMPLETED for job in jobs.values()):
            return None
        return ({job_id for job_id, job in jobs.items() if job is None},)


def cut_replication(sentinels: SentinelSet) -> tuple[list, object]:
    """Freeze the replicas and cut their links: the master alone takes what comes next."""
    old = sentinels.master()
    replicas = [node for node in sentinels.data if node is not old]
    for replica in replicas:
        os.kill(replica.process.pid, signal.SIGSTOP)
    with old.client() as direct:
        direct.execute_command("CLIENT", "KILL", "TYPE", "replica")  # (redis-py 5 knows only "slave")
    return replicas, old


@pytest.mark.parametrize("durability", ["fast", "replicated"])
def test_sentinel_failover_under_load(write_config, start_pool, tmp_path, durability):
    # Given a master, two replicas and three Sentinels, and a pool that finds the master through
    # them (two replicas: after the failover one is left for WAIT to count)
    sentinels = SentinelSet(tmp_path / "sentinel", replicas=2)
    try:
        config = write_config(redis={"sentinels": sentinels.addresses, "service_name": sentinels.service},
                              processes=2, concurrency=4, durability=durability, replication_timeout="300ms")
        pool = start_pool(config)
        wait_until(live_workers(config, 2), timeout=30, message="workers via Sentinel")
        journal = tmp_path / "journal"
        with Client.from_config(config) as client:
            producer = Producer(client, journal)
            for index in range(300):
                producer.enqueue(index)
            wait_until(lambda: len(runs_per_job(journal, "end")) >= 100, timeout=30, message="jobs running")
            # When the replicas stop receiving (links cut, replicas frozen so they cannot resync)
            replicas, old = cut_replication(sentinels)
            # and the master alone is sent a few enqueues
            if durability == "fast":  # it acknowledges them
                window = [f"j{i}" for i in range(300, 320) if producer.try_enqueue(i)]
                resume_at = 320
            else:  # no replica confirms within replication_timeout: refused (retried below)
                window = [f"j{i}" for i in range(300, 301) if producer.try_enqueue(i)]
                resume_at = 300
                # The master kept the refused j300, and a worker runs it: its ack's WAIT times out
                # too, and the worker says so (the ack stands on the master alone)
                pool.wait_for_log("no replica confirmed them", timeout=30)
            # and the master is SIGKILLed, the replicas resume, and the Sentinels promote one
            old.kill()
            for replica in replicas:
                os.kill(replica.process.pid, signal.SIGCONT)
            # and the producer goes on, retrying each enqueue until acknowledged
            for index in range(resume_at, 600):
                producer.enqueue(index)
            assert sentinels.master_port() != old.port
            # Then the pool carries on: every job acknowledged after the failover runs, and every
            # acknowledged job ends completed, or lost with its record
            wait_until(lambda: {f"j{i}" for i in range(resume_at, 600)} <= set(runs_per_job(journal, "end")),
                       timeout=60, message="jobs enqueued after the failover done")
            [missing] = wait_until(producer.settled, timeout=60, message="every acknowledged job completed or gone")
        ends, starts = runs_per_job(journal, "end"), runs_per_job(journal, "start")
        never_ran = {job_id for job_id in producer.acked if job_id not in ends}
        duplicates = {key for key, n in starts.items() if n > 1}
        print(f"durability={durability}: acknowledged {len(producer.acked)}, records lost {len(missing)}, never "
              f"ran {len(never_ran)}, ran twice {len(duplicates)}, enqueue attempts refused {producer.refused}, "
              f"acknowledged while the replicas were cut off {len(window)}")
        if durability == "fast":
            # What asynchronous replication loses: exactly the enqueues the master acknowledged
            # while its replicas were cut off. Jobs that never ran are among them.
            assert missing == set(window) and window, (missing, window)
            assert never_ran <= set(window)
        else:
            # WAIT held every acknowledgement until a replica had it: nothing lost
            assert window == []
            assert (missing, never_ran) == (set(), set())
            assert len(producer.acked) == 600
        # Duplicates come from claims and acks the old master took but never passed on (while its
        # replicas were cut off, or lagging just before): only jobs that were on the old master
        # before the cut run twice, those claimed there (their handler may start a little after
        # the kill: a process holds claimed jobs until a slot is free, and a loaded machine widens
        # that); no job enqueued after the failover runs twice
        # (replicated: the refused j300 also ran on the old master, as awaited above, and runs again
        # once its retried enqueue reaches the new one)
        cut_at = int(window[0][1:]) if window else resume_at + 1
        assert all(int(key[1:]) < cut_at for key in duplicates), duplicates
        assert len(duplicates) < len(producer.acked) // 2, duplicates
        assert pool.stop() == 0
    finally:
        sentinels.stop()
