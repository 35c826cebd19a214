"""The CLI turns every expected error into one line on stderr and a documented exit code."""

from __future__ import annotations

import pytest

from pool.cli import main
from pool.embedded import free_port


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def config_file(tmp_path):
    def write(text: str):
        path = tmp_path / "pool.yaml"
        path.write_text(text)
        return str(path)
    return write


@pytest.mark.parametrize("command", ["run", "status", "enqueue"])
def test_config_typo_exits_2_with_one_line(capsys, config_file, command):
    path = config_file("concurency: 4\nhandlers: [examples.tasks]\n")
    argv = [command, path] + (["examples.tasks.add"] if command == "enqueue" else [])
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert one_line(err) == "pool: pool.yaml: concurency: unknown key (did you mean 'concurrency'?)"


def test_missing_handler_module_stops_run_with_one_line(capsys, config_file):
    path = config_file("handlers: [examples.tasks, reports_zz.monthly]\n")
    code, _, err = run(capsys, "run", path)
    assert code == 2
    assert one_line(err) == (
        "pool: handler 'reports_zz.monthly' not found: no module named 'reports_zz' "
        "(is it on PYTHONPATH, or next to pool.yaml?)"
    )


def test_missing_handler_function_stops_run_with_one_line(capsys, config_file):
    code, _, err = run(capsys, "run", config_file("handlers: [examples.tasks.ad]\n"))
    assert code == 2
    assert one_line(err) == "pool: handler 'examples.tasks.ad' not found: module 'examples.tasks' has no 'ad'"


def test_run_without_handlers_is_a_usage_error(capsys, config_file):
    code, _, err = run(capsys, "run", config_file("processes: 1\n"))
    assert code == 2
    assert "handlers: list at least one handler" in one_line(err)


def test_missing_config_file_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "status", str(tmp_path / "absent.yaml"))
    assert code == 2
    assert one_line(err).endswith("absent.yaml: no such file (pass the path of your pool.yaml)")


def test_unknown_command_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["launch", "pool.yaml"])
    assert info.value.code == 2
    assert one_line(capsys.readouterr().err).startswith("pool: argument COMMAND: invalid choice: 'launch'")


def test_bad_kwargs_json_exits_2(capsys, config_file):
    path = config_file(f"redis: {{url: 'redis://127.0.0.1:{free_port()}/0'}}\n")
    code, _, err = run(capsys, "enqueue", path, "examples.tasks.add", "--kwargs", "[1]")
    assert code == 2
    assert one_line(err).startswith("pool: --kwargs must be a JSON object")


@pytest.mark.parametrize("command", ["status", "enqueue", "job"])
def test_unreachable_redis_exits_3_with_one_line(capsys, config_file, command):
    """Against a port nobody listens on: one line naming the address, and exit code 3."""
    port = free_port()
    path = config_file(f"redis:\n  url: redis://user:hunter2@127.0.0.1:{port}/0\n  connect_timeout: 1s\n")
    extra = {"status": [], "enqueue": ["examples.tasks.add", "1", "2"], "job": ["abc"]}[command]
    code, _, err = run(capsys, command, path, *extra)
    assert code == 3
    line = one_line(err)
    assert line.startswith(f"pool: cannot reach Redis at redis://user:***@127.0.0.1:{port}/0: ")
    assert "hunter2" not in err


def test_embedded_server_not_running_is_explained(capsys, config_file):
    path = config_file("handlers: [examples.tasks]\n")
    code, _, err = run(capsys, "status", path)
    assert code == 3
    assert "the embedded Redis of pool.yaml is not running" in one_line(err)
    assert f"start the pool with `pool run {path}`" in err  # the path as given, not only its name


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "pool enqueue pool.yaml examples.tasks.add 1 2 --wait" in out
    assert "exit codes:" in out


@pytest.mark.parametrize("interval", ["0", "-1", "soon"])
def test_watch_interval_must_be_positive(capsys, config_file, interval):
    path = config_file("handlers: [examples.tasks]\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["status", path, "--watch", "--interval", interval])
    assert exit_info.value.code == 2
    assert "argument --interval: must be a number of seconds above 0" in one_line(capsys.readouterr().err)
