"""What every process the supervisor forks (workers, the metrics process) does first with signals.

The supervisor blocks its signals around fork() so that none arrives in the child before this
runs. The child takes back the default for the signals the supervisor handles, ignores those
that are the supervisor's alone (relayed by it, or meant for it: a closed terminal's HUP or job
control must not kill or stop a child mid-job), then unblocks everything.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable

SUPERVISOR_ONLY = (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


def reset_signals(handled_by_supervisor: Iterable[int]) -> None:
    """Call first thing in a freshly forked child of the supervisor."""
    for signum in handled_by_supervisor:
        signal.signal(signum, signal.SIG_DFL)
    for signum in SUPERVISOR_ONLY:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
