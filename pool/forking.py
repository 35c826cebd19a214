"""What every process the supervisor forks (workers, the metrics process) does first with signals.

The supervisor blocks its signals around fork() so that none arrives in the child before this
runs. The child takes back the default for the signals the supervisor handles, ignores those
that are the supervisor's alone (relayed by it, or meant for it: a closed terminal's HUP or job
control must not kill or stop a child mid-job), then unblocks everything.

Every process of a pool also names itself here (:func:`set_title`), so that `ps` and `top` tell
the supervisor, its workers and the metrics process apart, and which config each one serves.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from os import PathLike

import setproctitle

SUPERVISOR_ONLY = (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


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
