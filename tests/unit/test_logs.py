"""Log formats: the text line says which process wrote it; JSON carries the job fields."""

from __future__ import annotations

import json
import logging

from pool.config import LoggingSettings
from pool.logs import Completed, CompletedLines, JSONFormatter, TextFormatter, setup
from pool.testing import async_wait_until


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


async def test_jobs_completed_in_one_loop_turn_share_a_record_but_print_a_line_each():
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("pool.jobs.test-batch")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        lines = CompletedLines(logger)
        for n in range(3):
            lines.add(Completed(f"j{n}", "app.resize", "images", 4 + n, 1.25))
        assert records == []  # sent after this turn of the loop
        await async_wait_until(lambda: _now(len(records) == 1), timeout=5, message="the first record")
        lines.add(Completed("j3", "app.resize", "images", 0, 0.5))
        await async_wait_until(lambda: _now(len(records) == 2), timeout=5, message="the second record")
    finally:
        logger.removeHandler(handler)
    assert [len(r.jobs) for r in records] == [3, 1]
    text = TextFormatter("worker-3").format(records[0]).splitlines()
    assert len(text) == 3 and all(" INFO    [worker-3 " in line for line in text)
    assert text[1].endswith("job j1 app.resize queue=images wait=5ms run=1.2ms completed")
    entries = [json.loads(line) for line in JSONFormatter("worker-3").format(records[0]).splitlines()]
    assert [(e["job_id"], e["wait_ms"], e["outcome"], e["process"]) for e in entries] == [
        ("j0", 4, "completed", "worker-3"), ("j1", 5, "completed", "worker-3"), ("j2", 6, "completed", "worker-3")]
    assert entries[0]["message"] == "job j0 app.resize queue=images wait=4ms run=1.2ms completed"


async def _now(value: bool) -> bool:
    return value
