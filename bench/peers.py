"""The same workloads on pool and on arq, SAQ, RQ, Celery, Dramatiq, taskiq and huey, side by side.

    pip install -e '.[bench]'   # plus `pip install --no-deps arq` (see pyproject.toml)
    python bench/peers.py --jobs 20000 --processes 2 --concurrency 50 --rounds 3 [--markdown]

One private valkey-server serves the whole run (every system over TCP to 127.0.0.1), flushed
before each measurement. Runs are interleaved: for each round, for each workload, for each system
(pool first), so a noisy moment on the host spreads over all of them; figures are medians over
the rounds. Each measurement:

- enqueue: N jobs from this one process, the fastest documented way the system offers (bulk
  where it has one), with no worker running (jobs/s; the Redis CPU it cost is in the JSON);
- processing: the system's own worker CLI is started as a subprocess (P processes x C
  concurrency, mapped as each adapter's docstring says) on the N queued jobs; jobs/s is
  N / (first job start .. last job finish). Redis CPU (INFO used_cpu_sys + used_cpu_user) and
  the workers' Python CPU (the whole process tree, from /proc, reaped children included) are
  taken from the first job's start to the last finish, per job; peak RSS is the largest VmHWM
  of any process of the tree;
- latency: then, on the same now idle workers, single jobs one at a time: from just before the
  enqueue call to the task's first line (CLOCK_MONOTONIC on both sides), p50 / p99.

Every system runs the identical task body (bench/peer_tasks/body.py): it counts into a
per-process shared-memory file, never into Redis. Workloads: noop, sleep (10 ms: asyncio.sleep
on asyncio systems, time.sleep on thread and process ones), payload (a 10 KB argument).

The table shows each figure with how many times better pool is (>1: pool better; rates are
pool / peer, costs peer / pool). A system that fails (import error, crash, stall) is reported
with its reason and the run goes on. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import importlib.metadata
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT, PrivateServer, add_shape_arguments, percentile
from bench.peer_tasks.base import CONCURRENCY_ENV, URL_ENV, Peer, Shape
from bench.peer_tasks.body import COUNTER_DIR_ENV, read_record
from bench.throughput import CLOCK_TICKS, children, peak_rss

SYSTEMS = ["pool", "arq", "saq", "rq", "celery", "dramatiq", "taskiq", "huey"]
WARM_UP_JOBS = 10  # enqueued first, untimed: connections and scripts are set up
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
_libc = ctypes.CDLL(None, use_errno=True)


# Stops the server if the bench dies without its finally blocks (SIGKILL): reads until the bench's
# end of the pipe closes, however the bench ends.
WATCHDOG = """
import os, signal, sys
sys.stdin.buffer.read()
try:
    if b"valkey-server" in open(f"/proc/{sys.argv[1]}/cmdline", "rb").read():
        os.kill(int(sys.argv[1]), signal.SIGTERM)
except OSError:
    pass
