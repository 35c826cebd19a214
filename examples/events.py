"""Completion notifications: print every finished job of the pool as it happens.

    python examples/events.py [pool.yaml]      # or: pool events pool.yaml [--json]

Each event carries the job id, queue, handler, status (completed, failed, retrying, dead,
cancelled), the attempt, its run time and the result or error.
"""

from __future__ import annotations

import sys

from pool import Client


def main() -> None:
    with Client.from_config(sys.argv[1] if len(sys.argv) > 1 else "pool.yaml") as client:
        for event in client.events():
            outcome = event.get("error") or event.get("result")
            print(f"{event['status']:<9} {event['handler']} {event['id']} {event.get('run_ms', 0):.1f}ms {outcome}")


if __name__ == "__main__":
    main()
