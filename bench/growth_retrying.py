"""Growth row 7: a page of `pool jobs --status retrying` among 10k vs 1M delayed jobs.

    python bench/growth.py --rows retrying

Writes the delayed jobs straight into the server (records and delayed-set entries, by a Lua loop:
enqueue.lua would take minutes for 1M) and 20 retrying jobs due after all of them, indexed as
ack.lua indexes a retry. Times one page of 20 (median of 20 reads). Before the index, a page read
every delayed record first (the issue measured 0.72 s at 10k, 18.8 s at 1M).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench.harness import PrivateServer
from pool.client import AsyncClient
from pool.config import load

SIZES = (10_000, 1_000_000)
RETRYING, ROUNDS, PAGE = 20, 20, 20
_CHUNK = 50_000

_BUILD = """
local qprefix, first, last, status, key = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
for i = first, last do
  local id = status .. '-' .. i
  redis.call('HSET', qprefix .. 'job:' .. id, 'id', id, 'handler', 'bench.noop', 'queue', 'default',
    'status', status, 'attempts', 1, 'args', '[]', 'kwargs', '{}', 'due_ms', 10000000000000 + i)
  redis.call('ZADD', qprefix .. 'delayed', 10000000000000 + i, id)
  if key ~= '' then
    redis.call('ZADD', qprefix .. key, 10000000000000 + i, id)
  end
end
return last - first + 1
"""


async def _page_ms(client: AsyncClient) -> float:
    times = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        page = await client.jobs(status="retrying", limit=PAGE)
        times.append(time.perf_counter() - began)
        assert len(page.jobs) == RETRYING, page
    return statistics.median(times) * 1000


def _one(server: PrivateServer, delayed: int) -> float:
    config = server.write_config()
    qprefix = server.keys(config).queue_prefix("default")
    build = server.redis.register_script(_BUILD)
    for first in range(0, delayed, _CHUNK):
        build(args=[qprefix, first, min(delayed, first + _CHUNK) - 1, "delayed", ""])
    build(args=[qprefix, delayed, delayed + RETRYING - 1, "retrying", "retrying"])  # due after every delayed job

    async def run() -> float:
        async with AsyncClient(load(config), server.url) as client:
            return await _page_ms(client)

    return asyncio.run(run())


def measure(server: PrivateServer, options: argparse.Namespace) -> dict[str, Any]:
    """The row: ms per page of retrying jobs, small vs large delayed set."""
    small, large = (_one(server, size) for size in SIZES)
    server.redis.flushall()
    return {"row": "pool jobs --status retrying", "small": f"{SIZES[0]:,} delayed", "large": f"{SIZES[1]:,} delayed",
            "measures": {"page of 20 ms (median)": {"small": small, "large": large}}}
