"""The supervisor's auxiliary children: the processes it keeps running beside its workers.

Today they are the metrics process (exporter.py) and the embedded Redis (this module adapts
embedded.EmbeddedServer). Each one is an :class:`Auxiliary`: the supervisor asks every one of
them, every tick, to start if it is due, hands each one its own exit when it reaps it (found by
pid), and stops them all last. A child that is off is a null object (exporter.NoExporter), so
the supervisor never asks "is there one?". What an auxiliary child needs from the supervisor,
it gets through :class:`Host`, as gunicorn's workers get their arbiter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from pool.embedded import EmbeddedServer
from pool.errors import RedisUnavailable
from pool.supervisor.forking import describe_exit

logger = logging.getLogger("pool.auxiliary")  # the name JSON logs show, kept stable

EMBEDDED_START_S = 15.0  # the longest EmbeddedServer.start waits for a restarted server


class Host(Protocol):
    """What an auxiliary child needs from the supervisor that keeps it running."""

    url: str  # the pool's Redis

    def fork(self, role: str, run: Callable[[], int]) -> int:
        """:func:`fork_child`, once the supervisor dropped its own Redis connections."""

    def busy_for(self, seconds: float) -> None:
        """The supervisor's loop is about to block for up to ``seconds`` on purpose (/livez stays up)."""


class Auxiliary(Protocol):
    """A process the supervisor keeps running beside its workers: the metrics process, the
    embedded Redis. Its reaper finds one by pid; "off" is a null object, never a None check."""

    @property
    def pid(self) -> int | None:
        """The running process, or None."""

    def start_if_due(self, host: Host) -> None:
        """Start the process unless it runs or waits out a restart delay (every tick but stopping)."""

    def exited(self, code: int, stopping: bool) -> None:
        """The supervisor reaped it (``code`` as ``os.waitstatus_to_exitcode`` gives it)."""

    def stop(self) -> None:
        """The supervisor's last step: stop the process and wait for it."""


class EmbeddedRedis:
    """The embedded Redis as an auxiliary child: restarted when it dies, or when the pool run
    that owned it (another supervisor sharing the state folder) stops and this one takes over.

    Args:
        server: the server, already started (its first start decides the pool's URL).
    """

    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server

    @property
    def pid(self) -> int | None:
        return self.server.pid

    def start_if_due(self, host: Host) -> None:
        """It died, or its owner (another pool run) stopped: ours now."""
        if not self.server.should_start():
            return
        host.busy_for(EMBEDDED_START_S)
        try:
            self.server.start(EMBEDDED_START_S)
        except RedisUnavailable as exc:
            logger.error("%s; retrying in a second", exc)

    def exited(self, code: int, stopping: bool) -> None:
        """Forget the process; the next tick's :meth:`start_if_due` restarts it."""
        self.server.forget_process()
        if not stopping:
            logger.error("the embedded Redis %s; restarting it (its AOF keeps the jobs)", describe_exit(code))

    def stop(self) -> None:
        self.server.stop()
