"""The `pool` command: parse the command line, run one command, turn errors into one line and
an exit code.

The parser is :mod:`pool.cli.parser`, the commands :mod:`pool.cli.commands`. Every error `pool`
raises on purpose becomes ``pool: <message>`` on stderr and its :class:`~pool.errors.ExitCode`;
never a traceback, and neither when the reader of stdout goes away (`pool events | head -1`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import redis

from pool.cli.parser import build_parser
from pool.errors import ExitCode, JobFailed, PoolError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pool` console script; returns the exit code.

    A closed stdout ends the command quietly with 141 (128 + SIGPIPE, what a shell reports for a
    program the pipe killed), following the recipe of the Python docs (signal module, "Note on
    SIGPIPE"): stdout is pointed at /dev/null so that the flush at exit cannot fail again.
    """
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # inside the try: a pipe closed after the last write shows here
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return ExitCode.BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    from pool.cli import commands, parser

    try:
        options = parser.parse(argv)
        return int(commands.COMMANDS[options.command](options))
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
        from pool.connection import describe_error

        print(f"pool: Redis refused the command: {describe_error(exc)}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    except KeyboardInterrupt:
        return 130