"""


class Server(PrivateServer):
    """The run's one server. Every system, pool included, talks to it over TCP: PrivateServer's
    default is its unix socket, which some peers' URL parsers do not take."""

    def __enter__(self) -> Server:
        super().__enter__()
        self.watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(self.server.pid)],
                                         stdin=subprocess.PIPE, start_new_session=True)
        self.redis.close()
        self.url = f"redis://127.0.0.1:{self.server.port}/0"
        self.redis = redis.Redis.from_url(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            assert self.watchdog.stdin is not None
            self.watchdog.stdin.close()
            self.watchdog.wait()

    @property
    def own_pids(self) -> frozenset[int]:
        """The bench's children that are not a system's: the server and its watchdog."""
        return frozenset({self.server.pid or 0, self.watchdog.pid})

    def flush(self) -> None:
        self.redis.flushall()

    def cpu_s(self) -> float:
        info = self.redis.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def version(self) -> str:
        info = self.redis.info("server")
        return f"valkey {info['valkey_version']}" if "valkey_version" in info else f"redis {info['redis_version']}"


# ---------------------------------------------------------------- processes


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (a process that exits meanwhile is skipped)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        try:
            kids = children(pending.pop())
        except (FileNotFoundError, ProcessLookupError):
            continue
        found += kids
        pending += kids
    return found


def process_cpu_s(pid: int) -> float:
    """User + system CPU of a process and of its children it has reaped (RQ's work horses)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def is_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def die_with_parent() -> None:
    """In each worker CLI before exec: SIGTERM if the bench dies, even by SIGKILL."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Workers:
    """A system's worker CLIs, each in its own session so that no terminal signal reaches them
    and each can be stopped as a whole; the bench is a child subreaper, so whatever they fork
    that outlives its parent is re-parented to the bench and still found and stopped."""

    def __init__(self, commands: list[list[str]], env: dict[str, str], cwd: Path, log: Path,
                 keep: frozenset[int]) -> None:
        self.log, self.keep = log, keep  # keep: the bench's other children
        self.processes: list[subprocess.Popen[bytes]] = []
        with open(log, "wb") as out:
            for command in commands:
                self.processes.append(subprocess.Popen(
                    command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=die_with_parent,
                ))

    def tree(self) -> list[int]:
        pids = [p.pid for p in self.processes]
        return pids + [kid for pid in pids for kid in descendants(pid)]

    def cpu_s(self) -> float:
        return sum(process_cpu_s(pid) for pid in self.tree())

    def peak_rss(self) -> int:
        sizes = []
        for pid in self.tree():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                sizes.append(peak_rss(pid))
        return max(sizes, default=0)

    def check(self) -> None:
        """Raise if any worker CLI has exited: a crash, or a refusal to start."""
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{Path(str(process.args[0])).name} exited with {process.returncode}: {self.tail()}")

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "no output"

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM each CLI's process group (as Ctrl-C or systemd reach all of it: SAQ's main process
        waits for its worker processes, which it does not signal), then SIGKILL what is left."""
        tree = self.tree()
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        kill_strays({pid for pid in tree if is_running(pid)}, keep=self.keep)


def kill_strays(pids: set[int], keep: frozenset[int]) -> None:
    """SIGKILL and reap these processes and every orphan re-parented to the bench, but ``keep``."""
    pids |= set(descendants(os.getpid()))
    keep |= {kid for kept in keep for kid in descendants(kept)}
    for pid in pids - keep:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # an orphan re-parented to the bench is the bench's to reap


# ---------------------------------------------------------------- counters


class Counters:
    """The sum over a run's counter files (bench/peer_tasks/body.py)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def records(self) -> list[tuple[int, int, int, int]]:
        found = (read_record(path) for path in self.folder.iterdir())
        return [record for record in found if record is not None]

    def count(self) -> int:
        return sum(record[0] for record in self.records())

    def started(self) -> bool:
        return any(record[1] for record in self.records())

    def last_start(self) -> int:
        return max(record[3] for record in self.records())

    def window_s(self) -> float:
        records = [r for r in self.records() if r[0]]
        return (max(r[2] for r in records) - min(r[1] for r in records)) / 1e9

    def start_spread_ms(self) -> float:
        """How far apart the worker processes took their first job (staggered start-ups)."""
        firsts = [r[1] for r in self.records() if r[1]]
        return (max(firsts) - min(firsts)) / 1e6


def wait_for(done: Callable[[], bool], progress: Callable[[], int], workers: Workers, what: str,
             stall_s: float, poll_s: float = 0.002) -> None:
    """Wait until ``done()``; fail if the workers exit or ``progress()`` stands still ``stall_s``."""
    last, moved = progress(), time.monotonic()
    while not done():
        workers.check()
        now = progress()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            raise TimeoutError(f"{what}: nothing finished for {stall_s:.0f}s ({now} done)")
        time.sleep(poll_s)


# ---------------------------------------------------------------- one measurement


