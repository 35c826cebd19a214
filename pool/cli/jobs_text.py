"""`pool job` and `pool jobs` for a terminal: one job's record, and a page of jobs as a table."""

from __future__ import annotations

import orjson

from pool import clock
from pool.jobs import Job, Status
from pool.listing import JobPage

FINISHED = ("completed", "failed", "cancelled")


def render_job(job: Job, now_ms: int) -> str:
    """Every field of the record, times shown with their age, then the history and traceback."""
    lines = [f"job {job.id}", ""]
    rows = [
        ("status", str(job.status)),
        ("queue", job.queue),
        ("handler", job.handler),
        ("args", orjson.dumps(list(job.args)).decode()),
        ("kwargs", orjson.dumps(dict(job.kwargs or {})).decode()),
        ("attempts", f"{job.attempts} ({job.failures} failed" + (f", max_retries {job.max_retries})"
                                                                  if job.max_retries is not None else ")")),
        ("created", _when(job.created_ms, now_ms)),
        ("enqueued", _when(job.enqueued_ms, now_ms)),
        ("due", _when(job.due_ms, now_ms)),
        ("started", _when(job.started_ms, now_ms)),
        ("finished", _when(job.finished_ms, now_ms)),
        ("waited", f"{job.wait_ms / 1000:.3f}s" if job.started_ms else None),
        ("ran", f"{(job.finished_ms - job.started_ms) / 1000:.3f}s"
         if job.finished_ms and job.started_ms and job.finished_ms >= job.started_ms else None),
        ("worker", job.worker),
        ("timeout", f"{job.timeout_ms / 1000:g}s" if job.timeout_ms else None),
        ("result", orjson.dumps(job.result).decode() if job.status is Status.COMPLETED else None),
        ("error", job.error),
    ]
    width = max(len(name) for name, _ in rows)
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows if value is not None]
    if job.history:
        dropped = f" (the last {len(job.history)} of {len(job.history) + job.history_dropped} attempts; " \
                  f"{job.history_dropped} older not kept)" if job.history_dropped else ""
        lines += ["", "history" + dropped]
        for entry in job.history:
            at = clock.format_ms(entry["finished_ms"]) if entry.get("finished_ms") else "?"
            lines.append(f"  attempt {entry.get('attempt', '?')}  {at}  {entry.get('outcome', '?')}  "
                         f"{entry.get('worker', '?')}  {entry.get('error', '')}")
    if job.traceback:
        lines += ["", "traceback (last attempt)", *("  " + line for line in job.traceback.rstrip().splitlines())]
    return "\n".join(lines)


def render_page(page: JobPage, config_name: str, now_ms: int) -> str:
    """The page as a table, with where the next page is."""
    if not page.jobs and page.offset == 0 and not page.more:
        return f"no {page.status} jobs in queue {page.queue}"
    rows = [["ID", "HANDLER", "ATTEMPTS", "CREATED", _detail_header(page.status)]]
    for job in page.jobs:
        rows.append([job.id, job.handler, str(job.attempts), _ago(job.created_ms, now_ms), _detail(job, now_ms)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    shown = f"{page.offset + 1}-{page.offset + len(page.jobs)}" if page.jobs else "none on this page"
    total = f" of {page.total:,}" if page.total is not None else ""
    if page.status in FINISHED:
        total = f" of the latest {page.total:,} (records past their result TTL are skipped)"
    lines += ["", f"{page.status} jobs in queue {page.queue}: {shown}{total}"]
    if page.more:
        lines.append(f"next page: pool jobs {config_name} --queue {page.queue} --status {page.status} "
                     f"--offset {page.offset + page.limit} --limit {page.limit}")
    return "\n".join(lines)


def _detail_header(status: str) -> str:
    return {"queued": "WAITING", "active": "RUNNING FOR / WORKER", "delayed": "DUE", "retrying": "DUE / LAST ERROR",
            "dead": "DIED / ERROR", "failed": "FINISHED / ERROR"}.get(status, "FINISHED / RAN")


def _detail(job: Job, now_ms: int) -> str:
    if job.status is Status.QUEUED:
        return clock.describe_s(max(0, now_ms - (job.updated_ms or job.enqueued_ms or now_ms)) / 1000)
    if job.status is Status.ACTIVE:
        return f"{_ago(job.started_ms, now_ms, suffix='')}  {job.worker or '?'}"
    if job.status in (Status.DELAYED, Status.RETRYING):
        due = "in " + clock.describe_s(max(0, (job.due_ms or now_ms) - now_ms) / 1000)
        return f"{due}  {_short(job.error)}" if job.status is Status.RETRYING else due
    finished = _ago(job.finished_ms, now_ms)
    if job.status in (Status.DEAD, Status.FAILED, Status.CANCELLED):
        return f"{finished}  {_short(job.error)}"
    ran = (job.finished_ms or 0) - (job.started_ms or 0)
    return f"{finished}  {ran / 1000:.3f}s"


def _when(ms: int | None, now_ms: int) -> str | None:
    return None if not ms else f"{clock.format_ms(ms)} ({_ago(ms, now_ms)})"


def _ago(ms: int | None, now_ms: int, suffix: str = " ago") -> str:
    if not ms:
        return "-"
    if ms > now_ms:
        return "in " + clock.describe_s((ms - now_ms) / 1000)
    return clock.describe_s((now_ms - ms) / 1000) + suffix


def _short(error: str | None, width: int = 80) -> str:
    text = (error or "").replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"
