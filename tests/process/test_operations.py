"""What operators and Prometheus see of a running `pool run`: /metrics, /healthz, `pool health`,
and `pool status` against a stopped pool and an unreachable Redis."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import defaultdict

import yaml
from prometheus_client.parser import text_string_to_metric_families

from pool import Client, JobSpec
from pool.embedded import EmbeddedServer, free_port
from pool.testing import wait_until
from tests.conftest import cli_env, pool_cli
from tests.process.conftest import live_workers


def scrape(address: str, gzipped: bool = False) -> dict[str, float]:
    """Every sample of /metrics, summed over its labels, by sample name; ``gzipped``: ask for
    gzip as Prometheus does, and check that the answer is gzip."""
    request = urllib.request.Request(f"http://{address}/metrics",
                                     headers={"Accept-Encoding": "gzip"} if gzipped else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
        body = response.read()
    text = (gzip.decompress(body) if gzipped else body).decode()
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] += sample.value
    return totals


def get(address: str, path: str) -> tuple[int, str]:
    """Status and body; (0, reason) while nothing answers on the port yet."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError) as exc:
        return 0, str(exc)


def status_json(config) -> dict:
    result = pool_cli("status", str(config), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def metrics_address(config) -> str:
    """The metrics address the supervisor announced (port 0: a free one), once it has."""
    def announced() -> str | None:
        supervisors = status_json(config)["supervisors"]
        return supervisors[0]["metrics"] if supervisors else None
    return wait_until(announced, timeout=30, message="the metrics address in pool status")


def test_metrics_sum_a_known_mix_over_every_process(write_config, start_pool, tmp_path):
    config = write_config(processes=2, concurrency=3, metrics={"port": 0, "host": "127.0.0.1"},
                          retries={"backoff": "50ms", "backoff_max": "50ms"})
    pool = start_pool(config)
    data = wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    address = metrics_address(config)
    # Given a known mix: 24 successes, 5 jobs that die, 3 that fail once and then succeed
    specs = [JobSpec("tests.sample_handlers.async_sleep", (0.05,)) for _ in range(24)]
    specs += [JobSpec("tests.sample_handlers.explode", (f"boom {i}",)) for i in range(5)]
    specs += [JobSpec("tests.sample_handlers.flaky", (str(tmp_path / f"n{i}"), 1), max_retries=1) for i in range(3)]
    with Client.from_config(config) as client:
        for job in client.enqueue_many(specs):
            client.wait(job.id, timeout=30)
    # Both processes ran some of them, so the exporter has to add them up
    data = wait_until(lambda: (d := status_json(config)) and sum(w["done"] + w["failed"] for w in d["workers"]) == 35
                      and d, timeout=10, message="heartbeats with every job counted")
    assert all(w["done"] > 0 for w in data["workers"]), data["workers"]

    # When Prometheus scrapes the supervisor (once its ≤ 1 s loop has counted both workers booted)
    metrics = wait_until(lambda: (m := scrape(address))["workers_alive"] == 2 and m, timeout=10,
                         message="workers_alive 2")

    # Then it reads exactly that mix, summed over both worker processes
    assert metrics["job_success_total"] == 24 + 3
    assert metrics["job_failure_total"] == 5 + 3
    assert metrics["job_retries_total"] == 3
    assert metrics["job_dead_total"] == 5
    assert metrics["job_duration_seconds_count"] == 35
    assert metrics["job_queue_wait_seconds_count"] == 35
    assert metrics["jobs_in_flight"] == 0
    assert metrics["workers_configured"] == 2
    assert metrics["job_queue_length"] == 0 and metrics["job_dead_length"] == 5
    assert metrics["pool_redis_up"] == 1 and "redis_up" not in metrics  # redis_exporter's name
    code, text = get(address, "/healthz")
    assert code == 200 and text.startswith("ok: host ")

    # And a worker killed with SIGKILL while running a job takes none of its counts with it
    started, release = tmp_path / "started", tmp_path / "release"
    with Client.from_config(config) as client:
        job = client.enqueue("tests.sample_handlers.start_then_wait", str(started), str(release))
        victim = int(wait_until(lambda: started.exists() and started.read_text().split(), timeout=10,
                                message="the job to start")[0])
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(started.read_text().split()) == 2, timeout=20, message="the job to run again")
        release.touch()
        client.wait(job.id, timeout=20)
    wait_until(lambda: (d := status_json(config))["supervisors"][0]["restarts"] == 1 and d["pool"]["state"] == "up",
               timeout=20, message="the worker replaced")
    after = wait_until(lambda: (m := scrape(address))["workers_alive"] == 2 and m, timeout=10,
                       message="workers_alive back to 2")
    assert after["job_success_total"] == 28 and after["job_failure_total"] == 8
    assert after["job_reclaimed_total"] == 1 and after["worker_restarts_total"] == 1
    assert after["jobs_in_flight"] == 0  # the killed worker's gauge went with it

    healthy = pool_cli("health", str(config))
    assert healthy.returncode == 0 and healthy.stdout.startswith("healthy: host "), healthy.stderr
    elsewhere = pool_cli("health", str(config), "--host", "no-such-host")
    assert elsewhere.returncode == 1 and "no supervisor is running on host no-such-host" in elsewhere.stderr

    # The dead jobs are listed, a page at a time, and one shows its whole story
    page = pool_cli("jobs", str(config), "--status", "dead", "--limit", "3")
    assert page.returncode == 0 and "dead jobs in queue default: 1-3 of 5" in page.stdout, page.stderr
    assert "--status dead --offset 3 --limit 3" in page.stdout
    listed = json.loads(pool_cli("jobs", str(config), "--status", "dead", "--json").stdout)
    assert (listed["total"], listed["next_offset"], len(listed["jobs"])) == (5, None, 5)
    story = pool_cli("job", str(config), listed["jobs"][0]["id"])
    assert "status    dead" in story.stdout and "ValueError: boom" in story.stdout
    bad = pool_cli("jobs", str(config), "--status", "sleeping")
    assert bad.returncode == 2 and "invalid choice: 'sleeping'" in bad.stderr
    assert pool.stop() == 0, pool.output()


