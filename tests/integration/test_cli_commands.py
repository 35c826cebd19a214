"""The CLI against a real server: exit codes, job ids by prefix, the dead-letter views, and what a
failed job's stored traceback shows."""

from __future__ import annotations

import asyncio
import json
import re
import stat

import orjson
import pytest

from pool import Status, dead_letter
from pool.cli import ids, main
from pool.client import AsyncClient, Client
from pool.config import load
from pool.errors import ExitCode
from pool.keys import Keys
from pool.lua import Scripts
from pool.testing import async_wait_until, bury
from tests.conftest import pool_cli, pool_of


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    return lines[0]


@pytest.mark.parametrize("argv", [["job", "nope"], ["cancel", "nope"], ["dead", "show", "nope"],
                                  ["dead", "retry", "nope"]])
def test_an_unknown_job_exits_6(write_config, argv):
    path = write_config()
    result = pool_cli(*argv[:-1], str(path), argv[-1])
    assert result.returncode == ExitCode.NOT_FOUND == 6
    assert one_line(result.stderr).startswith("pool: no ")


@pytest.mark.parametrize("flag", ["--wait-timeout", "--timeout"])
def test_giving_up_waiting_exits_7(write_config, flag):
    """No worker serves the queue: the wait runs out; the old spelling works with a deprecation note."""
    path = write_config()
    result = pool_cli("enqueue", str(path), "tests.sample_handlers.add", "1", "2", "--wait", flag, "0.3")
    assert result.returncode == ExitCode.WAIT_TIMEOUT == 7
    lines = result.stderr.strip().splitlines()
    if flag == "--timeout":
        assert lines.pop(0) == ("pool: --timeout is deprecated, use --wait-timeout "
                                "(the job's own run limit is --job-timeout)")
    assert len(lines) == 1 and re.match(r"pool: job \w+ did not finish within 0.3s \(status: queued\)", lines[0])


def test_enqueue_to_a_queue_the_config_does_not_serve_warns_and_enqueues(write_config, r, prefix):
    path = write_config()
    result = pool_cli("enqueue", str(path), "tests.sample_handlers.add", "1", "2", "--queue", "elsewhere")
    assert result.returncode == 0
    assert one_line(result.stderr) == (f"pool: warning: {path} serves no queue 'elsewhere' (it serves default): "
                                       "the job waits until a pool that serves it runs")
    assert r.lrange(f"{prefix}:{{elsewhere}}:queue", 0, -1) == [result.stdout.strip().encode()]
    served = pool_cli("enqueue", str(path), "tests.sample_handlers.add", "1", "2", "--queue", "default")
    assert served.stderr == ""


def test_enqueue_to_an_invalid_queue_name_is_refused_without_a_warning_first(write_config):
    path = write_config()
    result = pool_cli("enqueue", str(path), "tests.sample_handlers.add", "1", "--queue", "bad queue")
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("pool: queue 'bad queue' is not a valid queue name"), result.stderr


async def test_job_and_cancel_take_a_unique_prefix(write_config, url):
    path = write_config()
    async with AsyncClient(load(path), url) as client:
        for job_id in ("pfx-abc1", "pfx-abd2", "pfx-abd3"):
            await client.enqueue("tests.sample_handlers.add", 1, 2, job_id=job_id)
    shown = pool_cli("job", str(path), "pfx-abc")
    assert shown.returncode == 0 and shown.stdout.startswith("job pfx-abc1\n"), shown.stderr
    ambiguous = pool_cli("job", str(path), "pfx-abd")
    assert ambiguous.returncode == 2
    assert one_line(ambiguous.stderr) == ("pool: job id prefix 'pfx-abd' is ambiguous: 2 jobs start with it "
                                          "(pfx-abd2, pfx-abd3); give more characters")
    cancelled = pool_cli("cancel", str(path), "pfx-abd3")
    assert cancelled.stdout.strip() == "cancelled pfx-abd3"
    by_prefix = pool_cli("cancel", str(path), "pfx-abc")
    assert by_prefix.stdout.strip() == "cancelled pfx-abc1", by_prefix.stderr
    # a cancelled job is found by prefix in its recent list
    assert json.loads(pool_cli("job", str(path), "pfx-abc", "--json").stdout)["status"] == "cancelled"


def test_job_shows_how_many_attempts_its_bounded_history_left_out(write_config, r):
    """25 failed attempts, each buried and retried from the dead set: 20 shown, 5 counted."""
    path = write_config()
    config = load(path)
    scripts = Scripts(r, Keys(config.key_prefix))
    with Client(config) as client:
        client.enqueue("tests.sample_handlers.add", 1, 2, job_id="often")
    for n in range(1, 26):
        scripts.claim("default", "w:1:x", 10 * n, 1, 0)
        scripts.ack("default", "w:1:x", "often", "dead", 10 * n + 1, 60_000, ["error", f"E{n}"],
                    history=orjson.dumps({"attempt": n, "finished_ms": 10 * n + 1, "outcome": "dead", "error": f"E{n}"}))
        scripts.retry_dead("default", "often", 10 * n + 2)
    shown = pool_cli("job", str(path), "often")
    assert "history (the last 20 of 25 attempts; 5 older not kept)" in shown.stdout, shown.stderr
    assert [line.split()[1] for line in shown.stdout.splitlines() if line.startswith("  attempt ")] == \
        [str(n) for n in range(6, 26)]
    assert json.loads(pool_cli("job", str(path), "often", "--json").stdout)["history_dropped"] == 5


