"""Log formats: the text line says which process wrote it; JSON carries the job fields."""

from __future__ import annotations

import json
import logging
import sys

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


def _record(msg: str = "user signed in", level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    """A record as `logging.getLogger("myapp").info(msg, extra=extra)` makes it."""
    return logging.getLogger("myapp").makeRecord("myapp", level, __file__, 1, msg, (), None, extra=extra)


def test_json_lines_keep_the_extra_fields_of_a_users_log_call():
    class Model:
        def __str__(self) -> str:
            return "<Model 3>"

    record = _record(user_id=7, url="/cart", tags=["a", "b"], model=Model(), ts="yesterday")
    entry = json.loads(JSONFormatter("worker-1").format(record))
    assert entry["message"] == "user signed in" and entry["logger"] == "myapp"
    assert (entry["user_id"], entry["url"], entry["tags"], entry["model"]) == (7, "/cart", ["a", "b"], "<Model 3>")
    assert isinstance(entry["ts"], float)  # an extra never replaces a field of the line itself
    assert not {"args", "msg", "levelno", "pathname", "exc_info", "created", "thread"} & set(entry)


def test_json_lines_survive_an_extra_json_cannot_carry():
    entry = json.loads(JSONFormatter("worker-1").format(_record(big=2**70, keyed={1: "one"})))
    assert (entry["big"], entry["keyed"]) == (repr(2**70), repr({1: "one"}))


def test_a_failed_jobs_text_line_stays_one_line_but_other_records_keep_their_traceback():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        job_line = _record("job a dead: RuntimeError: boom", logging.ERROR, job_id="a", outcome="dead")
        job_line.exc_info = sys.exc_info()
        other = _record("unexpected", logging.ERROR)
        other.exc_info = job_line.exc_info
    formatter = TextFormatter("worker-1")
    assert formatter.format(job_line).endswith("] job a dead: RuntimeError: boom")
    assert job_line.exc_info is not None  # still there for the handlers after this one
    assert formatter.format(other).endswith("RuntimeError: boom") and "Traceback" in formatter.format(other)
    assert "Traceback" in json.loads(JSONFormatter("worker-1").format(job_line))["exception"]


async def test_a_completed_jobs_record_reads_as_its_jobs_lines_to_any_handler():
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("pool.jobs.test-message")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        lines = CompletedLines(logger)
        lines.add(Completed("j0", "app.resize", "images", 4, 1.25))
        await async_wait_until(lambda: _now(len(records) == 1), timeout=5, message="the first record")
        lines.add(Completed("j1", "app.resize", "images", 5, 1.5))
        lines.add(Completed("j2", "app.crop", "images", 6, 2.0))
        await async_wait_until(lambda: _now(len(records) == 2), timeout=5, message="the second record")
    finally:
        logger.removeHandler(handler)
    one, two = records
    assert one.getMessage() == "job j0 app.resize queue=images wait=4ms run=1.2ms completed"
    assert (one.job_id, one.queue, one.handler, one.outcome, one.wait_ms, one.run_ms) == (
        "j0", "images", "app.resize", "completed", 4, 1.2)
    assert two.getMessage() == ("job j1 app.resize queue=images wait=5ms run=1.5ms completed; "
                                "job j2 app.crop queue=images wait=6ms run=2.0ms completed")
    assert logging.Formatter("%(levelname)s %(message)s").format(one).startswith("INFO job j0 ")
