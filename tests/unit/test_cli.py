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


@pytest.mark.parametrize("interval", ["0", "-1", "soon", "inf", "nan", "1e306"])
def test_watch_interval_must_be_positive_and_finite(capsys, config_file, interval):
    path = config_file("handlers: [examples.tasks]\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["status", path, "--watch", "--interval", interval])
    assert exit_info.value.code == 2
    assert "argument --interval: must be a number of seconds from 0.001 to 3153600000 (36500d (100 years))" in \
        one_line(capsys.readouterr().err)


# -- conventions: --version, bare `pool`, completion --------------------------------------------------


def test_version_prints_the_installed_distribution_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pool {metadata.version('pool-jobs')}"


def test_bare_pool_prints_the_help_and_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pool ")
    assert "exit codes:" in out


def test_bash_completion_names_every_subcommand(capsys):
    code, out, _ = run(capsys, "completion", "bash")
    assert code == 0
    assert "-F _shtab_pool pool" in out.splitlines()[-1]  # `complete -o ... -F _shtab_pool pool`
    assert "_shtab_pool_status_pos_0_COMPGEN=_shtab_compgen_files" in out  # CONFIG completes file names
    unquoted = out.replace("'", "")  # shtab 1.7 quotes each word, later versions do not
    assert "_shtab_pool_subparsers=(run enqueue status job jobs health dead cancel events completion)" in unquoted
    assert "_shtab_pool_dead_subparsers=(list show retry purge)" in unquoted


def test_zsh_completion_is_generated(capsys):
    code, out, _ = run(capsys, "completion", "zsh")
    assert code == 0 and out.startswith("#compdef pool")


def test_help_documents_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert ("exit codes: 0 ok, 1 job failed (or unhealthy), 2 bad config or usage, 3 Redis unreachable, "
            "6 no such job, 7 gave up waiting (--wait-timeout)") in out


# -- --wait-timeout -----------------------------------------------------------------------------------


def test_wait_timeout_without_wait_is_refused(capsys, config_file):
    path = config_file("handlers: [examples.tasks]\n")
    code, _, err = run(capsys, "enqueue", path, "examples.tasks.add", "1", "--wait-timeout", "5")
    assert code == 2
    assert one_line(err) == "pool: --wait-timeout needs --wait (the job's own run limit is --job-timeout)"


def test_old_timeout_spelling_is_deprecated_and_still_needs_wait(capsys, config_file):
    path = config_file("handlers: [examples.tasks]\n")
    code, _, err = run(capsys, "enqueue", path, "examples.tasks.add", "1", "--timeout", "5")
    assert code == 2
    assert err.splitlines() == [
        "pool: --timeout is deprecated, use --wait-timeout (the job's own run limit is --job-timeout)",
        "pool: --timeout needs --wait (the job's own run limit is --job-timeout)",  # the flag as typed
    ]


# -- CONFIG: optional, POOL_CONFIG, ./pool.yaml ---------------------------------------------------------

TYPO = "concurency: 4\nhandlers: [examples.tasks]\n"


def test_pool_config_names_the_config_when_it_is_left_out(capsys, config_file, monkeypatch, tmp_path):
    path = config_file(TYPO)
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv("POOL_CONFIG", path)
    code, _, err = run(capsys, "status")
    assert code == 2
    assert one_line(err) == "pool: pool.yaml: concurency: unknown key (did you mean 'concurrency'?)"


def test_enqueue_without_config_takes_the_first_word_as_the_handler(capsys, config_file, monkeypatch):
    """`pool enqueue HANDLER ARGS` with $POOL_CONFIG: the handler is not mistaken for CONFIG."""
    monkeypatch.setenv("POOL_CONFIG", config_file(f"redis: {{url: 'redis://127.0.0.1:{free_port()}/0'}}\n"))
    code, _, err = run(capsys, "enqueue", "examples.tasks.add", "1", "--kwargs", "[1]")
    assert code == 2
    assert one_line(err).startswith("pool: --kwargs must be a JSON object")


def test_pool_yaml_in_the_current_folder_is_the_default(capsys, config_file, monkeypatch, tmp_path):
    config_file(TYPO)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POOL_CONFIG", raising=False)
    code, _, err = run(capsys, "job", "abc123")
    assert code == 2
    assert "concurency: unknown key" in one_line(err)


def test_no_config_anywhere_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POOL_CONFIG", raising=False)
    code, _, err = run(capsys, "dead", "list")
    assert code == 2
    assert one_line(err) == ("pool: no config: pass its path (pool COMMAND CONFIG ...), set POOL_CONFIG, "
                             "or run where pool.yaml is")


@pytest.mark.parametrize(("words", "expected"), [
    (["pool.yaml", "examples.tasks.add", "1"], ("pool.yaml", ["examples.tasks.add", "1"])),
    (["deploy/prod.yml", "abc"], ("deploy/prod.yml", ["abc"])),
    (["examples.tasks.add", "1"], (None, ["examples.tasks.add", "1"])),
    (["5d1f0c"], (None, ["5d1f0c"])),
    ([], (None, [])),
])
def test_first_word_is_config_only_when_it_looks_like_one(words, expected):
    from pool.cli.parser import split_config

    assert split_config(words) == expected


def test_an_existing_file_is_config_whatever_its_name(tmp_path):
    from pool.cli.parser import split_config

    path = tmp_path / "settings"
    path.write_text("{}\n")
    assert split_config([str(path), "abc"]) == (str(path), ["abc"])


@pytest.mark.parametrize(("argv", "expected"), [
    (["enqueue", "pool.yaml", "--queue", "q", "examples.tasks.add", "1", "-2"],
     {"config": "pool.yaml", "handler": "examples.tasks.add", "args": ["1", "-2"], "queue": "q"}),
    (["enqueue", "pool.yaml", "--queue", "q", "h", "--", "-x", "--queue"],
     {"handler": "h", "args": ["-x", "--queue"], "queue": "q"}),
    (["job", "pool.yaml", "--json", "5d1f"], {"config": "pool.yaml", "job_id": "5d1f", "json": True}),
    (["dead", "show", "pool.yaml", "--json", "5d1f"], {"job_id": "5d1f", "json": True}),
    (["cancel", "pool.yaml", "--queue", "q", "5d1f"], {"job_id": "5d1f", "queue": "q"}),
    (["dead", "retry", "pool.yaml", "a", "--queue", "q", "b"], {"job_ids": ["a", "b"], "queue": "q"}),
])
def test_words_after_an_option_still_count(argv, expected):
    """argparse fills a list positional from its first run of words only; an option in between
    used to turn the rest into 'unrecognized arguments'."""
    from pool.cli.parser import parse

    options = parse(argv)
    assert {name: getattr(options, name) for name in expected} == expected


def test_an_unknown_option_among_the_words_is_still_refused(capsys):
    from pool.cli.parser import parse

    with pytest.raises(SystemExit) as info:
        parse(["enqueue", "pool.yaml", "--queue", "q", "h", "--bogus"])
    assert info.value.code == 2
    assert one_line(capsys.readouterr().err).startswith("pool: unrecognized arguments: --bogus")


@pytest.mark.parametrize("argv", [["job", "pool.yaml", ""], ["cancel", "pool.yaml", " "],
                                  ["dead", "purge", "pool.yaml", "ok", ""], ["dead", "show", "pool.yaml", ""]])
def test_an_empty_job_id_is_refused(capsys, config_file, argv):
    """Every id starts with "": an unset variable would act on whichever job happens to be alone."""
    argv[argv.index("pool.yaml")] = config_file("{}\n")
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "a job id is empty (an unset shell variable?)" in one_line(err)


def test_dead_ids_and_all_together_are_refused(capsys, config_file):
    code, _, err = run(capsys, "dead", "purge", config_file("{}\n"), "abc", "--all")
    assert code == 2
    assert one_line(err) == "pool: pool dead purge: name job ids or --all, not both"


def test_job_needs_exactly_one_id(capsys, config_file):
    code, _, err = run(capsys, "job", config_file("{}\n"), "a", "b")
    assert code == 2
    assert one_line(err) == "pool: pool job: name exactly one job id (got 2: a b)"


# -- pool run overrides -----------------------------------------------------------------------------------


def test_run_overrides_replace_processes_concurrency_and_queues(tmp_path):
    from pool.cli.commands import _run_overrides
    from pool.cli.parser import parse
    from pool.config import from_mapping

    (tmp_path / "pool.yaml").write_text("{}\n")
    options = parse(["run", str(tmp_path / "pool.yaml"), "--processes", "3", "--concurrency", "5",
                     "--queues", "mail,default"])
    config = from_mapping({"processes": 1, "concurrency": 2, "handlers": ["examples.tasks"],
                           "queues": [{"name": "default", "weight": 4}, {"name": "mail", "rate_limit": "10/s"},
                                      "other"]}, tmp_path / "pool.yaml", environ={})
    changed = _run_overrides(options)(config)
    assert (changed.processes, changed.concurrency, changed.queues) == (3, 5, ("mail", "default"))
    assert changed.queue_weights == {"mail": 1, "default": 4}
    assert set(changed.rate_limits) == {"mail"}


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--processes", "0", "argument --processes: must be an integer from 1 to 512 (got '0')"),
    ("--concurrency", "many", "argument --concurrency: must be an integer from 1 to 10000 (got 'many')"),
    ("--queues", "a,{b}", "argument --queues: queue '{b}' is not a valid queue name"),
    ("--queues", "a,a", "argument --queues: names a queue twice (got 'a,a')"),
])
def test_bad_run_overrides_exit_2(capsys, config_file, option, value, message):
    with pytest.raises(SystemExit) as info:
        main(["run", config_file("handlers: [examples.tasks]\n"), option, value])
    assert info.value.code == 2
    assert one_line(capsys.readouterr().err).startswith(f"pool: {message}")