class Bench:
    def __init__(self, server: Server, options: argparse.Namespace) -> None:
        self.server, self.options = server, options
        self.shape = Shape(options.processes, options.concurrency, server)
        self.runs = 0

    def measure(self, peer: Peer, workload: str) -> dict[str, float]:
        """Enqueue N jobs, start the workers, time them, then sample the idle workers' latency."""
        self.server.flush()
        self.runs += 1
        folder = self.shape.workdir / f"run-{self.runs}-{peer.name}-{workload}"
        (folder / "counters").mkdir(parents=True)
        counters = Counters(folder / "counters")
        peer.open()
        try:
            figures = self.enqueue(peer, workload)
            env = dict(os.environ, **{COUNTER_DIR_ENV: str(counters.folder)})
            workers = Workers(peer.worker_commands(), env, folder, folder / "workers.log", keep=self.server.own_pids)
            try:
                figures |= self.process(workers, counters)
                figures |= self.latency(peer, workload, workers, counters)
                # runs beyond the jobs sent: a job delivered twice shows here
                figures["extra_runs"] = counters.count() - self.options.jobs - figures.get("latency_samples", 0)
            finally:
                workers.stop()
        finally:
            peer.close()
        return figures

    def enqueue(self, peer: Peer, workload: str) -> dict[str, float]:
        jobs = self.options.jobs
        peer.enqueue(workload, WARM_UP_JOBS)
        cpu0, began = self.server.cpu_s(), time.perf_counter()
        peer.enqueue(workload, jobs - WARM_UP_JOBS)
        seconds, cpu = time.perf_counter() - began, self.server.cpu_s() - cpu0
        return {"enqueue_per_s": (jobs - WARM_UP_JOBS) / seconds,
                "enqueue_redis_us": cpu / (jobs - WARM_UP_JOBS) * 1e6}

    def process(self, workers: Workers, counters: Counters) -> dict[str, float]:
        jobs, stall = self.options.jobs, self.options.stall
        wait_for(counters.started, lambda: 0, workers, "the first job to start", stall, poll_s=0.001)
        python0, redis0 = workers.cpu_s(), self.server.cpu_s()
        wait_for(lambda: counters.count() >= jobs, counters.count, workers, f"{jobs} jobs", stall, poll_s=0.005)
        python_cpu, redis_cpu = workers.cpu_s() - python0, self.server.cpu_s() - redis0
        return {
            "jobs_per_s": jobs / max(counters.window_s(), 1e-6), "redis_us_per_job": redis_cpu / jobs * 1e6,
            "python_us_per_job": python_cpu / jobs * 1e6, "peak_worker_mib": workers.peak_rss() / 2**20,
            "start_spread_ms": counters.start_spread_ms(),
        }

    def latency(self, peer: Peer, workload: str, workers: Workers, counters: Counters) -> dict[str, float]:
        """Single jobs on the idle workers, each sent once the previous one has finished.

        The pause between them is 5 ms (every worker back to waiting) plus a random wait of up to
        twice the last latency: a system that polls on a period (arq every 0.5 s) would otherwise
        always get the next job just after a poll, and look slower than it is on average.
        """
        samples: list[float] = []
        budget_end = time.monotonic() + self.options.latency_budget
        while len(samples) < self.options.latency and time.monotonic() < budget_end:
            samples.append(self.one_job(peer, workload, workers, counters))
            time.sleep(0.005 + random.uniform(0, min(1.0, 2 * samples[-1] / 1000)))
        if not samples:
            return {}
        return {"latency_p50_ms": percentile(samples, 50), "latency_p99_ms": percentile(samples, 99),
                "latency_samples": len(samples)}

    def one_job(self, peer: Peer, workload: str, workers: Workers, counters: Counters) -> float:
        """Milliseconds from just before the enqueue call to the job's start."""
        before = counters.count()
        sent = time.monotonic_ns()
        peer.enqueue_one(workload)
        wait_for(lambda: counters.count() > before, lambda: 0, workers, "a single job", self.options.stall,
                 poll_s=0.0005)
        return (counters.last_start() - sent) / 1e6


# ---------------------------------------------------------------- the run


