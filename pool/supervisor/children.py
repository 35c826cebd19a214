"""What the supervisor knows about its worker processes without asking Redis, and how fast it
replaces one that died.

A frozen worker is found without Redis: each worker touches a file from its event loop, and a
file that goes stale for `heartbeat_ttl` gets the process SIGKILLed (a frozen loop cannot run a
SIGTERM handler) and its jobs requeued.

The same file's first byte says whether the worker runs jobs ('1') or not ('0'); the worker
writes it when it turns busy or idle. A worker that dies while running jobs was killed by one of
them (os._exit, a segfault, a frozen loop): that death is counted per job (deliveries, and the
cause is recorded on each job for the dead set's error) and the slot respawns at once. Only a
worker that dies idle, or before its loop ran, is a crash loop to slow down with backoff.
Rejected: judging by how long the worker lived (a poison job claimed at boot crashes its
worker within a second, which looked like a crash loop and backed the slot off for up to 30 s),
and asking Redis which jobs the worker held (the answer is late, and absent in an outage).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# A worker whose event loop ran this long is no crash loop: its slot's backoff resets. Deaths
# while running jobs are counted per job (max_deliveries), never punished with slower respawns.
HEALTHY_RUN_S = 1.0
BUSY_MARK = b"1"  # the alive file's first byte while the worker runs jobs (see the docstring)
MAX_RESPAWN_DELAY_S = 30.0
BOOT_ALLOWANCE_S = 60.0  # time to import handlers before the first touch of the alive file


@dataclass
class WorkerChild:
    """One worker process, as its supervisor sees it through its alive file."""

    index: int
    worker_id: str
    started: float
    alive_file: Path
    created_mtime: float
    booted: bool = False  # its event loop ran (touched the alive file); set when reaped
    busy: bool = False  # it was running jobs when it died (the alive file's mark); set when reaped
    frozen: bool = False  # the supervisor SIGKILLed it because its event loop stopped
    retired: bool = False  # a reload's roll SIGTERMed it: its replacement waits until it exits
    last_mtime: float = 0.0
    last_change: float = 0.0  # monotonic time the alive file was last seen to change

    @property
    def is_leaving(self) -> bool:
        """The supervisor sent the signal that ends it (SIGTERM to retire, SIGKILL as frozen)."""
        return self.retired or self.frozen

    def is_booted(self) -> bool:
        try:
            return self.alive_file.stat().st_mtime != self.created_mtime
        except FileNotFoundError:
            return False

    def stalled_s(self, now: float, heartbeat_ttl_s: float) -> float | None:
        """How long its event loop has not touched the alive file, once that is past the limit.

        Judged on the supervisor's monotonic clock (when the file was last seen to change), so a
        wall-clock step never makes every worker look frozen. None: not stalled (or gone).
        """
        try:
            mtime = self.alive_file.stat().st_mtime
        except FileNotFoundError:
            return None
        if mtime != self.last_mtime:
            self.last_mtime, self.last_change = mtime, now
        booted = mtime != self.created_mtime
        limit = heartbeat_ttl_s if booted else max(heartbeat_ttl_s, BOOT_ALLOWANCE_S)
        stalled_s = now - self.last_change
        return stalled_s if stalled_s > limit else None

    def mark_frozen(self) -> None:
        self.frozen = True

    def mark_retired(self) -> None:
        self.retired = True

    def reaped(self) -> None:
        """Read what its alive file says about its death (decided before the file goes), then remove it."""
        self.booted = self.is_booted()
        try:
            with open(self.alive_file, "rb") as file:
                self.busy = file.read(1) == BUSY_MARK
        except FileNotFoundError:
            self.busy = False
        self.alive_file.unlink(missing_ok=True)


@dataclass
class ProcessSlot:
    """Crash-loop state of one worker slot (index 0..processes-1)."""

    failures: int = 0
    spawn_at: float = 0.0

    def forgive(self, now: float) -> None:
        """A job killed its worker: max_deliveries deals with the job, nothing to slow down."""
        self.failures = 0
        self.spawn_at = now

    def crashed(self, now: float, ran_healthy: bool) -> float:
        """Seconds before the next worker: 0 after the first death, doubling for a worker that
        keeps dying before it ran anything or while idle (a crash loop)."""
        if ran_healthy:
            self.failures = 0
        delay = 0.0 if self.failures == 0 else min(MAX_RESPAWN_DELAY_S, 0.5 * 2 ** (self.failures - 1))
        self.failures += 1
        self.spawn_at = now + delay
        return delay
