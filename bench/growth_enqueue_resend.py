"""Growth row 8 (enqueue-resend): enqueue_many of 1,000 fresh ids vs the same 1,000 sent again.

    python bench/growth.py --rows enqueue-resend

Each round enqueues 1,000 jobs with chosen ids on a fresh key prefix, then sends the same specs
again (every id exists: the resend returns the jobs as stored). Median of the rounds, in ms, and
the commands clients sent (INFO commandstats counts the scripts' own commands too, so the
figure is the EVALSHA/EVAL calls plus any plain HGETALL a client sent: before this change the
resend read each existing record back, 1,000 HGETALLs).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench.harness import PrivateServer
from pool import JobSpec
from pool.client import AsyncClient
from pool.config import load

JOBS, ROUNDS = 1_000, 15


def _scripts_called(server: PrivateServer) -> int:
    stats = server.redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


async def _rounds(server: PrivateServer) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"fresh": [], "resent": [], "fresh_calls": [], "resent_calls": []}
    for n in range(ROUNDS):
        config = load(server.write_config())
        specs = [JobSpec("tests.sample_handlers.add", (i, 0), job_id=f"r{n}-{i}") for i in range(JOBS)]
        async with AsyncClient(config, server.url) as client:
            await client.enqueue_many(specs[:1])  # connects and loads the script outside the figures
            for case in ("fresh", "resent"):
                before = _scripts_called(server)
                began = time.perf_counter()
                await client.enqueue_many(specs)
                figures[case].append((time.perf_counter() - began) * 1000)
                figures[f"{case}_calls"].append(_scripts_called(server) - before)
    return figures


def measure(server: PrivateServer, options: argparse.Namespace) -> dict[str, Any]:
    """The row: ms and script calls of a fresh vs a resent bulk enqueue of 1,000 ids."""
    figures = asyncio.run(_rounds(server))
    server.redis.flushall()
    return {"row": "enqueue_many resent", "small": f"{JOBS:,} fresh ids", "large": f"{JOBS:,} resent ids",
            "measures": {"ms (median)": {"small": statistics.median(figures["fresh"]),
                                         "large": statistics.median(figures["resent"])},
                         "script calls": {"small": statistics.median(figures["fresh_calls"]),
                                          "large": statistics.median(figures["resent_calls"])}}}
