"""The `pool` command: argument parsing and turning errors into one line and an exit code.

No logic lives here: each subcommand calls into the package and prints what it returns.
Every error `pool` raises on purpose becomes ``pool: <message>`` on stderr and its
:class:`~pool.errors.ExitCode`; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

import orjson
import redis

from pool import config as config_module
from pool.errors import ExitCode, JobFailed, PoolError, UsageError

EXAMPLES = """\
examples:
  pool run pool.yaml                                   start the supervisor and its workers
  pool enqueue pool.yaml examples.tasks.add 1 2        enqueue a job, print its id
  pool enqueue pool.yaml examples.tasks.add 1 2 --wait enqueue and print the result (3)
  pool enqueue pool.yaml examples.tasks.word_count --kwargs '{"text": "a b a"}'
  pool enqueue pool.yaml examples.tasks.add 1 2 --delay 5m   run it in five minutes
  pool status pool.yaml                                queues and workers at a glance
  pool status pool.yaml --json                         the same, for scripts
  pool status pool.yaml --watch                        refresh every 2 s until Ctrl-C
  pool job pool.yaml JOB_ID                            one job's full record and history
  pool jobs pool.yaml --status failed                  the latest failed jobs, 20 at a time
  pool health pool.yaml                                exit 0 if this host's pool is alive (probes)
  pool dead list pool.yaml                             jobs that exhausted their retries
  pool dead retry pool.yaml --all                      send every dead job back to its queue
  pool cancel pool.yaml JOB_ID                         stop a job that has not finished
  pool events pool.yaml --json                         tail finished jobs as they happen

exit codes: 0 ok, 1 job failed (or unhealthy), 2 bad config or usage, 3 Redis unreachable
environment: POOL_REDIS_URL overrides redis.url of the config
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"pool: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pool", description="A Redis-backed, multi-process job worker pool.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pool {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser("run", help="run the supervisor and its worker processes")
    run.add_argument("config", metavar="CONFIG", help="path of pool.yaml")

    enqueue = commands.add_parser("enqueue", help="enqueue one job")
    enqueue.add_argument("config", metavar="CONFIG", help="path of pool.yaml")
    enqueue.add_argument("handler", metavar="HANDLER", help="dotted path, e.g. examples.tasks.add")
    enqueue.add_argument("args", metavar="ARG", nargs="*", help="arguments: JSON, or else a plain string")
    enqueue.add_argument("--kwargs", metavar="JSON", help="keyword arguments as a JSON object")
    enqueue.add_argument("--queue", metavar="Q", help="target queue (default: the first in the config)")
    enqueue.add_argument("--job-id", metavar="ID", help="choose the id; an existing id is not enqueued twice")
    enqueue.add_argument("--job-timeout", metavar="S", type=float, help="seconds the job may run")
    enqueue.add_argument("--max-retries", metavar="N", type=int, help="retries after a failed attempt")
    enqueue.add_argument("--delay", metavar="DURATION", help="start no earlier than this from now ('30s', '5m')")
    enqueue.add_argument("--at", metavar="TIME", help="start no earlier than this ISO 8601 time with offset "
                         "('2026-12-01T09:00:00+01:00')")
    enqueue.add_argument("--wait", action="store_true", help="wait for the job and print its result as JSON")
    enqueue.add_argument("--timeout", metavar="S", type=float, help="with --wait: give up after S seconds")

    status = commands.add_parser("status", help="show queues and workers")
    status.add_argument("config", metavar="CONFIG", help="path of pool.yaml")
    status.add_argument("--json", action="store_true", help="print one JSON object (stable shape)")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument("--interval", metavar="S", type=_positive_seconds, default=2.0,
                        help="with --watch: seconds between refreshes")

    job = commands.add_parser("job", help="show one job's full record and history")
    job.add_argument("config", metavar="CONFIG", help="path of pool.yaml")
    job.add_argument("job_id", metavar="ID")
    job.add_argument("--queue", metavar="Q", help="the job's queue (default: search all)")
    job.add_argument("--json", action="store_true", help="the record as one JSON object")

    jobs = commands.add_parser("jobs", help="list a queue's jobs in one state, a page at a time")
    jobs.add_argument("config", metavar="CONFIG", help="path of pool.yaml")
    jobs.add_argument("--queue", metavar="Q", help="the queue (default: the first in the config)")
    jobs.add_argument("--status", metavar="S", default="queued", choices=listing_statuses(),
                      help="one of: " + ", ".join(listing_statuses()) + " (default: queued)")
    jobs.add_argument("--offset", metavar="N", type=int, default=0, help="skip this many (paging)")
    jobs.add_argument("--limit", metavar="N", type=int, default=20, help="page size (default: 20)")
    jobs.add_argument("--json", action="store_true", help="the page as one JSON object")

    health = commands.add_parser("health", help="exit 0 if this host's supervisor and workers are alive "
                                 "and Redis answers (for probes)")
    health.add_argument("config", metavar="CONFIG", help="path of pool.yaml")
    health.add_argument("--host", metavar="HOST", help="judge this host instead (default: this one)")

    dead = commands.add_parser("dead", help="the dead-letter queue: list, show, retry, purge")
    actions = dead.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    for name, text in (("list", "list dead jobs, newest first"), ("show", "one dead job's record"),
                       ("retry", "send dead jobs back to their queue (ids kept, attempts reset)"),
                       ("purge", "delete dead jobs for good")):
        action = actions.add_parser(name, help=text)
        action.add_argument("config", metavar="CONFIG", help="path of pool.yaml")
        action.add_argument("--queue", metavar="Q", help="only this queue")
        if name == "list":
            action.add_argument("--limit", metavar="N", type=int, default=50)
            action.add_argument("--json", action="store_true", help="one JSON object per line")
        elif name == "show":
            action.add_argument("job_id", metavar="ID")
        else:
            action.add_argument("job_ids", metavar="ID", nargs="*")
            action.add_argument("--all", action="store_true", help="every dead job (of --queue)")

    cancel = commands.add_parser("cancel", help="cancel a queued, waiting or running job")
    cancel.add_argument("config", metavar="CONFIG", help="path of pool.yaml")
    cancel.add_argument("job_id", metavar="ID")
    cancel.add_argument("--queue", metavar="Q", help="the job's queue (default: search all)")

    events = commands.add_parser("events", help="tail finished jobs (completed, failed, retrying, dead, cancelled)")
    events.add_argument("config", metavar="CONFIG", help="path of pool.yaml")
    events.add_argument("--queue", metavar="Q", action="append", help="only this queue (repeatable)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--count", metavar="N", type=int, help="exit after N events")
    return parser


