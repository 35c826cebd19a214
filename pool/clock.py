"""The only clock of `pool`: wall time in milliseconds for records, monotonic time for intervals.

Tests replace these two functions to control time.
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
    """Epoch milliseconds as an ISO 8601 UTC time, for logs and `pool status`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
