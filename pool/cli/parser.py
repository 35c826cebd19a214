"""The `pool` command line: every subcommand, option and help text, and where CONFIG comes from.

Commands live in :mod:`pool.cli.commands`; this module only describes them, so that the help,
the shell completion (`pool completion bash`) and the parsing all come from one parser.

CONFIG is optional everywhere. Commands whose other positionals are free words (`enqueue`'s
handler and arguments, job ids) take all their positionals as one list, and the first one is
CONFIG only if it ends in ``.yaml``/``.yml`` or names an existing file; argparse alone cannot tell
``pool job JOB_ID`` from ``pool job CONFIG`` by position. Left out, CONFIG is ``$POOL_CONFIG``,
else ``./pool.yaml``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

import shtab

from pool.errors import ExitCode, UsageError

CONFIG_ENV = "POOL_CONFIG"
_NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")  # what argparse itself reads as a word, not an option
DEFAULT_CONFIG = "pool.yaml"

EXAMPLES = """\
examples:
  pool run pool.yaml                                   start the supervisor and its workers
  pool run --processes 4 --queues critical,default     override the file (also across SIGHUP)
  pool enqueue pool.yaml examples.tasks.add 1 2        enqueue a job, print its id
  pool enqueue pool.yaml examples.tasks.add 1 2 --wait enqueue and print the result (3)
  pool enqueue pool.yaml examples.tasks.add 1 2 --wait --wait-timeout 10   give up after 10 s
  pool enqueue pool.yaml examples.tasks.word_count --kwargs '{"text": "a b a"}'
  pool enqueue pool.yaml examples.tasks.add 1 2 --delay 5m   run it in five minutes
  pool status pool.yaml                                queues and workers at a glance
  pool status pool.yaml --json                         the same, for scripts
  pool status pool.yaml --watch                        refresh every 2 s until Ctrl-C
  pool job pool.yaml 5d1f0c                            one job's full record (a unique id prefix will do)
  pool jobs pool.yaml --status failed                  the latest failed jobs, 20 at a time
  pool health pool.yaml                                exit 0 if this host's pool is alive (probes)
  pool dead list pool.yaml                             jobs that exhausted their retries
  pool dead retry pool.yaml --all                      send every dead job back to its queue
  pool cancel pool.yaml JOB_ID                         stop a job that has not finished
  pool events pool.yaml --json                         tail finished jobs as they happen
  source <(pool completion bash)                       tab completion in this shell

CONFIG: optional. The first positional is CONFIG when it ends in .yaml/.yml or names an existing
  file; otherwise it is the handler (enqueue) or a job id, and CONFIG is $POOL_CONFIG, else ./pool.yaml.
job ids: a unique prefix will do; it is looked up among the queued (the newest and oldest 5,000 of
  each queue), running, delayed, retrying and dead jobs and the newest 1,000 completed, failed and
  cancelled ones of each queue (`pool dead`: among the dead jobs only)
exit codes: 0 ok, 1 job failed (or unhealthy), 2 bad config or usage, 3 Redis unreachable,
  6 no such job, 7 gave up waiting (--wait-timeout), 141 stdout closed (e.g. `| head`)