async def test_an_id_that_starts_others_means_itself(write_config, url):
    path = write_config()
    config = load(path)
    async with AsyncClient(config, url) as client:
        for job_id in ("inv-4", "inv-42"):
            await client.enqueue("tests.sample_handlers.add", 1, 2, job_id=job_id)
    assert ids.resolve(config, "inv-4") == ("default", "inv-4")
    assert ids.resolve(config, "inv-42") == ("default", "inv-42")


async def test_dead_show_retry_and_purge_by_prefix_with_a_text_view(write_config, url, r):
    path = write_config()
    config = load(path)
    async with pool_of(config, url, r) as client:
        for job_id in ("dead-aaa1", "dead-bbb2"):
            await client.enqueue("tests.sample_handlers.explode", "never", job_id=job_id)
            assert (await client.wait(job_id, timeout=10)).status is Status.DEAD
        alive = await client.enqueue("tests.sample_handlers.add", 1, 2, job_id="dead-ccc3")
        await client.wait(alive.id, timeout=10)
        text = pool_cli("dead", "show", str(path), "dead-a")
        assert text.returncode == 0, text.stderr
        assert text.stdout.startswith("job dead-aaa1\n")
        assert "status    dead" in text.stdout and "traceback (last attempt)" in text.stdout
        raw = json.loads(pool_cli("dead", "show", str(path), "dead-a", "--json").stdout)
        assert (raw["id"], raw["status"]) == ("dead-aaa1", "dead")
        # a completed job is no dead job, by full id or by prefix
        assert pool_cli("dead", "show", str(path), "dead-c").returncode == ExitCode.NOT_FOUND
        listed = pool_cli("dead", "list", str(path)).stdout
        assert re.search(r"dead-aaa1 .* died=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", listed), listed
        # nor is it purged or retried: "no such dead job" by its full id, as by a prefix
        for action in ("retry", "purge"):
            refused = pool_cli("dead", action, str(path), "dead-ccc3")
            assert refused.returncode == ExitCode.NOT_FOUND, refused
            assert one_line(refused.stderr).startswith("pool: no dead job dead-ccc3")
        assert (await client.get_job("dead-ccc3")).status is Status.COMPLETED
        assert pool_cli("dead", "purge", str(path), "dead-b").stdout.strip() == "purged 1 dead job(s)"
        assert pool_cli("dead", "retry", str(path), "dead-a").stdout.strip() == "retried 1 dead job(s)"
        assert await client.get_job("dead-bbb2") is None


# -- stored tracebacks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("handler", ["tests.sample_handlers.explode", "tests.sample_handlers.async_explode"])
async def test_a_handlers_traceback_starts_at_the_handlers_frame(make_config, url, r, handler):
    async with pool_of(make_config(), url, r) as client:
        job = await client.enqueue(handler, "boom")
        failed = await client.wait(job.id, timeout=10)
    lines = failed.traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "tests/sample_handlers.py" in lines[1], failed.traceback
    assert "pool/worker/execution.py" not in failed.traceback and "concurrent/futures" not in failed.traceback


@pytest.fixture
def script_config(make_config, tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "plain.sh").write_text("#!/bin/sh\necho never\n")
    (tmp_path / "outside.sh").write_text("#!/bin/sh\necho never\n")
    (tmp_path / "outside.sh").chmod(stat.S_IRWXU)
    return make_config(scripts={"allowed_dirs": [str(folder)]}), folder, tmp_path


@pytest.mark.parametrize(("name", "error"), [
    ("scripts/plain.sh", "ScriptNotExecutable"), ("scripts/absent.sh", "ScriptNotFound"),
    ("outside.sh", "ScriptNotAllowed")])
async def test_a_refused_script_stores_no_traceback(script_config, url, r, name, error):
    config, _, base = script_config
    async with pool_of(config, url, r) as client:
        job = await client.enqueue("pool.script", str(base / name))
        failed = await client.wait(job.id, timeout=10)
    assert failed.error.startswith(f"{error}: ")
    assert failed.traceback is None