def test_metrics_with_a_namespace_are_all_prefixed_and_served_gzipped_on_request(write_config, start_pool):
    config = write_config(processes=1, metrics={"port": 0, "host": "127.0.0.1", "namespace": "pool"})
    pool = start_pool(config)
    wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    address = metrics_address(config)
    # Given 3 jobs done by a pool whose metrics.namespace is "pool"
    with Client.from_config(config) as client:
        for job in client.enqueue_many(JobSpec("tests.sample_handlers.add", (i, 1)) for i in range(3)):
            client.wait(job.id, timeout=30)
    # When Prometheus scrapes it (it sends Accept-Encoding: gzip; the supervisor's ≤ 1 s loop has
    # counted its worker booted), and a plain client does
    zipped = wait_until(lambda: (m := scrape(address, gzipped=True))["pool_job_success_total"] == 3
                        and m["pool_workers_alive"] == 1 and m, timeout=10, message="3 successes in /metrics")
    plain = scrape(address)
    # Then both read the same numbers, under names that all start with the namespace
    assert zipped.keys() == plain.keys()
    assert zipped["pool_job_success_total"] == plain["pool_job_success_total"] == 3
    assert [name for name in plain if not name.startswith("pool_")] == []
    assert plain["pool_redis_up"] == 1 and plain["pool_workers_alive"] == 1 and "pool_job_queue_length" in plain
    assert plain["pool_job_duration_seconds_count"] == 3
    assert pool.stop() == 0, pool.output()


def test_status_of_a_stopped_pool_says_it_is_down(write_config, start_pool):
    config = write_config(processes=1)
    pool = start_pool(config)
    wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    assert pool.stop() == 0
    text = pool_cli("status", str(config))
    assert text.returncode == 0
    assert "POOL DOWN · no supervisor or worker has a heartbeat in Redis" in text.stdout
    assert status_json(config)["pool"]["state"] == "down"
    probe = pool_cli("health", str(config))
    assert probe.returncode == 1 and probe.stderr.startswith("unhealthy: no supervisor is running")


