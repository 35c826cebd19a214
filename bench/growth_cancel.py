"""Growth row 5: what cancelling a queued job costs at 10k and at 1M queued jobs.

    python bench/growth_cancel.py     (or: python bench/growth.py --rows cancel)

Starts a private valkey-server, and for each depth queues that many jobs (records and ids, built
by a Lua loop: enqueue.lua would take minutes for 1M), cancels 100 jobs from the middle of the
queue through cancel.lua, then measures claims of 10 jobs through a stretch of the queue where
every other job was cancelled, beside claims through a clean stretch. Every script call's time
comes from SLOWLOG (slowlog-log-slower-than 0): the time Redis was blocked, not the round trip.
Prints the mean, median and max per script and depth and the ratios large / small; the last line is one
JSON object with every figure (bench/growth.py folds this row in).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pool.embedded import EmbeddedServer, free_port  # noqa: E402
from pool.keys import Keys  # noqa: E402
from pool.lua import Scripts  # noqa: E402

DEPTHS = (10_000, 1_000_000)
CANCELLED = 100  # cancelled from the middle of the queue at each depth
CLAIMS = 50  # claims of CLAIM_BATCH through each stretch (clean, and with cancelled ids mixed in)
CLAIM_BATCH = 10
WORKER = "bench:1:growth"
QUEUE = "q"
_CHUNK = 50_000  # ids per building script call (each call blocks the private server ~0.1 s)

# Job records as enqueue.lua writes them, and their ids pushed the way it pushes them.
_BUILD = """
local qprefix, first, last, now_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local ids = {}
for i = first, last do
  local id = 'job-' .. i
  redis.call('HSET', qprefix .. 'job:' .. id, 'id', id, 'handler', 'bench.noop', 'queue', ARGV[5],
    'status', 'queued', 'attempts', 0, 'enqueued_ms', now_ms, 'args', '[]', 'kwargs', '{}')
  ids[#ids + 1] = id
  if #ids == 1000 then
    redis.call('LPUSH', KEYS[1], unpack(ids))
    ids = {}
  end
end
if #ids > 0 then
  redis.call('LPUSH', KEYS[1], unpack(ids))
end
return last - first + 1
"""


def _fill(client: redis.Redis, keys: Keys, depth: int) -> None:
    """``depth`` queued jobs job-0 (the next to start) .. job-<depth-1>."""
    build = client.register_script(_BUILD)
    for first in range(0, depth, _CHUNK):
        last = min(depth, first + _CHUNK) - 1
        build(keys=[keys.queue(QUEUE)], args=[keys.queue_prefix(QUEUE), first, last, 1000, QUEUE])


def _script_times_us(client: redis.Redis, sha: str) -> list[int]:
    """Durations (µs) of the EVALSHA calls of one script in the slow log, then empties it."""
    entries = client.slowlog_get(10_000)
    client.slowlog_reset()
    prefix = f"EVALSHA {sha}".encode()
    return [int(e["duration"]) for e in entries if bytes(e["command"]).lower().startswith(prefix.lower())]


def _summary(times_us: list[int]) -> dict[str, float]:
    """Mean, median and max: on a shared machine one call now and then is descheduled mid-script
    (SLOWLOG times are wall time), which the median shows apart from the cost itself."""
    ordered = sorted(times_us) or [0]
    return {"calls": len(times_us), "mean_us": round(sum(ordered) / len(ordered), 1),
            "p50_us": ordered[len(ordered) // 2], "max_us": ordered[-1]}


def _cancel_middle(client: redis.Redis, scripts: Scripts, depth: int) -> dict[str, float]:
    middle = depth // 2
    client.slowlog_reset()
    for i in range(middle - CANCELLED // 2, middle + CANCELLED // 2):
        scripts.cancel(QUEUE, f"job-{i}", 2000, 3_600_000, None)
    return _summary(_script_times_us(client, scripts._registered["cancel"].sha))


def _claims(client: redis.Redis, scripts: Scripts, first: int, mixed: bool) -> dict[str, float]:
    """CLAIMS claims of CLAIM_BATCH starting at job-<first>; with ``mixed`` every other job of the
    stretch is cancelled first (not the first one: a cancel at the queue's end takes it out)."""
    stretch = CLAIMS * CLAIM_BATCH * (2 if mixed else 1)
    if mixed:
        for i in range(first + 1, first + stretch, 2):
            scripts.cancel(QUEUE, f"job-{i}", 2000, 3_600_000, None)
    client.slowlog_reset()
    started = 0
    for _ in range(CLAIMS):
        started += len(scripts.claim(QUEUE, WORKER, 3000, CLAIM_BATCH, 0)[1])
    keys = Keys(scripts.keys.prefix)
    client.delete(keys.active(QUEUE, WORKER), keys.running(QUEUE, WORKER))  # as if acked: keeps them short
    return {**_summary(_script_times_us(client, scripts._registered["claim"].sha)), "started": started}


def measure(depth: int, client: redis.Redis) -> dict[str, Any]:
    """Every figure of one depth, on a freshly flushed server."""
    client.flushall()
    keys = Keys("growth")
    scripts = Scripts(client, keys)
    _fill(client, keys, depth)
    scripts.cancel(QUEUE, "warm-up", 0, 1, None)  # loads the scripts: SCRIPT LOAD stays out of the figures
    scripts.claim(QUEUE, WORKER, 0, 0, 0)
    cancel = _cancel_middle(client, scripts, depth)
    clean = _claims(client, scripts, 0, mixed=False)
    mixed = _claims(client, scripts, CLAIMS * CLAIM_BATCH, mixed=True)
    return {"depth": depth, "queue_llen": client.llen(keys.queue(QUEUE)), "cancel": cancel,
            "claim_clean": clean, "claim_mixed": mixed}


def growth_cancel() -> dict[str, Any]:
    """Row 5 of the growth table: cancel.lua at 10k and 1M queued, and claims with cancelled
    ids mixed in; ``ratio`` is large / small of the mean cancel time."""
    with tempfile.TemporaryDirectory() as workdir:
        server = EmbeddedServer(Path(workdir) / "redis", persist=False, port=free_port())
        url = server.start()
        client = redis.Redis.from_url(url)
        try:
            client.config_set("slowlog-log-slower-than", 0)
            client.config_set("slowlog-max-len", 10_000)
            small, large = (measure(depth, client) for depth in DEPTHS)
        finally:
            client.close()
            server.stop()
    ratio = large["cancel"]["mean_us"] / max(small["cancel"]["mean_us"], 0.1)
    ratio_p50 = large["cancel"]["p50_us"] / max(small["cancel"]["p50_us"], 1)
    return {"row": "cancel a queued job", "small": small, "large": large, "ratio": round(ratio, 2),
            "ratio_p50": round(ratio_p50, 2)}


def _print(result: dict[str, Any]) -> None:
    for case in (result["small"], result["large"]):
        print(f"depth {case['depth']:>9,}  (queue LLEN after: {case['queue_llen']:,})")
        for name in ("cancel", "claim_clean", "claim_mixed"):
            figures = case[name]
            extra = f"  started {figures['started']}" if "started" in figures else ""
            print(f"  {name:<12} calls {figures['calls']:>4}  mean {figures['mean_us']:>9.1f} µs  "
                  f"p50 {figures['p50_us']:>7} µs  max {figures['max_us']:>7} µs{extra}")
    print(f"cancel, large / small: mean {result['ratio']}, p50 {result['ratio_p50']}")
    print(json.dumps(result))


if __name__ == "__main__":
    _print(growth_cancel())
