"""The clock of job records and of the worker's and clients' intervals: wall time in
milliseconds for records, monotonic time for intervals. Tests replace these two functions to
control time.

The sync processes' own loops (the supervisor's arbiter and exporter, connection.Outage, the
embedded server's start) read ``time.monotonic`` directly: they write no record, and their tests
patch it where it is read.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock time in integer milliseconds since the epoch (stored in job records)."""
    return time.time_ns() // 1_000_000


def monotonic() -> float:
    """Seconds from an arbitrary point; use for timeouts and intervals, never for records."""
    return time.monotonic()


def format_ms(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time, for logs and `pool status`.

    A time the C library cannot show (past the year 9999: a record written before due times
    were bounded) comes back as its number, never as an error in the middle of a listing.
    """
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms after the epoch"


def describe_s(seconds: float | None) -> str:
    """A duration for people: '0.4s', '42s', '3m 07s', '2h 14m', '3d 04h'; '-' for None."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"
