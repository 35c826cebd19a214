"""pool.yaml parsing: defaults, durations, env expansion, and errors that name key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pool.config import Config, from_mapping, load, parse_duration
from pool.errors import ConfigError
from pool.worker.ready_wait import uses_shared_wait
from tests.conftest import pool_cli


def parse(data, environ=None) -> Config:
    return from_mapping(data, "/srv/app/pool.yaml", environ or {})


def error_of(data, environ=None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, environ)
    return str(info.value)


def test_empty_file_gives_documented_defaults():
    """An empty pool.yaml is valid and every setting takes its documented default."""
    config = parse(None)
    assert config.processes == 2
    assert config.concurrency == 16
    assert config.queues == ("default",)
    assert config.timeout_s == 30.0
    assert config.result_ttl_s == 3600.0
    assert config.key_prefix == "pool"
    assert config.redis.is_embedded
    assert config.state_dir == Path("/srv/app/.pool")


def test_interface_example_parses():
    """The example from the issue's interface section parses into typed values."""
    config = parse({
        "redis": {"url": "redis://localhost:6379/0"}, "processes": 2, "concurrency": 16,
        "queues": ["default"], "timeout": "30s", "result_ttl": "1h",
        "handlers": ["examples.tasks", "examples.images.thumbnail"],
    })
    assert config.redis.url == "redis://localhost:6379/0"
    assert config.handlers == ("examples.tasks", "examples.images.thumbnail")
    assert config.result_ttl_s == 3600.0


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1d", 86400.0),
    ("1.5s", 1.5), (10, 10.0), (0.25, 0.25),
])
def test_durations_accept_units(text, seconds):
    assert parse_duration(text) == seconds


def test_typo_is_an_error_with_a_suggestion():
    """`concurency:` is never silently ignored: the message names the file, key and the fix."""
    assert error_of({"concurency": 4}) == "pool.yaml: concurency: unknown key (did you mean 'concurrency'?)"


def test_unknown_nested_key_names_its_path():
    assert error_of({"redis": {"ulr": "redis://x"}}) == "pool.yaml: redis.ulr: unknown key (did you mean 'url'?)"


def test_unknown_key_without_close_match_lists_allowed_keys():
    message = error_of({"logging": {"colour": True}})
    assert message.startswith("pool.yaml: logging.colour: unknown key (allowed: level, format")


@pytest.mark.parametrize(("data", "expected"), [
    ({"processes": 0}, "pool.yaml: processes: must be an integer >= 1 and <= 512 (got 0)"),
    ({"processes": "two"}, "pool.yaml: processes: must be an integer >= 1 and <= 512 (got 'two')"),
    ({"concurrency": True}, "pool.yaml: concurrency: must be an integer >= 1 and <= 10000 (got True)"),
    ({"timeout": "soon"}, "pool.yaml: timeout: must be a duration from 0.001s to 36500d (100 years) such as '500ms', '30s', '2m', '1h' (got 'soon')"),
    ({"timeout": "0s"}, "pool.yaml: timeout: must be a duration from 0.001s to 36500d (100 years) such as '500ms', '30s', '2m', '1h' (got '0s')"),
    ({"queues": ["a b"]}, "pool.yaml: queues[0]: queue names must be 1-64 characters: letters, digits, '_', '.', '-', starting with a letter or digit (got 'a b')"),
    ({"queues": ["x{y}"]}, "pool.yaml: queues[0]: queue names must be 1-64 characters: letters, digits, '_', '.', '-', starting with a letter or digit (got 'x{y}')"),
    ({"queues": []}, "pool.yaml: queues: must be a non-empty list of queue names (got [])"),
    ({"queues": ["a", "a"]}, "pool.yaml: queues: lists queue 'a' twice"),
    ({"handlers": ["examples/tasks.py"]}, "pool.yaml: handlers[0]: must be a dotted path such as 'examples.tasks' or 'examples.tasks.add' (got 'examples/tasks.py')"),
    ({"redis": {"url": "http://x"}}, "pool.yaml: redis.url: must start with redis://, rediss:// (TLS), unix:// or redis+cluster:// (a Cluster seed) (or leave `redis` out to use the embedded server) (got 'http://x')"),
    ({"redis": "redis://x"}, "pool.yaml: redis: must be a mapping of keys (url, username, password, socket_timeout, connect_timeout, tls, cluster, sentinels, service_name, sentinel_password)"),
    ({"logging": {"level": "loud"}}, "pool.yaml: logging.level: must be one of debug, info, warning, error (got 'loud')"),
    ({"logging": {"levels": {"pool.jobs": "loud"}}}, "pool.yaml: logging.levels: the level of 'pool.jobs' must be one of debug, info, warning, error (got {'pool.jobs': 'loud'})"),
    ({"metrics": {"port": 70000}}, "pool.yaml: metrics.port: must be an integer >= 0 and <= 65535 (got 70000)"),
    ({"metrics": {"prot": 9100}}, "pool.yaml: metrics.prot: unknown key (did you mean 'port'?)"),
    ({"max_payload_size": "lots"}, "pool.yaml: max_payload_size: must be a size >= 64 bytes such as 65536, '512KiB', '1MB' (got 'lots')"),
    ({"key_prefix": "a:b"}, "pool.yaml: key_prefix: must be 1-64 characters of letters, digits, '_', '.', '-' (got 'a:b')"),
    ({"key_prefix": "pool\n"}, "pool.yaml: key_prefix: must be 1-64 characters of letters, digits, '_', '.', '-' (got 'pool\\n')"),
    ({"shared_wait_from": -1}, "pool.yaml: shared_wait_from: must be an integer >= 0 and <= 100000 (got -1)"),
    ({"shared_wait_from": "many"}, "pool.yaml: shared_wait_from: must be an integer >= 0 and <= 100000 (got 'many')"),
])
def test_bad_values_name_key_value_and_rule(data, expected):
    assert error_of(data) == expected