def _version() -> str:
    """The installed distribution's version (it is named pool-jobs: `pool` on the index is another)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("pool-jobs")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pool` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:  # bare `pool`: what it can do, as pip and docker answer
        parser.print_help()
        return ExitCode.OK
    options = parser.parse_args(argv)
    try:
        return _dispatch(options)
    except BrokenPipeError:
        # The reader went away (`pool events | head -1`): stop quietly, as a tool killed by SIGPIPE
        # would. Point stdout at /dev/null so the interpreter's final flush raises nothing either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # SIGPIPE


def _dispatch(options: argparse.Namespace) -> int:
    try:
        return int(_COMMANDS[options.command](options))
    except JobFailed as exc:
        print(f"pool: {exc.error}", file=sys.stderr)
        if exc.remote_traceback:
            print(exc.remote_traceback.rstrip(), file=sys.stderr)
        return ExitCode.JOB_FAILED
    except PoolError as exc:
        print(f"pool: {exc}", file=sys.stderr)
        return exc.exit_code
    except redis.exceptions.RedisError as exc:
        # Refused by the server (missing ACL permission, OOM, READONLY replica): one line.
        print(f"pool: Redis refused the command: {exc}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _run(options: argparse.Namespace) -> int:
    from pool import hooks, logs, worker
    from pool.handlers import check_importable
    from pool.supervisor import Supervisor

    config = config_module.load(options.config)
    check_importable(config)
    hooks.check_importable(config)
    logs.setup(config.logging, "supervisor")
    return Supervisor(config, worker.main).run()


def _enqueue(options: argparse.Namespace) -> int:
    from pool.client import Client

    config = config_module.load(options.config)
    args = [_parse_arg(arg) for arg in options.args]
    kwargs = _parse_kwargs(options.kwargs)
    delay, at = _parse_when(options.delay, options.at)
    with Client(config) as client:
        job = client.enqueue(options.handler, *args, kwargs=kwargs, queue=options.queue,
                             timeout=options.job_timeout, job_id=options.job_id,
                             max_retries=options.max_retries, delay=delay, at=at)
        if not options.wait:
            print(job.id)
            return ExitCode.OK
        result = client.result(job.id, timeout=options.timeout, queue=job.queue)
    print(orjson.dumps(result).decode())
    return ExitCode.OK


def _parse_when(delay: str | None, at: str | None) -> tuple[float | None, datetime | None]:
    """--delay as a duration, --at as an ISO 8601 time that names its offset."""
    seconds = when = None
    if delay is not None:
        try:
            seconds = config_module.parse_duration(delay)
        except ValueError:
            raise UsageError(f"--delay {delay!r} is not a duration such as '30s', '5m' or '1h'") from None
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise UsageError(f"--at {at!r} must be an ISO 8601 time with an offset, e.g. 2026-12-01T09:00:00+01:00 "
                             "or 2026-12-01T08:00:00Z")
    return seconds, when


def _status(options: argparse.Namespace) -> int:
    from pool import status, status_text
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
    from pool import clock, jobs_text
    from pool.client import Client

    config = config_module.load(options.config)
    with Client(config) as client:
        job = client.get_job(options.job_id, queue=options.queue)
    if job is None:
        raise PoolError(f"no job {options.job_id} (never enqueued, or its result expired)")
    if options.json:
        print(orjson.dumps(job.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(jobs_text.render_job(job, clock.now_ms()))
    return ExitCode.OK


def _jobs(options: argparse.Namespace) -> int:
    from pool import clock, jobs_text
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

    config = config_module.load(options.config)
    with Client(config) as client:
        if options.action == "list":
            return _print_dead(client.dead_jobs(options.queue, options.limit), options.json)
        if options.action == "show":
            job = client.get_job(options.job_id, queue=options.queue)
            if job is None or job.status.value != "dead":
                raise PoolError(f"no dead job {options.job_id}")
            print(orjson.dumps(job.to_dict(), option=orjson.OPT_INDENT_2).decode())
            return ExitCode.OK
        if not options.job_ids and not options.all:
            raise UsageError(f"pool dead {options.action}: name job ids, or --all")
        op = client.retry_dead if options.action == "retry" else client.purge_dead
        count = op(options.job_ids, options.queue, all=options.all)
    print(f"{'retried' if options.action == 'retry' else 'purged'} {count} dead job(s)")
    return ExitCode.OK


def _print_dead(jobs: list[Any], as_json: bool) -> int:
    if as_json:
        for job in jobs:
            print(orjson.dumps(job.to_dict()).decode())
        return ExitCode.OK
    if not jobs:
        print("no dead jobs")
    for job in jobs:
        died = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((job.finished_ms or 0) / 1000))
        print(f"{job.id}  {job.queue}  {job.handler}  attempts={job.attempts}  died={died}  {job.error}")
    return ExitCode.OK


def _cancel(options: argparse.Namespace) -> int:
    from pool.client import Client

    with Client(config_module.load(options.config)) as client:
        outcome = client.cancel(options.job_id, options.queue)
    print({"cancelled": f"cancelled {options.job_id}",
           "requested": f"asked the worker running {options.job_id} to cancel it",
           "finished": f"{options.job_id} has already finished; nothing to cancel"}[outcome])
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
    """One readable line: time, queue, status, handler, id, run time, then result or error."""
    at = time.strftime("%H:%M:%S", time.localtime(event.get("ts_ms", 0) / 1000))
    line = f"{at}  {event.get('queue', '?')}  {event['status']:<9}  {event.get('handler', '?')}  {event['id']}"
    if "run_ms" in event:
        line += f"  {event['run_ms']:.1f}ms"
    if "error" in event:
        line += f"  {event['error']}"
    elif "result" in event:
        line += "  -> " + orjson.dumps(event["result"]).decode()[:200]
    return line


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0 (got {text!r})")
    return value


def _parse_arg(text: str) -> Any:
    """A command-line argument as JSON (``2``, ``"x"``, ``[1]``), or else the plain string."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


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


_COMMANDS = {
    "run": _run, "enqueue": _enqueue, "status": _status, "job": _job, "jobs": _jobs, "health": _health,
    "dead": _dead, "cancel": _cancel, "events": _events,
}


def listing_statuses() -> tuple[str, ...]:
    from pool.listing import STATUSES

    return STATUSES
