"""Log formats: the text line says which process wrote it; JSON carries the job fields."""

from __future__ import annotations

import json
import logging

from pool.config import LoggingSettings
from pool.logs import JSONFormatter, setup


def test_json_lines_carry_process_and_job_fields():
    record = logging.LogRecord("pool.worker", logging.INFO, __file__, 1, "job %s completed", ("abc",), None)
    record.job_id, record.queue, record.run_ms = "abc", "default", 1.5
    entry = json.loads(JSONFormatter("worker-2").format(record))
    assert entry["message"] == "job abc completed"
    assert (entry["process"], entry["level"], entry["job_id"], entry["queue"], entry["run_ms"]) == (
        "worker-2", "info", "abc", "default", 1.5)


def test_text_lines_name_the_process(capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup(LoggingSettings(level="warning", format="text"), "supervisor")
        logging.getLogger("pool.test").warning("hello %s", "there")
        logging.getLogger("pool.test").info("not shown at warning level")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "WARNING [supervisor " in err and err.rstrip().endswith("hello there")
    assert "not shown" not in err


def test_levels_per_logger_silence_completed_jobs_but_keep_failures(capsys):
    root = logging.getLogger()
    jobs = logging.getLogger("pool.jobs")
    saved = (root.handlers[:], root.level, jobs.level)
    try:
        setup(LoggingSettings(level="info", format="json", levels={"pool.jobs": "warning"}), "worker-1")
        jobs.info("job a completed", extra={"job_id": "a", "outcome": "completed"})
        jobs.warning("job b dead: boom", extra={"job_id": "b", "outcome": "dead", "wait_ms": 3, "run_ms": 1.0})
        logging.getLogger("pool.worker").info("worker started")
    finally:
        root.handlers[:], _ = saved[0], None
        root.setLevel(saved[1])
        jobs.setLevel(saved[2])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["logger"], e.get("job_id"), e["message"]) for e in lines] == [
        ("pool.jobs", "b", "job b dead: boom"), ("pool.worker", None, "worker started")]
    assert lines[0]["outcome"] == "dead" and lines[0]["process"] == "worker-1" and lines[0]["wait_ms"] == 3