def test_a_bulk_dead_action_shows_its_progress_on_stderr(write_config, r, prefix, monkeypatch, capsys):
    """A line on stderr every PROGRESS_EVERY_PAGES pages; stdout keeps the final count alone, and
    a run of fewer pages prints nothing more than before."""
    monkeypatch.setattr(dead_letter, "DEAD_PAGE", 7)
    path = str(write_config())
    bury(r, prefix, "default", [f"d{i}" for i in range(200)], 10_000)
    assert main(["dead", "retry", path, "--all"]) == ExitCode.OK
    out, err = capsys.readouterr()
    assert out == "retried 200 dead job(s)\n"
    assert err.splitlines() == ["pool: dead retry: 70 of 200 dead job(s) handled",
                                "pool: dead retry: 140 of 200 dead job(s) handled"]
    r.delete(Keys(prefix).queue("default"))
    bury(r, prefix, "default", [f"p{i}" for i in range(60)], 10_000)
    assert main(["dead", "purge", path, "--all"]) == ExitCode.OK
    assert capsys.readouterr() == ("purged 60 dead job(s)\n", "")


async def test_purge_dead_picks_the_queue_whose_dead_set_holds_the_id(make_config, url, r):
    """The same id alive on one queue and dead on another: the dead one goes, the other stays."""
    config = make_config(queues=["first", "second"])
    async with pool_of(config, url, r) as client:
        await client.enqueue("tests.sample_handlers.add", 1, 2, job_id="twin", queue="first")
        await client.wait("twin", timeout=10, queue="first")
        await client.enqueue("tests.sample_handlers.explode", "x", job_id="twin", queue="second", max_retries=0)
        assert (await client.wait("twin", timeout=10, queue="second")).status is Status.DEAD
        assert await client.purge_dead(["twin"]) == 1
        assert await client.get_job("twin", "second") is None
        assert (await client.get_job("twin", "first")).status is Status.COMPLETED


async def test_events_skips_a_message_that_is_not_an_event(make_config, url, r, caplog):
    """Anyone who may publish can send garbage on the events channel; the tail goes on."""
    async with pool_of(make_config(), url, r) as client:
        channel = client.keys.events("default")
        stream = client.events()
        first = asyncio.ensure_future(anext(stream))

        async def subscribed() -> bool:
            return r.pubsub_numsub(channel)[0][1] >= 1
        await async_wait_until(subscribed, timeout=10, message="events to subscribe")
        r.publish(channel, b"garbage")
        r.publish(channel, b'{"x": 1}')
        job = await client.enqueue("tests.sample_handlers.add", 1, 2)
        async with asyncio.timeout(10):
            event = await first
        await stream.aclose()
    assert (event["id"], event["status"]) == (job.id, "completed")
    assert sum("is not a pool event" in record.getMessage() for record in caplog.records) == 2


def test_events_with_redis_down_exits_3_at_once(tmp_path):
    from pool.embedded import free_port

    path = tmp_path / "pool.yaml"
    path.write_text(f"redis: {{url: 'redis://127.0.0.1:{free_port()}/0'}}\n")
    result = pool_cli("events", str(path), timeout=30)
    assert result.returncode == ExitCode.UNAVAILABLE
    assert one_line(result.stderr).startswith("pool: cannot reach Redis")


def test_status_watch_json_keeps_stdout_for_json_during_an_outage(tmp_path):
    import subprocess
    import sys

    from pool.embedded import free_port
    from pool.testing import wait_until
    from tests.conftest import cli_env

    path = tmp_path / "pool.yaml"
    path.write_text(f"redis: {{url: 'redis://127.0.0.1:{free_port()}/0'}}\n")
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "pool", "status", str(path), "--watch", "--json",
                                 "--interval", "0.2"], stdout=stdout, stderr=stderr, env=cli_env())
        try:
            wait_until(lambda: err.read_text().count("\n") >= 2, timeout=30, message="two outage lines")
        finally:
            proc.kill()
            proc.wait()
    assert out.read_text() == ""
    assert err.read_text().startswith("pool: cannot reach Redis")


# -- job ids are unique per queue (issue 15, point 12) -------------------------------------------------------


@pytest.mark.parametrize("argv", [["job"], ["cancel"], ["dead", "show"]])
async def test_an_id_on_two_queues_needs_queue(write_config, url, argv):
    """The same --job-id on two queues is two jobs (ids are unique per queue); a command without
    --queue names both queues and exits 2 instead of picking one, and with --queue it acts on that one."""
    path = write_config(queues=["a", "b"])
    for queue in ("a", "b"):
        made = pool_cli("enqueue", str(path), "tests.sample_handlers.add", "1", "2", "--queue", queue,
                        "--job-id", "invoice-42")
        assert (made.returncode, made.stdout.strip()) == (0, "invoice-42")
    async with AsyncClient(load(path), url) as client:
        assert {(await client.get_job("invoice-42", queue=q)).queue for q in ("a", "b")} == {"a", "b"}
    result = pool_cli(*argv, str(path), "invoice-42")
    assert result.returncode == ExitCode.USAGE == 2
    assert one_line(result.stderr) == ("pool: job id invoice-42 exists on queues a, b (ids are unique per queue): "
                                       "name the queue (--queue, or queue=)")
    if argv == ["job"]:
        shown = pool_cli("job", str(path), "invoice-42", "--queue", "b", "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["queue"] == "b"