# -- times in UTC ---------------------------------------------------------------------------------------------


def test_event_lines_show_utc_times(monkeypatch):
    import time

    from pool.cli.commands import _event_line

    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30: a local time would read 06:00:00
    time.tzset()
    try:
        line = _event_line({"ts_ms": 1_764_000_000_000 + 1_800_000, "queue": "q", "status": "completed",
                            "handler": "h", "id": "x"})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line.startswith("16:30:00Z  q  completed")


# -- numbers on the command line take the config's ranges (issue 15, point 13) -------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["enqueue", "examples.tasks.add", "--job-timeout", "1e306"],
     "argument --job-timeout: must be a number of seconds from 0.001 to 3153600000"),
    (["enqueue", "examples.tasks.add", "--job-timeout", "inf"],
     "argument --job-timeout: must be a number of seconds from 0.001 to 3153600000"),
    (["enqueue", "examples.tasks.add", "--job-timeout", "0"],
     "argument --job-timeout: must be a number of seconds from 0.001 to 3153600000"),
    (["enqueue", "examples.tasks.add", "--delay", "999999999999d"],
     "argument --delay: must be a duration from 0 to 36500d (100 years)"),
    (["enqueue", "examples.tasks.add", "--delay", "soon"],
     "argument --delay: must be a duration from 0 to 36500d (100 years)"),
    (["enqueue", "examples.tasks.add", "--max-retries", "-1"],
     "argument --max-retries: must be an integer from 0 to 1000 (got '-1')"),
    (["enqueue", "examples.tasks.add", "--wait", "--wait-timeout", "nan"],
     "argument --wait-timeout: must be a number of seconds from 0.001"),
    (["dead", "list", "--limit", "-2"], "argument --limit: must be an integer >= 1 (got '-2')"),
    (["dead", "list", "--limit", "0"], "argument --limit: must be an integer >= 1 (got '0')"),
    (["jobs", "--limit", "0"], "argument --limit: must be an integer >= 1 (got '0')"),
    (["jobs", "--offset", "-1"], "argument --offset: must be an integer >= 0 (got '-1')"),
    (["events", "--count", "-1"], "argument --count: must be an integer >= 1 (got '-1')"),
])
def test_out_of_range_numbers_exit_2_with_one_line(capsys, config_file, argv, message):
    """A number the config would refuse (or Redis, later) is refused by the flag, in one line."""
    path = config_file("handlers: [examples.tasks]\n")
    with pytest.raises(SystemExit) as info:
        main([argv[0], *(argv[1:2] if argv[0] == "dead" else []), path,
              *(argv[2:] if argv[0] == "dead" else argv[1:])])
    assert info.value.code == 2
    assert one_line(capsys.readouterr().err).startswith(f"pool: {message}")