environment: POOL_CONFIG names the config, POOL_REDIS_URL overrides redis.url of the config
"""

_CONFIG_HELP = f"path of pool.yaml (default: ${CONFIG_ENV}, else ./{DEFAULT_CONFIG})"


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"pool: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, for parsing, help and shell completion."""
    parser = _Parser(
        prog="pool", description="A Redis-backed, multi-process job worker pool.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pool {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_run(commands)
    _add_enqueue(commands)
    status = _with_config(commands.add_parser("status", help="show queues and workers"))
    status.add_argument("--json", action="store_true", help="print one JSON object (stable shape)")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument("--interval", metavar="S", type=_seconds, default=2.0,
                        help="with --watch: seconds between refreshes")
    _add_jobs(commands)
    health = _with_config(commands.add_parser(
        "health", help="exit 0 if this host's supervisor and workers are alive and Redis answers (for probes)"))
    health.add_argument("--host", metavar="HOST", help="judge this host instead (default: this one)")
    _add_dead(commands)
    cancel = commands.add_parser("cancel", help="cancel a queued, waiting or running job")
    cancel.add_argument("words", metavar="[CONFIG] ID", nargs="+", help="the job's id (or a unique prefix)")
    cancel.add_argument("--queue", metavar="Q", help="the job's queue (default: search all)")
    events = _with_config(commands.add_parser(
        "events", help="tail finished jobs (completed, failed, retrying, dead, cancelled)"))
    events.add_argument("--queue", metavar="Q", action="append", help="only this queue (repeatable)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--count", metavar="N", type=_integer(1), help="exit after N events")
    completion = commands.add_parser("completion", help="print a shell completion script (bash or zsh)")
    completion.add_argument("shell", choices=("bash", "zsh"), help="e.g. `source <(pool completion bash)`")
    return parser


def _with_config(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    config = command.add_argument("config", metavar="CONFIG", nargs="?", help=_CONFIG_HELP)
    config.complete = shtab.FILE  # type: ignore[attr-defined]  # read by `pool completion` only
    return command


def _add_run(commands: argparse._SubParsersAction) -> None:
    run = _with_config(commands.add_parser("run", help="run the supervisor and its worker processes"))
    run.add_argument("--processes", metavar="N", type=_integer(1, 512), help="worker processes (overrides the file)")
    run.add_argument("--concurrency", metavar="N", type=_integer(1, 10_000),
                     help="job slots per process (overrides the file)")
    run.add_argument("--queues", metavar="A,B", type=_queue_list,
                     help="queues to serve, highest priority first (overrides the file)")


def _add_enqueue(commands: argparse._SubParsersAction) -> None:
    enqueue = commands.add_parser("enqueue", help="enqueue one job")
    enqueue.add_argument("words", metavar="[CONFIG] HANDLER [ARG ...]", nargs="+",
                         help="the handler's dotted path (e.g. examples.tasks.add), then its arguments: "
                              "JSON, or else a plain string")
    enqueue.add_argument("--kwargs", metavar="JSON", help="keyword arguments as a JSON object")
    enqueue.add_argument("--queue", metavar="Q", help="target queue (default: the first in the config)")
    enqueue.add_argument("--job-id", metavar="ID", help="choose the id; an id that exists on the queue is not enqueued twice "
                         "(ids are unique per queue)")
    enqueue.add_argument("--job-timeout", metavar="S", type=_seconds, help="seconds the job may run")
    enqueue.add_argument("--max-retries", metavar="N", type=_integer(0, 1000), help="retries after a failed attempt")
    enqueue.add_argument("--delay", metavar="DURATION", type=_delay,
                         help="start no earlier than this from now ('30s', '5m')")
    enqueue.add_argument("--at", metavar="TIME", help="start no earlier than this ISO 8601 time with offset "
                         "('2026-12-01T09:00:00+01:00')")
    enqueue.add_argument("--wait", action="store_true", help="wait for the job and print its result as JSON")
    enqueue.add_argument("--wait-timeout", metavar="S", type=_seconds,
                         help="with --wait: give up after S seconds (exit code 7)")
    # Deprecated spelling of --wait-timeout: `timeout` means the job's run limit everywhere else.
    enqueue.add_argument("--timeout", metavar="S", type=_seconds, dest="old_timeout", help=argparse.SUPPRESS)


def _add_jobs(commands: argparse._SubParsersAction) -> None:
    from pool.listing import STATUSES

    job = commands.add_parser("job", help="show one job's full record and history")
    job.add_argument("words", metavar="[CONFIG] ID", nargs="+", help="the job's id (or a unique prefix)")
    job.add_argument("--queue", metavar="Q", help="the job's queue (default: search all)")
    job.add_argument("--json", action="store_true", help="the record as one JSON object")
    jobs = _with_config(commands.add_parser("jobs", help="list a queue's jobs in one state, a page at a time"))
    jobs.add_argument("--queue", metavar="Q", help="the queue (default: the first in the config)")
    jobs.add_argument("--status", metavar="S", default="queued", choices=STATUSES,
                      help="one of: " + ", ".join(STATUSES) + " (default: queued)")
    jobs.add_argument("--offset", metavar="N", type=_integer(0), default=0, help="skip this many (paging)")
    jobs.add_argument("--limit", metavar="N", type=_integer(1), default=20, help="page size (default: 20)")
    jobs.add_argument("--json", action="store_true", help="the page as one JSON object")


def _add_dead(commands: argparse._SubParsersAction) -> None:
    dead = commands.add_parser("dead", help="the dead-letter queue: list, show, retry, purge")
    actions = dead.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    lister = _with_config(actions.add_parser("list", help="list dead jobs, newest first"))
    lister.add_argument("--limit", metavar="N", type=_integer(1), default=50, help="at most this many (default: 50)")
    lister.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one dead job's record and history")
    show.add_argument("words", metavar="[CONFIG] ID", nargs="+", help="the job's id (or a unique prefix)")
    show.add_argument("--json", action="store_true", help="the record as one JSON object")
    for name, text in (("retry", "send dead jobs back to their queue (ids kept, attempts reset)"),
                       ("purge", "delete dead jobs for good")):
        action = actions.add_parser(name, help=text)
        action.add_argument("words", metavar="[CONFIG] [ID ...]", nargs="*", help="job ids (or unique prefixes)")
        action.add_argument("--all", action="store_true", help="every dead job (of --queue)")
    for action in actions.choices.values():
        action.add_argument("--queue", metavar="Q", help="only this queue")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line and settle CONFIG and the positionals that follow it.

    Bare `pool` prints the help and exits 0, as pip, docker and kubectl do: it asked for nothing.
    """
    parser = build_parser()
    options, extras = parser.parse_known_args(argv)
    if options.command is None:
        parser.print_help()
        raise SystemExit(ExitCode.OK)
    words = getattr(options, "words", None)
    if words is None and extras:
        parser.error("unrecognized arguments: " + " ".join(extras))
    if words is not None:
        options.config, words = split_config(_with_later_words(words, extras, parser))
        _assign_words(options, words)
    if options.command != "completion":
        options.config = resolve_config(options.config)
    return options


def _with_later_words(words: list[str], extras: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The positionals after an option too (`pool enqueue pool.yaml --queue q HANDLER 1`).

    argparse fills a list positional from the first run of words only and leaves the words after
    an option over; here they join it, in order. An unknown option among them is still an error,
    a negative number is a word, and after ``--`` everything is a word."""
    joined, literal = list(words), False
    for item in extras:
        if item == "--" and not literal:
            literal = True
        elif not literal and item.startswith("-") and not _NEGATIVE_NUMBER.fullmatch(item):
            parser.error(f"unrecognized arguments: {item}")
        else:
            joined.append(item)
    return joined


def split_config(words: Sequence[str]) -> tuple[str | None, list[str]]:
    """(CONFIG or None, the rest): the first word is CONFIG if it looks like one (see the module doc)."""
    if words and (words[0].endswith((".yaml", ".yml")) or os.path.isfile(words[0])):
        return words[0], list(words[1:])
    return None, list(words)


def _assign_words(options: argparse.Namespace, words: list[str]) -> None:
    name = "pool dead " + options.action if options.command == "dead" else "pool " + options.command
    if options.command == "enqueue":
        if not words or not words[0].strip():
            raise UsageError(f"{name}: name the HANDLER (a dotted path such as examples.tasks.add) after CONFIG")
        options.handler, options.args = words[0], words[1:]
        return
    if any(not word.strip() for word in words):  # every id starts with "": it would pick any job
        raise UsageError(f"{name}: a job id is empty (an unset shell variable?): give the id or its start")
    if options.command in ("job", "cancel") or getattr(options, "action", None) == "show":
        if len(words) != 1:
            raise UsageError(f"{name}: name exactly one job id (got {len(words)}: {' '.join(words) or 'none'})")
        options.job_id = words[0]
    else:
        options.job_ids = words


def resolve_config(given: str | None) -> str:
    """CONFIG as given, else $POOL_CONFIG, else ./pool.yaml (refused with a hint if absent)."""
    if given:
        return given
    if os.environ.get(CONFIG_ENV):
        return os.environ[CONFIG_ENV]
    if not Path(DEFAULT_CONFIG).is_file():
        raise UsageError(f"no config: pass its path (pool COMMAND CONFIG ...), set {CONFIG_ENV}, "
                         f"or run where {DEFAULT_CONFIG} is")
    return DEFAULT_CONFIG


def version() -> str:
    """The installed distribution's version, whatever the distribution is named."""
    for name in metadata.packages_distributions().get("pool", []):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import pool

    return getattr(pool, "__version__", "unknown")


# Numbers on the command line take the ranges of the config's own values (config_values.py):
# a flag must not let through what the file refuses, or what Redis refuses later.

def _seconds(text: str) -> float:
    """A number of seconds above 0, finite and at most MAX_DURATION_S (as every duration)."""
    from pool.config_values import MAX_DURATION_S, MAX_DURATION_TEXT, is_valid_seconds

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not is_valid_seconds(value, 0.001):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds from 0.001 to {MAX_DURATION_S:.0f} ({MAX_DURATION_TEXT}) (got {text!r})")
    return value


def _delay(text: str) -> float:
    """--delay: a duration as the config writes them ('30s', '5m', '1h30m'), 0 to MAX_DURATION_S."""
    from pool.config_values import Invalid, duration

    try:
        return duration(0, allow_zero=True)(text)
    except Invalid as exc:
        raise argparse.ArgumentTypeError(f"{exc} (got {text!r})") from None


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    from pool.config_values import MAX_INTEGER

    top = MAX_INTEGER if maximum is None else maximum

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if not minimum <= value <= top:
            rule = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"must be {rule} (got {text!r})")
        return value

    return parse


def _queue_list(text: str) -> tuple[str, ...]:
    from pool.keys import QUEUE_NAME_RULE, is_valid_queue_name

    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if not is_valid_queue_name(name):
            raise argparse.ArgumentTypeError(f"queue {name!r} is not a valid queue name: {QUEUE_NAME_RULE}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"names a queue twice (got {text!r})")
    return names
