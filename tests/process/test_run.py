"""`pool run` end to end: real processes, real signals, a real server."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import redis
import yaml

from pool import Client, JobSpec, Status
from pool.embedded import EmbeddedServer, free_port
from pool.keys import Keys
from pool.testing import wait_until
from tests.conftest import ROOT, cli_env, pool_cli
from tests.process.conftest import live_workers


def test_embedded_server_quick_tour(tmp_path, start_pool):
    """The README's tour: pool run on the embedded server, enqueue and status from another shell."""
    # Given the documented pool.yaml (no redis: section) in a fresh folder
    config = tmp_path / "pool.yaml"
    config.write_text((ROOT / "pool.yaml").read_text())
    shutil.copytree(ROOT / "examples" / "scripts", tmp_path / "examples" / "scripts")
    pool = start_pool(config)
    # When its workers are up
    data = wait_until(live_workers(config, 2), timeout=30, message="2 workers in pool status")
    assert data["redis"]["url"].startswith("unix://")
    # Then enqueue finds the embedded server by itself and returns results
    added = pool_cli("enqueue", str(config), "examples.tasks.add", "1", "2", "--wait", "--wait-timeout", "10")
    assert (added.returncode, added.stdout.strip()) == (0, "3"), added.stderr
    thumb = pool_cli("enqueue", str(config), "examples.images.thumbnail", "1024", "768", "--wait")
    assert json.loads(thumb.stdout) == {"width": 256, "height": 192}
    failed = pool_cli("enqueue", str(config), "examples.tasks.fail", "boom", "--wait")
    assert failed.returncode == 1
    assert failed.stderr.startswith("pool: RuntimeError: boom\nTraceback")
    job_id = pool_cli("enqueue", str(config), "examples.tasks.word_count", "--kwargs", '{"text": "a b a"}').stdout.strip()
    shown = wait_until(lambda: _finished_job(config, job_id), timeout=10, message="word_count to finish")
    assert shown["result"] == {"a": 2, "b": 1}
    counts = json.loads(pool_cli("status", str(config), "--json").stdout)["queues"]["default"]
    totals = {k: counts[k] for k in ("queued", "active", "delayed", "completed", "failed", "dead", "reclaimed")}
    assert totals == {"queued": 0, "active": 0, "delayed": 0, "completed": 3, "failed": 0, "dead": 1, "reclaimed": 0}
    assert counts["last_minute"] == counts["last_hour"] == {"completed": 3, "failed": 1}
    # The lifecycle examples of the README, as written there
    report = pool_cli("enqueue", str(config), "pool.script", "examples/scripts/report.sh", "2026-11", "--wait",
                      cwd=tmp_path)
    assert json.loads(report.stdout)["stdout"].startswith("report for 2026-11: "), report.stderr
    bad = pool_cli("enqueue", str(config), "pool.script", "examples/scripts/report.sh", "nope", "--wait")
    assert bad.returncode == 1 and "exited with code 3: bad month: nope" in bad.stderr
    refused = pool_cli("enqueue", str(config), "examples.retries.charge", "-5", "--wait")
    assert "ValueError: amount must be positive (got -5)" in refused.stderr
    rate = pool_cli("enqueue", str(config), "examples.retries.fetch_rate", "EUR", "--wait", "--wait-timeout", "30")
    assert rate.stdout.strip() == "1.08", rate.stderr
    demo = subprocess.run([sys.executable, str(ROOT / "examples" / "dead_letter.py"), str(config)],
                          capture_output=True, text=True, env=cli_env(), timeout=60)
    assert "-> completed 'fixed'" in demo.stdout, demo.stderr
    assert "examples.tasks.fail" in pool_cli("dead", "list", str(config)).stdout
    text = pool_cli("status", str(config))
    assert "QUEUE" in text.stdout and "WORKER" in text.stdout
    # And SIGTERM stops everything with exit 0, the embedded server included
    assert pool.stop() == 0, pool.output()
    assert not (tmp_path / ".pool" / "server.json").exists()
    assert (tmp_path / ".pool" / "appendonlydir").is_dir()  # AOF persistence was on
    down = pool_cli("status", str(config))
    assert down.returncode == 3
    assert "is not running" in down.stderr


def _finished_job(config: Path, job_id: str):
    result = pool_cli("job", str(config), job_id, "--json")
    data = json.loads(result.stdout) if result.returncode == 0 else None
    return data if data and data["status"] in ("completed", "failed") else None


def test_two_processes_finish_1000_jobs_then_stop_cleanly(write_config, start_pool, url):
    config = write_config(processes=2, concurrency=8)
    pool = start_pool(config)
    wait_until(live_workers(config, 2), timeout=30, message="2 workers")
    with Client.from_config(config) as client:
        jobs = client.enqueue_many(JobSpec("tests.sample_handlers.add", (i, 1000)) for i in range(1000))
        results = [client.result(job.id, timeout=60) for job in jobs]
        records = [client.get_job(job.id) for job in jobs]
    assert results == [i + 1000 for i in range(1000)]
    assert all(r.status is Status.COMPLETED and r.attempts == 1 for r in records)
    assert len({r.worker for r in records}) == 2, "both worker processes should have run jobs"
    assert pool.stop(signal.SIGTERM) == 0, pool.output()
    keys = Keys(yaml.safe_load(config.read_text())["key_prefix"])
    server = redis.Redis.from_url(url)
    assert server.llen(keys.queue("default")) == 0
    assert server.scard(keys.workers()) == 0
    assert "supervisor stopped" in pool.output()


def test_run_waits_for_redis_and_starts_once_it_answers(write_config, start_pool, tmp_path):
    port = free_port()
    config = write_config(redis={"url": f"redis://127.0.0.1:{port}/0"}, processes=1)
    pool = start_pool(config)
    pool.wait_for_log("waiting for Redis at redis://127.0.0.1:")
    server = EmbeddedServer(tmp_path / "late-redis", persist=False, port=port)
    try:
        server.start()
        pool.wait_for_log("started worker-1")
        with Client.from_config(config) as client:
            job = client.enqueue("tests.sample_handlers.add", 2, 2)
            assert client.result(job.id, timeout=20) == 4
        assert pool.stop() == 0
    finally:
        server.stop()
    assert pool.output().count("waiting for Redis") == 1, "the wait is logged once, not per retry"


def test_sigterm_requeues_jobs_that_outlive_shutdown_timeout(write_config, start_pool, tmp_path, url):
    config = write_config(processes=1, shutdown_timeout="300ms")
    pool = start_pool(config)
    wait_until(live_workers(config, 1), timeout=30, message="1 worker")
    started, release = tmp_path / "started", tmp_path / "release"
    with Client.from_config(config) as client:
        job = client.enqueue("tests.sample_handlers.start_then_wait", str(started), str(release))
        wait_until(started.exists, timeout=10, message="job start")
        assert pool.stop(signal.SIGTERM) == 0, pool.output()
        stored = client.get_job(job.id)
    keys = Keys(yaml.safe_load(config.read_text())["key_prefix"])
    assert stored.status is Status.QUEUED
    assert redis.Redis.from_url(url).lrange(keys.queue("default"), 0, -1) == [job.id.encode()]
    assert "requeued 1 unfinished job(s) on default" in pool.output()