def load_adapters(systems: list[str]) -> dict[str, type[Peer] | str]:
    """Each system's adapter class, or why it cannot be imported (that system then fails alone)."""
    adapters: dict[str, type[Peer] | str] = {}
    for name in systems:
        try:
            adapters[name] = importlib.import_module(f"bench.peer_tasks.{name}_peer").Adapter
        except Exception as exc:
            adapters[name] = reason(exc)
    return adapters


def reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:300]


def run(bench: Bench, adapters: dict[str, type[Peer] | str], workloads: list[str]) -> dict[str, Any]:
    """Interleaved: for each round, for each workload, for each system. A failure is recorded."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {w: {s: [] for s in adapters} for w in workloads}
    for round_ in range(bench.options.rounds):
        for workload in workloads:
            for name, adapter in adapters.items():
                began = time.monotonic()
                try:
                    if isinstance(adapter, str):
                        raise ImportError(adapter)
                    figures: dict[str, Any] = bench.measure(adapter(bench.shape), workload)
                except Exception as exc:
                    figures = {"failed": reason(exc)}
                results[workload][name].append(figures)
                print(f"round {round_ + 1} {workload:<8} {name:<9} {time.monotonic() - began:6.1f}s  "
                      f"{progress_line(figures)}", file=sys.stderr, flush=True)
    return results


def progress_line(figures: dict[str, Any]) -> str:
    if "failed" in figures:
        return f"FAILED {figures['failed']}"
    return f"{figures['jobs_per_s']:,.0f} jobs/s, p50 {figures.get('latency_p50_ms', float('nan')):.2f} ms"


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "failed" not in r]
    failures = [r["failed"] for r in runs if "failed" in r]
    if not good:
        return {"failed": failures[0] if failures else "not run"}
    keys = sorted({k for r in good for k in r})
    summary: dict[str, Any] = {k: statistics.median(r[k] for r in good if k in r) for k in keys}
    summary["rounds_ok"] = len(good)
    if failures:
        summary["failures"] = failures
    return summary


# ---------------------------------------------------------------- output

# (key, heading, format, True when higher is better)
COLUMNS = [
    ("jobs_per_s", "jobs/s", "{:,.0f}", True),
    ("redis_us_per_job", "Redis µs/job", "{:.1f}", False),
    ("python_us_per_job", "Python µs/job", "{:.0f}", False),
    ("peak_worker_mib", "peak MiB", "{:.0f}", False),
    ("enqueue_per_s", "enqueue/s", "{:,.0f}", True),
    ("latency_p50_ms", "p50 ms", "{:.2f}", False),
    ("latency_p99_ms", "p99 ms", "{:.2f}", False),
]


def advantage(pool: dict[str, Any], peer: dict[str, Any], key: str, higher_better: bool) -> float | None:
    """How many times better pool is on this figure (>1: pool better)."""
    a, b = pool.get(key), peer.get(key)
    if not a or not b:
        return None
    return a / b if higher_better else b / a


def rows(summary: dict[str, dict[str, Any]]) -> Iterator[list[str]]:
    pool = summary.get("pool", {})
    for name, figures in summary.items():
        if "failed" in figures:
            yield [name, f"failed: {figures['failed']}"]
            continue
        ratio = advantage(pool, figures, "jobs_per_s", True)
        cells = [name, COLUMNS[0][2].format(figures["jobs_per_s"]), "-" if ratio is None else f"{ratio:.2f}"]
        for key, _, fmt, higher_better in COLUMNS[1:]:
            if key not in figures:
                cells.append("-")
                continue
            cell = fmt.format(figures[key])
            ratio = advantage(pool, figures, key, higher_better) if name != "pool" else None
            cells.append(cell if ratio is None else f"{cell} ({ratio:.1f})")
        yield cells


def headings() -> list[str]:
    return ["system", COLUMNS[0][1], "pool/peer", *(heading for _, heading, _, _ in COLUMNS[1:])]


def text_table(summary: dict[str, dict[str, Any]]) -> str:
    table = [headings(), *rows(summary)]
    widths = [max(len(r[i]) for r in table if len(r) > i and len(r) == len(table[0])) for i in range(len(table[0]))]
    lines = []
    for row in table:
        if len(row) < len(widths):
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
        else:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def markdown_table(summary: dict[str, dict[str, Any]]) -> str:
    head = headings()
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---", *["---:"] * (len(head) - 1)]) + "|"]
    for row in rows(summary):
        lines.append("| " + " | ".join(row + [""] * (len(head) - len(row))) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def describe(adapters: dict[str, type[Peer] | str]) -> tuple[dict[str, str], dict[str, str]]:
    """The installed versions of each system's distributions, and how each maps P x C."""
    versions, mappings = {}, {}
    for name, adapter in adapters.items():
        if isinstance(adapter, str):
            mappings[name] = f"not loaded: {adapter}"
            continue
        mappings[name] = f"{adapter.mapping}; enqueue: {adapter.enqueue_path}"
        for dist in adapter.dists:
            versions[dist] = importlib.metadata.version(dist)
    versions["redis-py"] = importlib.metadata.version("redis")
    return versions, mappings