def test_top_level_must_be_a_mapping():
    assert error_of(["processes", 2]) == "pool.yaml: must be a mapping of settings (see README, Configuration)"


def test_sizes_accept_units():
    assert parse({"max_payload_size": "512KiB"}).max_payload_bytes == 512 * 1024
    assert parse({"max_payload_size": "1MB"}).max_payload_bytes == 1_000_000
    assert parse({"max_payload_size": 4096}).max_payload_bytes == 4096


def test_heartbeat_ttl_must_exceed_two_intervals():
    message = error_of({"heartbeat_interval": "1s", "heartbeat_ttl": "2s"})
    assert message.startswith("pool.yaml: heartbeat_ttl: must be more than twice heartbeat_interval")


def test_env_variables_expand_so_secrets_stay_out_of_the_file():
    config = parse(
        {"redis": {"url": "redis://${REDIS_HOST}:6379/0", "password": "${REDIS_PASSWORD}"}},
        {"REDIS_HOST": "cache.internal", "REDIS_PASSWORD": "s3cret"},
    )
    assert config.redis.url == "redis://cache.internal:6379/0"
    assert config.redis.password == "s3cret"
    assert "s3cret" not in repr(config)


def test_env_default_is_used_when_unset():
    assert parse({"key_prefix": "${PREFIX:-jobs}"}).key_prefix == "jobs"


def test_missing_env_variable_names_key_and_variable():
    message = error_of({"redis": {"password": "${REDIS_PASSWORD}"}})
    assert message == (
        "pool.yaml: redis.password: environment variable REDIS_PASSWORD is not set "
        "(export it, or write ${REDIS_PASSWORD:-default})"
    )


def test_pool_redis_url_overrides_config():
    config = parse({"redis": {"url": "redis://a:6379/0"}}, {"POOL_REDIS_URL": "unix:///run/redis.sock"})
    assert config.redis.url == "unix:///run/redis.sock"


def test_pool_redis_url_is_validated():
    with pytest.raises(ConfigError, match="POOL_REDIS_URL: must start with redis://"):
        parse({}, {"POOL_REDIS_URL": "localhost:6379"})


def test_redis_settings_accept_acl_tls_and_timeouts():
    config = parse({"redis": {
        "url": "rediss://cache:6380/2", "username": "pool", "password": "pw",
        "socket_timeout": "2s", "connect_timeout": "500ms",
        "tls": {"ca_file": "/etc/ca.pem", "verify": False},
    }})
    assert config.redis.username == "pool"
    assert config.redis.socket_timeout_s == 2.0
    assert config.redis.connect_timeout_s == 0.5
    assert config.redis.tls.ca_file == "/etc/ca.pem"
    assert config.redis.tls.verify is False