def test_an_argument_nested_too_deep_is_refused_not_sent_as_a_string(capsys, config_file):
    """JSON past the decoder's depth limit is a usage error, not silently the text of the argument."""
    path = config_file("handlers: [examples.tasks]\n")
    code, _, err = run(capsys, "enqueue", path, "examples.tasks.add", "1", "[" * 1100 + "]" * 1100)
    assert code == 2
    assert one_line(err) == ("pool: argument 2 is JSON nested deeper than 1024 levels; pass a flatter value "
                             "(or a reference to the data)")


def test_a_time_past_the_year_9999_is_shown_as_a_number_not_an_error():
    """A due time stored before delays were bounded (999999999999d) no longer breaks `pool job`."""
    from pool import clock

    assert clock.format_ms(86_400_000_000_000_000_000) == "86400000000000000000 ms after the epoch"
    assert clock.format_ms(0) == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize("command", ["status", "enqueue"])
def test_a_password_in_the_url_query_is_never_printed(capsys, config_file, command):
    """redis-py authenticates with `?password=` as with the userinfo; the line hides it too."""
    port = free_port()
    path = config_file(f"redis:\n  url: 'redis://127.0.0.1:{port}/0?db=0&password=hunter2&username=b0b'\n"
                       "  connect_timeout: 1s\n")
    code, _, err = run(capsys, command, path, *(["examples.tasks.add"] if command == "enqueue" else []))
    assert code == 3
    assert one_line(err).startswith(f"pool: cannot reach Redis at redis://127.0.0.1:{port}/0?db=0&password=***&username=***: ")
    assert "hunter2" not in err and "b0b" not in err


def test_arguments_that_start_with_a_dash_follow_a_double_dash(config_file):
    """As the README says: after `--` an argument such as `-i` is the handler's, not an option."""
    from pool.cli.parser import parse

    options = parse(["enqueue", config_file("handlers: [examples.tasks]\n"), "app.tasks.grep", "--", "-i", "needle"])
    assert (options.handler, options.args) == ("app.tasks.grep", ["-i", "needle"])
