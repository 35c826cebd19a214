"""The dead-letter queue, end to end, against a running pool (`pool run pool.yaml`):

    python examples/dead_letter.py [pool.yaml]

1. enqueue a job that fails because a file is missing; it lands in the dead set;
2. list the dead jobs; 3. fix the cause; 4. retry the job from the dead set: it completes.
The same with the command line: `pool dead list|show|retry|purge pool.yaml`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from pool import Client, Status


def needs_file(path: str) -> str:
    """A handler that fails until `path` exists."""
    return Path(path).read_text()


def main() -> None:
    marker = Path(tempfile.gettempdir()) / "pool-example-marker.txt"
    marker.unlink(missing_ok=True)
    with Client.from_config(sys.argv[1] if len(sys.argv) > 1 else "pool.yaml") as client:
        job = client.enqueue("examples.dead_letter.needs_file", str(marker))
        print("enqueued", job.id, "->", client.wait(job.id, timeout=30).status)
        for dead in client.dead_jobs(limit=5):
            print("dead:", dead.id, dead.handler, dead.error)
        marker.write_text("fixed")
        client.retry_dead([job.id])
        done = client.wait(job.id, timeout=30)
        assert done.status is Status.COMPLETED
        print("retried", job.id, "->", done.status, repr(done.result))


if __name__ == "__main__":
    main()