def test_load_reports_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "nope.yaml")


def test_load_reports_invalid_yaml_with_line(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text("processes: 2\nqueues: [default\n")
    with pytest.raises(ConfigError, match=r"^pool.yaml: line \d+: "):
        load(path)


def test_load_uses_safe_load(tmp_path):
    """Python object tags are refused: YAML never constructs objects."""
    path = tmp_path / "pool.yaml"
    path.write_text("processes: !!python/object/apply:os.getpid []\n")
    with pytest.raises(ConfigError):
        load(path)


def test_relative_state_dir_is_next_to_the_config(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text("state_dir: var/pool\n")
    assert load(path, environ={}).state_dir == tmp_path / "var" / "pool"


def test_secrets_are_never_echoed_in_errors():
    message = error_of({"redis": {"url": "redis//admin:S3cretPW@db:6379"}})
    assert "S3cretPW" not in message and "admin:***@db:6379" in message
    assert "123456789" not in error_of({"redis": {"password": 123456789}})


def test_url_with_a_bad_port_is_a_config_error():
    assert error_of({"redis": {"url": "redis://db:notaport/0"}}).startswith(
        "pool.yaml: redis.url: is not a valid Redis URL (Port could not be cast")


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://h:6379/0?password=s3cret&db=2", "redis://h:6379/0?password=***&db=2"),
    ("rediss://u:p@h:6380?username=bob&socket_timeout=3", "rediss://u:***@h:6380?username=***&socket_timeout=3"),
    ("unix:///run/redis.sock?db=1&token=abc", "unix:///run/redis.sock?db=1&token=***"),
    ("redis://h/0?flag", "redis://h/0?***"),
    ("redis://:pa?ss@host/0", "redis://***@host/0"),  # a '?' inside the password
    ("redis://h/0?password=a@b", "redis://***@b"),  # an '@' inside a query value
])
def test_redact_hides_query_parameters_that_may_be_secrets(url, shown):
    """Every query parameter but the plain connection settings is hidden: redis-py authenticates
    with `?password=` and `?username=` as with the userinfo."""
    from pool.config import redact_url

    assert redact_url(url) == shown


def test_a_url_refused_by_the_config_hides_its_query_password():
    message = error_of({"redis": {"url": "redis://h:x/0?password=s3cret"}})
    assert "s3cret" not in message and "password=***" in message


@pytest.mark.parametrize("url", ["redis://:s3cret/pw@127.0.0.1:6379/0", "redis://u:ab/cd@h:6379/0"])
def test_a_password_with_a_slash_is_not_quoted_by_redis_pys_reason(url):
    """A '/' ends the host part early, and redis-py named a piece of the password as the port."""
    message = error_of({"redis": {"url": url}})
    assert "s3cret" not in message and "ab" not in message.split("got")[0] and "pw" not in message
    assert "percent-encode a '/', '?', '#' or '@' in the password" in message


def test_a_url_query_parameter_redis_py_does_not_take_is_refused_at_load():
    """It used to pass, then fail with a TypeError traceback at the first command."""
    assert error_of({"redis": {"url": "redis://h:1/0?token=abc"}}) == (
        "pool.yaml: redis.url: has a query parameter redis-py does not take (token); remove it "
        "(got 'redis://h:1/0?token=***')")


def test_redact_hides_a_password_containing_at_signs():
    from pool.config import redact_url

    assert redact_url("redis://admin:p@ss@127.0.0.1:6379/0") == "redis://admin:***@127.0.0.1:6379/0"
    assert redact_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"


def test_queue_entries_take_weights_and_rate_limits():
    config = from_mapping({"queues": [{"name": "high", "weight": 5}, "low",
                                      {"name": "mail", "rate_limit": "10/min"}]}, environ={})
    assert config.queues == ("high", "low", "mail")
    assert config.queue_weights == {"high": 5, "low": 1, "mail": 1}
    assert config.rate_limits == {"mail": (10, 60_000)}
    strict = from_mapping({"queues": ["a", "b"]}, environ={})
    assert strict.queue_weights == {}


