"""How the supervisor forks a child (workers, the metrics process), and how it reads a child's death.

The supervisor blocks its signals around fork() so that none arrives in the child before the child
has taken them over. The child takes back the default for the signals the supervisor handles,
ignores those that are the supervisor's alone (relayed by it, or meant for it: a closed
terminal's HUP or job control must not kill or stop a child mid-job), then unblocks everything.

Every process of a pool also names itself here (:func:`set_title`), so that `ps` and `top` tell
the supervisor, its workers and the metrics process apart, and which config each one serves.

One helper, :func:`fork_child`, does the whole protocol for every kind of child (gunicorn writes
it once per worker class, and the copies drift): mask, fork, reset, title, logging, run, and
``os._exit`` whatever happens, so that no child ever returns into the supervisor's loop.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterable
from os import PathLike

import setproctitle

from pool import logs
from pool.config import Config
from pool.errors import ExitCode

logger = logging.getLogger("pool.forking")  # the name JSON logs show, kept stable

HANDLED_BY_SUPERVISOR = (
    signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
)
SUPERVISOR_ONLY = (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


def fork_child(role: str, config: Config, run: Callable[[], int]) -> int:
    """Fork a child of the supervisor that runs ``run`` and exits with the code it returns.

    Args:
        role: what the child is, for its process title and log lines ("worker 2", "metrics").
        config: the pool's settings (its path for the title, its logging section).
        run: the child's whole life, called in the child once its signals and logging are set.

    Returns:
        The child's pid (in the supervisor; the child never returns from this call). A child
        that fails before ``run`` starts exits with ``ExitCode.BOOT``; one whose ``run`` raises
        exits with ``ExitCode.JOB_FAILED``, after logging the exception.
    """
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_BY_SUPERVISOR)
    pid = os.fork()
    if pid == 0:
        _become(role, config, run)  # never returns
    signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    return pid


def _become(role: str, config: Config, run: Callable[[], int]) -> None:
    code: int = ExitCode.BOOT
    try:
        reset_signals(HANDLED_BY_SUPERVISOR)
        set_title(role, config.path)
        logs.setup(config.logging, role.replace(" ", "-"))
        code = ExitCode.JOB_FAILED
        code = run()
    except BaseException:  # the child must never return into the supervisor's loop
        logger.exception("%s crashed", role.replace(" ", "-"))
    finally:
        logging.shutdown()
        os._exit(int(code))


def reset_signals(handled_by_supervisor: Iterable[int]) -> None:
    """Call first thing in a freshly forked child of the supervisor."""
    for signum in handled_by_supervisor:
        signal.signal(signum, signal.SIG_DFL)
    for signum in SUPERVISOR_ONLY:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def set_title(role: str, config_path: str | PathLike[str]) -> None:
    """Title this process ``pool: <role> <config path>`` (``pool: worker 2 /srv/app/pool.yaml``)
    in `ps`, `top` and /proc/<pid>/cmdline; call once where each process starts."""
    setproctitle.setproctitle(f"pool: {role} {config_path}")


def death_cause(code: int, frozen: bool = False) -> str:
    """How a child died, as a dead job's error names it: 'killed by SIGSEGV', 'exited with code 3'.

    Args:
        code: ``os.waitstatus_to_exitcode`` of the child (negative: the signal that killed it).
        frozen: the supervisor SIGKILLed it itself, because its event loop stopped.
    """
    if code < 0:
        name = signal.Signals(-code).name
        if frozen and -code == signal.SIGKILL:
            return "killed by the supervisor (SIGKILL) after its event loop froze"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {code}"


def describe_exit(code: int, frozen: bool = False) -> str:
    """:func:`death_cause` as a log line's verb phrase: 'was killed by SIGSEGV', 'exited with code 3'."""
    cause = death_cause(code, frozen)
    return f"was {cause}" if code < 0 else cause