def test_status_and_health_with_redis_unreachable_exit_3(write_config):
    config = write_config(redis={"url": f"redis://127.0.0.1:{free_port()}/0"})
    text = pool_cli("status", str(config))
    assert text.returncode == 3 and text.stdout == ""
    assert text.stderr.startswith("pool: cannot reach Redis at redis://127.0.0.1:"), text.stderr
    probe = pool_cli("health", str(config))
    assert probe.returncode == 3 and probe.stderr.startswith("unhealthy: cannot reach Redis")
    # --watch keeps watching through the outage, one line per refresh on stderr (stdout is for
    # the JSON snapshots only), until Ctrl-C
    watch = subprocess.Popen([sys.executable, "-m", "pool", "status", str(config), "--watch", "--json",
                              "--interval", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=cli_env())
    try:
        lines = [watch.stderr.readline() for _ in range(2)]
        assert all("cannot reach Redis" in line and "retrying every 0.1s" in line for line in lines), lines
    finally:
        watch.send_signal(signal.SIGINT)
        assert watch.wait(10) == 0
        assert watch.stdout.read() == ""
        watch.stdout.close()
        watch.stderr.close()


def test_a_metrics_port_in_use_fails_at_start_with_exit_2(write_config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(metrics={"port": port, "host": "127.0.0.1"})
        result = subprocess.run([sys.executable, "-m", "pool", "run", str(config)], capture_output=True, text=True,
                                env=cli_env(), timeout=60)
    assert result.returncode == 2
    assert f"metrics: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_stay_exact_and_few_files_while_workers_recycle(write_config, start_pool):
    config = write_config(processes=2, concurrency=2, max_jobs_per_process=5,
                          metrics={"port": 0, "host": "127.0.0.1"})
    pool = start_pool(config)
    pool.wait_for_log("metrics files in ")
    folder = pool.output().split("metrics files in ", 1)[1].split()[0]
    address = metrics_address(config)
    # Given 100 jobs through workers that are replaced every 5 jobs (about 20 exited processes)
    with Client.from_config(config) as client:
        for job in client.enqueue_many(JobSpec("tests.sample_handlers.add", (i, 1)) for i in range(100)):
            client.wait(job.id, timeout=60)
    pool.wait_for_log("recycled itself", count=16)
    # Then every job is counted once, though most of the processes that ran them are gone (a worker
    # counts a job once its ack is answered, which can come just after client.wait saw the result)
    counted = wait_until(lambda: (n := scrape(address)["job_success_total"]) >= 100 and n, timeout=10,
                         message="100 successes in /metrics")
    assert counted == 100
    # And the exited workers' files were folded into the archive, not left to pile up
    files = os.listdir(folder)
    assert "counter_archive.db" in files and "histogram_archive.db" in files
    assert len([f for f in files if f.startswith("counter_")]) <= 2 + 8 + 1, files
    assert pool.stop() == 0, pool.output()


def test_livez_stays_up_through_a_redis_outage_while_healthz_reports_it(write_config, start_pool, tmp_path):
    port, metrics_port = free_port(), free_port()
    server = EmbeddedServer(tmp_path / "own-redis", persist=False, port=port)
    config = write_config(redis={"url": f"redis://127.0.0.1:{port}/0"}, processes=1,
                          metrics={"port": metrics_port, "host": "127.0.0.1"})
    address = f"127.0.0.1:{metrics_port}"
    # A pool that waits for Redis at start-up is live, and not ready
    pool = start_pool(config)
    try:
        pool.wait_for_log("waiting for Redis at")
        code, text = wait_until(lambda: (g := get(address, "/livez"))[0] == 200 and g, timeout=20,
                                message="/livez while waiting for Redis")
        assert get(address, "/healthz")[0] == 503
        server.start()
        wait_until(lambda: get(address, "/healthz")[0] == 200, timeout=20, message="a healthy pool")
        # When Redis goes away
        server.stop()
        # Then readiness says so, but liveness does not: restarting the pool would not bring Redis back
        code, text = wait_until(lambda: (g := get(address, "/healthz"))[0] == 503 and g, timeout=20,
                                message="/healthz to see the outage")
        assert "cannot reach Redis" in text
        code, text = get(address, "/livez")
        assert code == 200 and text.startswith("live: the supervisor's loop ran")
        down = scrape(address)
        assert "pool_redis_up" in down and down["pool_redis_up"] == 0
        server.start()
        wait_until(lambda: get(address, "/healthz")[0] == 200, timeout=30, message="healthy again")
        assert pool.stop() == 0, pool.output()
    finally:
        server.stop()


def test_a_reload_shows_new_queues_in_metrics_and_drops_no_scrape(write_config, start_pool):
    """A reload replaces the metrics process; a scrape it catches mid-answer still gets its whole
    answer, and one that arrives meanwhile waits in the backlog: Prometheus sees no failed scrape."""
    config = write_config(processes=1, metrics={"port": 0, "host": "127.0.0.1"})
    pool = start_pool(config)
    address = metrics_address(config)
    settings = yaml.safe_load(config.read_text())
    scrapes: list[set[str]] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def scrape_queues() -> None:
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
                    families = text_string_to_metric_families(response.read().decode())
                    scrapes.append({s.labels["queue"] for f in families if f.name == "job_queue_length"
                                    for s in f.samples})
            except Exception as exc:  # every failure is the finding
                failures.append(exc)

    scrapers = [threading.Thread(target=scrape_queues) for _ in range(4)]
    for scraper in scrapers:
        scraper.start()
    try:
        for queues in (["default", "extra"], ["default"], ["default", "extra", "more"]):
            config.write_text(yaml.safe_dump({**settings, "queues": queues}))
            seen = len(scrapes)
            pool.proc.send_signal(signal.SIGHUP)
            wait_until(lambda queues=queues, seen=seen: set(queues) in scrapes[seen:] or failures, timeout=30,
                       message=f"queues {queues} in /metrics")
    finally:
        done.set()
        for scraper in scrapers:
            scraper.join(timeout=30)
    assert not failures, failures[:3]
    assert pool.output().count("metrics on http://") == 4, pool.output()  # replaced on each reload
    assert pool.stop() == 0, pool.output()