@pytest.mark.parametrize(("entry", "message"), [
    ({"weight": 2}, "queues[0]: needs `name:`"),
    ({"name": "a", "weight": 0}, "queues[0].weight: must be an integer >= 1"),
    ({"name": "a", "rate_limit": "fast"}, "queues[0].rate_limit: must be jobs per window such as '100/s'"),
    ({"name": "a", "rate_limit": "0/s"}, "queues[0].rate_limit: must be jobs per window"),
    ({"name": "a", "priority": 1}, "queues[0].priority: unknown key"),
    ({"name": "mail\n"}, "queues[0].name: queue names must be 1-64 characters"),  # a trailing newline is no part of a name
])
def test_bad_queue_entries_name_the_key(entry, message):
    with pytest.raises(ConfigError) as info:
        from_mapping({"queues": [entry]}, environ={})
    assert message in str(info.value)


# -- topologies: Cluster, Sentinel, durability --------------------------------------------------


def test_cluster_is_a_flag_or_a_cluster_url():
    assert parse({"redis": {"url": "redis://10.0.0.1:7000", "cluster": True}}).redis.cluster
    config = parse({"redis": {"url": "redis+cluster://10.0.0.1:7000"}})
    assert (config.redis.url, config.redis.cluster) == ("redis://10.0.0.1:7000", True)
    tls = parse({"redis": {"url": "rediss+cluster://u:pw@10.0.0.1:7000"}})
    assert tls.redis.url == "rediss://u:pw@10.0.0.1:7000" and tls.redis.cluster
    assert "redis.cluster: needs redis.url" in error_of({"redis": {"cluster": True}})


def test_sentinels_need_a_service_name_and_no_url():
    config = parse({"redis": {"sentinels": ["10.0.0.1:26379", "sentinel-2:26379"], "service_name": "jobs",
                              "sentinel_password": "s3cret"}})
    assert config.redis.sentinels == ("10.0.0.1:26379", "sentinel-2:26379")
    assert not config.redis.is_embedded
    assert "s3cret" not in repr(config)
    assert "redis.service_name: is required" in error_of({"redis": {"sentinels": ["h:26379"]}})
    assert "redis.url: cannot be set with redis.sentinels" in error_of(
        {"redis": {"sentinels": ["h:26379"], "service_name": "m", "url": "redis://h:6379"}})
    assert "must be host:port" in error_of({"redis": {"sentinels": ["h"], "service_name": "m"}})
    assert "needs redis.sentinels" in error_of({"redis": {"service_name": "m"}})


def test_durability_replicated_needs_replicas_and_a_short_wait():
    config = parse({"redis": {"url": "redis://h:6379"}, "durability": "replicated", "replication_timeout": "500ms"})
    assert (config.durability, config.replication_timeout_s) == ("replicated", 0.5)
    assert parse(None).durability == "fast"
    assert "the embedded server has none" in error_of({"durability": "replicated"})
    assert "not supported on Redis Cluster" in error_of(
        {"redis": {"url": "redis://h:7000", "cluster": True}, "durability": "replicated"})
    assert "shorter than redis.socket_timeout" in error_of(
        {"redis": {"url": "redis://h:6379"}, "durability": "replicated", "replication_timeout": "10s"})
    assert "must be one of fast, replicated" in error_of({"durability": "safe"})


# -- ${VAR} typing, duplicate keys, compound durations ------------------------------------------


def test_whole_reference_feeds_an_integer_key():
    """`processes: ${POOL_PROCESSES:-2}` is the integer from the environment, or the default."""
    assert parse({"processes": "${POOL_PROCESSES:-2}"}, {"POOL_PROCESSES": "4"}).processes == 4
    assert parse({"processes": "${POOL_PROCESSES:-2}"}).processes == 2
    assert parse({"metrics": {"port": "${PORT}"}}, {"PORT": "9100"}).metrics.port == 9100


def test_env_reference_reaches_the_config_through_load(tmp_path):
    """Written unquoted in a file, as the README shows it, the reference gives the integer."""
    path = tmp_path / "pool.yaml"
    path.write_text("processes: ${POOL_PROCESSES:-2}\nconcurrency: ${CONCURRENCY:-8}\n")
    config = load(path, environ={"POOL_PROCESSES": "4"})
    assert (config.processes, config.concurrency) == (4, 8)


def test_whole_reference_feeds_boolean_and_duration_keys():
    config = parse({"redis": {"tls": {"verify": "${VERIFY:-true}"}}, "events": "${EVENTS}",
                    "timeout": "${T:-30s}", "result_ttl": "${TTL}"},
                   {"VERIFY": "false", "EVENTS": "no", "TTL": "90"})
    assert config.redis.tls.verify is False
    assert config.events is False
    assert (config.timeout_s, config.result_ttl_s) == (30.0, 90.0)
    assert parse({"redis": {"tls": {"verify": "${VERIFY:-true}"}}}).redis.tls.verify is True


