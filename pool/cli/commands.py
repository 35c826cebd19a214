"""One function per `pool` subcommand: each calls into the package and prints what it returns.

The parser (:mod:`pool.cli.parser`) has settled the options and CONFIG by the time these run;
errors they raise are turned into one line and an exit code by :func:`pool.cli.main`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from pool import config as config_module
from pool.cli import ids
from pool.config import Config
from pool.errors import ExitCode, JobNotFound, UsageError
from pool.keys import is_valid_queue_name


def _run(options: argparse.Namespace) -> int:
    from pool import hooks, logs, worker
    from pool.handlers import check_importable
    from pool.supervisor import Supervisor

    overrides = _run_overrides(options)
    config = overrides(config_module.load(options.config))
    check_importable(config)
    hooks.check_importable(config)
    logs.setup(config.logging, "supervisor")
    return Supervisor(config, worker.main, overrides).run()


def _run_overrides(options: argparse.Namespace) -> Callable[[Config], Config]:
    """`pool run --processes/--concurrency/--queues` as a change to any loaded config (also after SIGHUP)."""

    def apply(config: Config) -> Config:
        changes: dict[str, Any] = {}
        if options.processes is not None:
            changes["processes"] = options.processes
        if options.concurrency is not None:
            changes["concurrency"] = options.concurrency
        if options.queues is not None:
            # The file's weights and rate limits still apply to the queues it names.
            weights = config.queue_weights
            changes.update(queues=options.queues,
                           queue_weights={q: weights.get(q, 1) for q in options.queues} if weights else {},
                           rate_limits={q: r for q, r in config.rate_limits.items() if q in options.queues})
        return config.replace(**changes) if changes else config

    return apply


def _enqueue(options: argparse.Namespace) -> int:
    from pool.client import Client

    wait_timeout = _wait_timeout(options)
    config = config_module.load(options.config)
    valid = options.queue is not None and is_valid_queue_name(options.queue)  # else the client refuses it
    if valid and options.queue not in config.queues:
        print(f"pool: warning: {options.config} serves no queue {options.queue!r} (it serves "
              f"{', '.join(config.queues)}): the job waits until a pool that serves it runs", file=sys.stderr)
    args = [_parse_arg(arg, index) for index, arg in enumerate(options.args)]
    kwargs = _parse_kwargs(options.kwargs)
    delay, at = _parse_when(options.delay, options.at)
    with Client(config) as client:
        job = client.enqueue(options.handler, *args, kwargs=kwargs, queue=options.queue,
                             timeout=options.job_timeout, job_id=options.job_id,
                             max_retries=options.max_retries, delay=delay, at=at)
        if not options.wait:
            print(job.id)
            return ExitCode.OK
        result = client.result(job.id, timeout=wait_timeout, queue=job.queue)
    print(orjson.dumps(result).decode())
    return ExitCode.OK


def _wait_timeout(options: argparse.Namespace) -> float | None:
    """--wait-timeout, or the deprecated --timeout (with a note); either one needs --wait."""
    spelled = "--wait-timeout"
    if options.old_timeout is not None:
        print("pool: --timeout is deprecated, use --wait-timeout (the job's own run limit is --job-timeout)",
              file=sys.stderr)
        if options.wait_timeout is None:
            options.wait_timeout, spelled = options.old_timeout, "--timeout"
    if options.wait_timeout is not None and not options.wait:
        raise UsageError(f"{spelled} needs --wait (the job's own run limit is --job-timeout)")
    return options.wait_timeout


def _parse_when(delay: float | None, at: str | None) -> tuple[float | None, datetime | None]:
    """--delay (a duration, checked by the parser), --at as an ISO 8601 time that names its offset."""
    when = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise UsageError(f"--at {at!r} must be an ISO 8601 time with an offset, e.g. 2026-12-01T09:00:00+01:00 "
                             "or 2026-12-01T08:00:00Z")
    return delay, when


def _status(options: argparse.Namespace) -> int:
    from pool import status
    from pool.cli import status_text
    from pool.connection import OUTAGE_ERRORS, describe_unreachable, resolve_url, sync_client

    config = config_module.load(options.config)
    url = resolve_url(config)
    client = sync_client(config, url)
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    try:
        while True:
            try:
                data = status.snapshot(client, config, url)
                text = orjson.dumps(data).decode() if options.json else status_text.render(data, options.config, colour)
            except OUTAGE_ERRORS as exc:
                if not options.watch:
                    raise describe_unreachable(url, exc) from None
                text = f"pool: {describe_unreachable(url, exc)}; retrying every {options.interval:g}s"
                if options.json:  # stdout carries JSON lines only: the outage goes to stderr
                    print(text, file=sys.stderr, flush=True)
                    time.sleep(options.interval)
                    continue
            if not options.watch:
                print(text)
                return ExitCode.OK
            # Refresh in place: home the cursor, print, clear what is left of the last frame.
            frame = text if options.json else "\x1b[H" + text.replace("\n", "\x1b[K\n") + "\x1b[K\x1b[J"
            print(frame, flush=True)
            time.sleep(options.interval)
    except KeyboardInterrupt:
        return ExitCode.OK
    finally:
        client.close()


def _job(options: argparse.Namespace) -> int:
    from pool.client import Client

    config = config_module.load(options.config)
    with Client(config) as client:
        job = client.get_job(options.job_id, queue=options.queue)
        if job is None:  # not a full id: maybe the start of one
            queue, job_id = ids.resolve(config, options.job_id, options.queue)
            job = client.get_job(job_id, queue=queue)
    if job is None:
        raise JobNotFound(f"no job {options.job_id} (never enqueued, or its result expired)")
    return _print_record(job, options.json)


def _jobs(options: argparse.Namespace) -> int:
    from pool import clock
    from pool.cli import jobs_text
    from pool.client import Client

    with Client(config_module.load(options.config)) as client:
        page = client.jobs(options.queue, options.status, options.offset, options.limit)
    if options.json:
        print(orjson.dumps(page.to_dict()).decode())
    else:
        print(jobs_text.render_page(page, options.config, clock.now_ms()))
    return ExitCode.OK


def _health(options: argparse.Namespace) -> int:
    from pool import health
    from pool.connection import OUTAGE_ERRORS, describe_unreachable, resolve_url, sync_client

    config = config_module.load(options.config)
    url = resolve_url(config)
    client = sync_client(config, url)
    try:
        verdict = health.check(client, config, url, options.host)
    except OUTAGE_ERRORS as exc:
        print(f"unhealthy: {describe_unreachable(url, exc)}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    finally:
        client.close()
    if verdict.healthy:
        print(f"healthy: {verdict.message}")
        return ExitCode.OK
    print(f"unhealthy: {verdict.message}", file=sys.stderr)
    return ExitCode.JOB_FAILED


def _dead(options: argparse.Namespace) -> int:
    from pool.client import Client

    if options.action in ("retry", "purge") and bool(options.job_ids) == options.all:
        raise UsageError(f"pool dead {options.action}: name job ids or --all" + (", not both" if options.all else ""))
    config = config_module.load(options.config)
    with Client(config) as client:
        if options.action == "list":
            return _print_dead(client.dead_jobs(options.queue, options.limit), options.json)
        if options.action == "show":
            return _show_dead(client, config, options)
        op = client.retry_dead if options.action == "retry" else client.purge_dead
        progress = _dead_progress(options.action)
        try:
            count = op(options.job_ids, options.queue, all=options.all, on_progress=progress)
        except JobNotFound:  # nothing was done: some id is not a full one, maybe the start of one
            job_ids = [ids.resolve(config, job_id, options.queue, dead_only=True)[1] for job_id in options.job_ids]
            count = op(job_ids, options.queue, all=options.all, on_progress=progress)
    print(f"{'retried' if options.action == 'retry' else 'purged'} {count} dead job(s)")
    return ExitCode.OK


PROGRESS_EVERY_PAGES = 10  # a progress line per 10,000 dead jobs at the default page size


def _dead_progress(action: str) -> Callable[[int, int], None]:
    """A line on stderr every PROGRESS_EVERY_PAGES pages of a bulk action (none for a small
    one), so that a long run shows it is moving; stdout keeps only the final count."""
    pages = 0

    def show(handled: int, total: int) -> None:
        nonlocal pages
        pages += 1
        if pages % PROGRESS_EVERY_PAGES == 0:
            print(f"pool: dead {action}: {handled:,} of {total:,} dead job(s) handled", file=sys.stderr)

    return show


def _show_dead(client: Any, config: Config, options: argparse.Namespace) -> int:
    from pool.jobs import Status

    job = client.get_job(options.job_id, queue=options.queue)
    if job is None or job.status is not Status.DEAD:
        queue, job_id = ids.resolve(config, options.job_id, options.queue, dead_only=True)
        job = client.get_job(job_id, queue=queue)
    if job is None or job.status is not Status.DEAD:
        raise JobNotFound(f"no dead job {options.job_id}")
    return _print_record(job, options.json)


def _print_record(job: Any, as_json: bool) -> int:
    """One job's record: the text view of `pool job`, or one JSON object."""
    from pool import clock
    from pool.cli import jobs_text

    if as_json:
        print(orjson.dumps(job.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(jobs_text.render_job(job, clock.now_ms()))
    return ExitCode.OK


def _print_dead(jobs: list[Any], as_json: bool) -> int:
    from pool import clock

    if as_json:
        for job in jobs:
            print(orjson.dumps(job.to_dict()).decode())
        return ExitCode.OK
    if not jobs:
        print("no dead jobs")
    for job in jobs:
        died = clock.format_ms(job.finished_ms or 0)
        print(f"{job.id}  {job.queue}  {job.handler}  attempts={job.attempts}  died={died}  {job.error}")
    return ExitCode.OK


def _cancel(options: argparse.Namespace) -> int:
    from pool.client import Client

    config = config_module.load(options.config)
    job_id = options.job_id
    with Client(config) as client:
        try:
            outcome = client.cancel(job_id, options.queue)
        except JobNotFound:  # not a full id: maybe the start of one
            queue, job_id = ids.resolve(config, job_id, options.queue)
            outcome = client.cancel(job_id, queue)
    print({"cancelled": f"cancelled {job_id}",
           "requested": f"asked the worker running {job_id} to cancel it",
           "finished": f"{job_id} has already finished; nothing to cancel"}[outcome])
    return ExitCode.OK if outcome != "finished" else ExitCode.JOB_FAILED


def _events(options: argparse.Namespace) -> int:
    from pool.client import Client

    seen = 0
    with Client(config_module.load(options.config)) as client:
        for event in client.events(options.queue):
            print(orjson.dumps(event).decode() if options.json else _event_line(event), flush=True)
            seen += 1
            if options.count and seen >= options.count:
                break
    return ExitCode.OK


def _event_line(event: dict[str, Any]) -> str:
    """One readable line: time (UTC), queue, status, handler, id, run time, then result or error."""
    at = time.strftime("%H:%M:%SZ", time.gmtime(event.get("ts_ms", 0) / 1000))
    line = f"{at}  {event.get('queue', '?')}  {event.get('status', '?'):<9}  {event.get('handler', '?')}  " \
           f"{event.get('id', '?')}"
    if isinstance(event.get("run_ms"), int | float):
        line += f"  {event['run_ms']:.1f}ms"
    if "error" in event:
        line += f"  {event['error']}"
    elif "result" in event:
        line += "  -> " + orjson.dumps(event["result"]).decode()[:200]
    return line


def _completion(options: argparse.Namespace) -> int:
    import shtab

    from pool.cli.parser import build_parser

    print(shtab.complete(build_parser(), shell=options.shell))
    return ExitCode.OK


def _parse_arg(text: str, index: int) -> Any:
    """A command-line argument as JSON (``2``, ``"x"``, ``[1]``), or else the plain string.

    JSON nested past the decoder's depth limit is refused rather than passed on as its text:
    the text was meant as JSON, and the handler would get a string it never expected.
    """
    too_deep = UsageError(f"argument {index + 1} is JSON nested deeper than {_JSON_DEPTH} levels; "
                          "pass a flatter value (or a reference to the data)")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith("depth limit"):
            raise too_deep from None
        return text
    if _depth(value) > _JSON_DEPTH:  # orjson before 3.10 reads any depth
        raise too_deep
    return value


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


_JSON_DEPTH = 1024  # orjson's limit on reading; writing stops at 254, which encode_arguments reports


def _parse_kwargs(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--kwargs must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--kwargs must be a JSON object such as '{{\"text\": \"hi\"}}' (got {text})")
    return value


COMMANDS = {
    "run": _run, "enqueue": _enqueue, "status": _status, "job": _job, "jobs": _jobs, "health": _health,
    "dead": _dead, "cancel": _cancel, "events": _events, "completion": _completion,
}
