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