def test_string_keys_keep_the_text_of_a_reference():
    """A password or prefix that looks like a number or a boolean stays the text it is."""
    config = parse({"redis": {"password": "${PW}", "username": "${USER}"}, "key_prefix": "${PREFIX}"},
                   {"PW": "123456", "USER": "true", "PREFIX": "2026"})
    assert (config.redis.password, config.redis.username, config.key_prefix) == ("123456", "true", "2026")


def test_reference_inside_longer_text_is_only_substituted():
    """`${N}0` is the string '40', not an integer: only a whole reference is read as YAML."""
    assert error_of({"processes": "${N}0"}, {"N": "4"}) == (
        "pool.yaml: processes: must be an integer >= 1 and <= 512 (got '40' from ${N}0)")
    assert parse({"key_prefix": "app-${N}"}, {"N": "4"}).key_prefix == "app-4"


def test_empty_reference_stays_empty_text_not_null():
    """`${URL:-}` unset is '' as before: optional keys read it as unset, required ones refuse it."""
    assert parse({"redis": {"password": "${PW:-}"}}).redis.password is None
    assert error_of({"redis": {"url": "${URL:-}"}}) == (
        "pool.yaml: redis.url: must be a non-empty string (got '' from ${URL})")


def test_wrong_type_after_expansion_says_where_the_value_came_from():
    assert error_of({"processes": "${POOL_PROCESSES:-2}"}, {"POOL_PROCESSES": "four"}) == (
        "pool.yaml: processes: must be an integer >= 1 and <= 512 (got 'four' from ${POOL_PROCESSES})")
    assert error_of({"processes": "${POOL_PROCESSES:-zero}"}) == (
        "pool.yaml: processes: must be an integer >= 1 and <= 512 (got 'zero' from ${POOL_PROCESSES:-zero})")
    assert error_of({"events": "${EVENTS}"}, {"EVENTS": "maybe"}) == (
        "pool.yaml: events: must be true or false (got 'maybe' from ${EVENTS})")


def test_expanded_secrets_are_never_echoed_in_errors():
    """Neither the value from the environment nor a default written in the file shows."""
    message = error_of({"redis": {"url": "${URL}"}}, {"URL": "redis//admin:S3cretPW@db:6379"})
    assert message == ("pool.yaml: redis.url: must start with redis://, rediss:// (TLS), unix:// or "
                       "redis+cluster:// (a Cluster seed) (or leave `redis` out to use the embedded server) "
                       "(got 'redis//admin:***@db:6379' from ${URL})")
    message = error_of({"redis": {"url": "redis://admin:${PW}@db:notaport"}}, {"PW": "S3cretPW"})
    assert "S3cretPW" not in message and message.endswith("(got 'redis://admin:***@db:notaport' from ${PW})")
    message = error_of({"redis": {"url": "${URL:-redis://admin:hunter2@db:notaport}"}})
    assert "hunter2" not in message and message.endswith("from ${URL})")


def write_text(tmp_path, text: str) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(text)
    return path


def test_duplicate_key_names_both_lines(tmp_path):
    path = write_text(tmp_path, "processes: 2\nconcurrency: 4\nprocesses: 7\n")
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    assert str(info.value) == "pool.yaml: line 3: duplicate key 'processes' (first at line 1)"


def test_duplicate_key_in_a_nested_mapping_is_refused(tmp_path):
    path = write_text(tmp_path, "redis:\n  url: redis://a:6379\n  tls:\n    verify: true\n\n    verify: false\n")
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    assert str(info.value) == "pool.yaml: line 6: duplicate key 'verify' (first at line 4)"
    path = write_text(tmp_path, "metrics: {port: 9100, port: 9200}\n")
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    assert str(info.value) == "pool.yaml: line 1: duplicate key 'port' (first at line 1)"