def report(options: argparse.Namespace, header: dict[str, Any], results: dict[str, Any]) -> None:
    summaries = {w: {s: medians(runs) for s, runs in by_system.items()} for w, by_system in results.items()}
    print(f"{header['cpus']} CPUs ({header['cpu_model']}), Python {header['python']}, {header['server']}; "
          + ", ".join(f"{d} {v}" for d, v in header["versions"].items()))
    print(f"{options.jobs} jobs per run, {options.processes} processes x {options.concurrency} concurrency, "
          f"median of {options.rounds} round(s); (r) after a figure: how many times better pool is "
          "(>1: pool better; rates pool/peer, costs peer/pool)")
    for name, mapping in header["mappings"].items():
        print(f"- **{name}**: {mapping}" if options.markdown else f"  {name:<9} {mapping}")
    for workload, summary in summaries.items():
        print(f"\n{workload}")
        print(markdown_table(summary) if options.markdown else text_table(summary))
    print(json.dumps({**header, "jobs": options.jobs, "processes": options.processes,
                      "concurrency": options.concurrency, "rounds": options.rounds,
                      "latency_count": options.latency, "workloads": summaries, "runs": results}))


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shape_arguments(parser)
    parser.add_argument("--latency", type=int, default=200, help="single jobs per latency measurement")
    parser.add_argument("--latency-budget", type=float, default=30.0,
                        help="seconds at most for one latency measurement (slow pollers take fewer samples)")
    parser.add_argument("--stall", type=float, default=60.0, help="fail a run when no job finishes for this long")
    parser.add_argument("--workloads", default="noop,sleep,payload")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="pool is always measured first")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables, for README.md")
    options = parser.parse_args()
    systems = [s for s in options.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))} (known: {', '.join(SYSTEMS)})")
    options.systems = sorted(set(systems), key=SYSTEMS.index)
    options.workloads = [w for w in options.workloads.split(",") if w]
    if options.jobs <= WARM_UP_JOBS:
        parser.error(f"--jobs must be more than {WARM_UP_JOBS}")
    return options


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the bench like Ctrl-C does: through every finally that stops a process."""
    raise KeyboardInterrupt


def main() -> None:
    options = parse_options()
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of the workers become ours to stop
    signal.signal(signal.SIGTERM, interrupt)
    with tempfile.TemporaryDirectory(prefix="pool-peers-") as workdir, \
            Server(Path(workdir), options.processes, options.concurrency) as server:
        try:
            # before any adapter is imported: its module builds its app object from these
            os.environ.update({URL_ENV: server.url, CONCURRENCY_ENV: str(options.concurrency),
                               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
            adapters = load_adapters(options.systems)
            versions, mappings = describe(adapters)
            header = {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version(),
                      "server": server.version(), "versions": versions, "mappings": mappings}
            results = run(Bench(server, options), adapters, options.workloads)
        finally:
            kill_strays(set(), keep=server.own_pids)
    report(options, header, results)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every worker and the server were stopped")
