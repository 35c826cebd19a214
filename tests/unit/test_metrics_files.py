"""Folding exited workers' metrics files into an archive changes no number a scrape reads."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
from prometheus_client import multiprocess

from pool import metrics

WRITER = """
import sys
from pool import metrics
from pool.jobs import Job, Status
metrics.enable(sys.argv[1])
recorder = metrics.WorkerMetrics()
n = int(sys.argv[2])
for i in range(n):
    job = Job(id=str(i), handler="h.ok" if i % 3 else "h.bad", queue="q" if i % 2 else "r",
              enqueued_ms=1000, started_ms=1000 + i * 7)
    recorder.started(job)
    recorder.acked(job, Status.COMPLETED if i % 3 else Status.DEAD, run_ms=i * 13.0)
    recorder.ended(job.queue)
"""


def scrape(directory: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, directory)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect() for s in family.samples}


def test_compaction_keeps_every_count_and_bucket(tmp_path):
    directory = str(tmp_path)
    for n in (5, 11, 17):  # three worker processes with different counts
        proc = subprocess.run([sys.executable, "-c", WRITER, directory, str(n)], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert proc.stderr == ""
    pids = sorted({int(path.rsplit("_", 1)[1][:-3]) for path in glob.glob(f"{directory}/counter_*.db")})
    for pid in pids:  # as the supervisor does when each exits: in-flight gauges go at once
        multiprocess.mark_process_dead(pid, directory)
    before = scrape(directory)
    assert before[("job_success_total", (("handler", "h.ok"), ("queue", "q")))] > 0
    metrics.compact(directory, pids[:2])
    assert scrape(directory) == pytest.approx(before)  # sums of floats, added in another order
    metrics.compact(directory, pids[2:])  # and again, into the existing archive
    assert scrape(directory) == pytest.approx(before)
    left = sorted(os.path.basename(p) for p in glob.glob(f"{directory}/*.db"))
    assert left == ["counter_archive.db", "histogram_archive.db"]


def test_a_scrape_leaves_out_a_file_a_new_worker_is_creating(tmp_path):
    """prometheus-client creates a worker's file empty, then sizes it: a scrape in between read
    it as a struct error and dropped the connection (seen in CI while workers recycled)."""
    from prometheus_client import CollectorRegistry

    directory = str(tmp_path)
    subprocess.run([sys.executable, "-c", WRITER, directory, "4"], check=True,
                   env={**os.environ, "PYTHONPATH": os.getcwd()})
    registry = CollectorRegistry()
    registry.register(metrics.folder_collector(directory))
    def successes() -> float:
        return sum(s.value for family in registry.collect() for s in family.samples if s.name == "job_success_total")

    before = successes()
    (tmp_path / "counter_999999.db").touch()  # the instant between open() and truncate()
    (tmp_path / "histogram_999999.db").touch()
    assert successes() == before > 0