def test_same_key_in_different_mappings_and_merge_overrides_are_fine(tmp_path):
    """Only a key repeated within one mapping is an error; `<<:` merges may still be overridden."""
    path = write_text(tmp_path, (
        "queues: [{name: a, weight: 2}, {name: b, weight: 3}]\n"
        "retries: &base {max_retries: 3, backoff: 1s}\n"
        "handlers: [{path: examples.tasks, <<: *base, max_retries: 5}]\n"
        "schedules:\n"
        "  nightly:\n"
        "    handler: examples.tasks.add\n"
        "    every: 1m\n"
        "    kwargs: {x: &x {a: 1}, deeper: {y: &y {<<: *x, a: 2}}, z: {<<: *y}}\n"))
    config = load(path, environ={})
    assert config.queue_weights == {"a": 2, "b": 3}
    assert config.handler_retries["examples.tasks"].max_retries == 5
    # y overrides a key it merged, and is merged into z before y itself is built
    assert config.schedules[0].kwargs["deeper"] == {"y": {"a": 2}}


def test_duplicate_key_exits_2_with_one_line(tmp_path):
    """`pool status` on such a file prints one line and exits 2 before it looks for Redis."""
    path = write_text(tmp_path, "processes: 2\nhandlers: [examples.tasks]\nprocesses: 7\n")
    result = pool_cli("status", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["pool: pool.yaml: line 3: duplicate key 'processes' (first at line 1)"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("1m30s", 90.0), ("1h30m", 5400.0), ("2m 15s", 135.0), ("1s500ms", 1.5), ("1d12h", 129600.0),
])
def test_durations_may_be_compound(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1m30", "m30s", "1m-30s", "30s 1", ""])
def test_malformed_compound_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_scripts_env_names_variables_a_script_may_see():
    """scripts.env lists variable names; a value of another type is one line naming the key."""
    assert parse({"scripts": {"env": ["APP_TOKEN", "S3_BUCKET"]}}).scripts.env == ("APP_TOKEN", "S3_BUCKET")
    assert parse(None).scripts.env == ()
    assert error_of({"scripts": {"env": {"A": 1}}}) == "pool.yaml: scripts.env: must be a non-empty list (got {'A': 1})"
    assert error_of({"scripts": {"env": ["A-B"]}}).startswith(
        "pool.yaml: scripts.env[0]: must be the name of an environment variable")


@pytest.mark.parametrize(("redis", "name", "reason"), [
    ({"url": "redis://x:6379/0", "password": "${REDIS_PASSWORD}"}, "REDIS_PASSWORD", "redis.password is ${REDIS_PASSWORD}"),
    ({"url": "${MY_URL}"}, "MY_URL", "redis.url is ${MY_URL}"),
    (None, "POOL_REDIS_URL", "it overrides redis.url"),
])
def test_scripts_env_refuses_a_variable_holding_a_redis_secret(redis, name, reason):
    environ = {"REDIS_PASSWORD": "s3cret", "MY_URL": "redis://x:6379/0"}
    data = {"scripts": {"env": ["APP_TOKEN", name]}} | ({"redis": redis} if redis else {})
    assert error_of(data, environ) == (f"pool.yaml: scripts.env: {name} holds a Redis secret ({reason}); "
                                       "a script job must not see it: remove it from the list")


# -- every duration finite and within what Redis takes (issue 15, point 9) ------------------------------------

_DURATION_RULE = "a duration from {low} to 36500d (100 years) such as '500ms', '30s', '2m', '1h'"


@pytest.mark.parametrize(("data", "key", "low"), [
    ({"result_ttl": "10000000000000000s"}, "result_ttl", "1s"),  # PEXPIRE refused it inside ack.lua
    ({"result_ttl": 1e16}, "result_ttl", "1s"),
    ({"dead_letter": {"ttl": "10000000000000000s"}}, "dead_letter.ttl", "1s"),
    ({"heartbeat_ttl": float("inf")}, "heartbeat_ttl", "0.5s"),  # `.inf` in YAML
    ({"heartbeat_interval": float("nan")}, "heartbeat_interval", "0.05s"),
    ({"timeout": "36501d"}, "timeout", "0.001s"),
    ({"shutdown_timeout": 1e300}, "shutdown_timeout", "0"),
    ({"retries": {"backoff_max": "1e400"}}, "retries.backoff_max", "0"),
    ({"schedules": {"s": {"handler": "a.b", "every": float("inf")}}}, "schedules.s.every", "0.1s"),
])
def test_durations_past_what_redis_takes_are_refused_where_parsed(data, key, low):
    """A duration that is not finite, or longer than 100 years, is refused with the key and the range."""
    assert error_of(data).startswith(f"pool.yaml: {key}: must be {_DURATION_RULE.format(low=low)} (got ")


def test_the_longest_duration_is_accepted():
    """100 years is the documented ceiling, and it is allowed."""
    assert parse({"result_ttl": "36500d"}).result_ttl_s == 36500 * 86400.0


def test_unbounded_integers_stay_within_what_lua_counts_exactly():
    assert error_of({"dead_letter": {"max": 10**30}}) == (
        "pool.yaml: dead_letter.max: must be an integer >= 1 and <= 9007199254740992 (got "
        "1000000000000000000000000000000)")


def test_a_rate_limit_window_must_be_finite():
    assert error_of({"queues": [{"name": "q", "rate_limit": "5/99999999999999999999d"}]}).startswith(
        "pool.yaml: queues[0].rate_limit: must be jobs per window")


def test_inf_in_the_file_is_refused_as_one_line(tmp_path):
    """`heartbeat_ttl: .inf` used to crash `pool run` with a traceback; now the config refuses it."""
    path = tmp_path / "pool.yaml"
    path.write_text("handlers: [examples.tasks]\nheartbeat_ttl: .inf\n")
    done = pool_cli("run", str(path), timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"pool: pool.yaml: heartbeat_ttl: must be {_DURATION_RULE.format(low='0.5s')} (got inf)"


# -- files that crashed or hung every command (issue 15, point 11) -------------------------------------------

_LOL = "[" + ", ".join(['"lol"'] * 9) + "]"
# "Billion laughs" where the reader walks it: a schedule's args, nine levels of nine aliases.
_ALIAS_BOMB = ("handlers: [examples.tasks]\nschedules:\n  s:\n    handler: examples.tasks.add\n    every: 1m\n"
               "    args: [&a " + _LOL + ", " + ", ".join(
                   f"&{name} [" + ", ".join([f"*{prev}"] * 9) + "]" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
               ) + "]\n")


@pytest.mark.parametrize(("content", "message"), [
    (b"handlers: [examples.tasks]\nprocesses: 2  # caf\xe9\n",
     "pool: pool.yaml: line 2: byte 46 (0xe9) is not UTF-8; save the file as UTF-8"),
    (b"handlers: [examples.tasks]\nschedules: {s: {handler: examples.tasks.add, every: 1m, args: "
     + b"[" * 10_000 + b"]" * 10_000 + b"}}\n",
     "pool: pool.yaml: line 2: values nested more than 64 deep"),
    (_ALIAS_BOMB.encode(),
     "pool: pool.yaml: line 1: aliases expand to more than 100,000 values (an alias bomb?); write the values out, "
     "or use fewer nested aliases"),
    (b"handlers: [examples.tasks]\nschedules: {s: {handler: examples.tasks.add, every: 1m, args: &a [*a]}}\n",
     "pool: pool.yaml: line 1: aliases expand to more than 100,000 values (an alias bomb?); write the values out, "
     "or use fewer nested aliases"),
], ids=["not-utf8", "nested-10000-deep", "alias-bomb", "alias-cycle"])
def test_a_hostile_file_is_one_line_and_exit_2(tmp_path, content, message):
    """Each used to crash (UnicodeDecodeError, RecursionError) or hang (> 120 s) every command;
    the deadline below is the subprocess's, generous for a loaded machine, not a timing claim."""
    path = tmp_path / "pool.yaml"
    path.write_bytes(content)
    done = pool_cli("status", str(path), timeout=60)
    assert (done.returncode, done.stderr.strip(), done.stdout) == (2, message, "")


@pytest.mark.parametrize(("data", "shared"), [
    ({"queues": [f"q{n}" for n in range(7)]}, False),  # the default (8): per-queue watchers below it
    ({"queues": [f"q{n}" for n in range(8)]}, True),
    ({"queues": ["a"], "shared_wait_from": 1}, True),
    ({"queues": [f"q{n}" for n in range(50)], "shared_wait_from": 0}, False),  # 0: never
    ({"queues": [f"q{n}" for n in range(50)], "redis": {"url": "redis://h:7000", "cluster": True}}, False),
])
def test_shared_wait_is_used_from_shared_wait_from_queues_and_never_on_cluster(data, shared):
    assert uses_shared_wait(parse(data)) is shared
