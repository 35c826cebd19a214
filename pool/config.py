"""pool.yaml → frozen, validated settings. Every default and every validation lives here and in
config_values.py (the parser of each kind of value: durations, sizes, names, URLs).

Errors name the file, the key path, the value and what is allowed, e.g.
``pool.yaml: concurency: unknown key (did you mean 'concurrency'?)``. Nothing else in the
package validates configuration (schedules.py checks cron expressions and time zones for it).

The pieces around it: settings.py holds the frozen dataclasses (import them from here, their
public path), config_yaml.py reads the file (UTF-8, safe loader, no duplicate keys or alias
bombs), config_env.py expands ``${VAR}``. This module owns the key tables, the reader that
walks the document with them, and the checks that span keys.

Design: a small table of field specs per section (name → parser, default) rather than a schema
library. The messages we want (key path, "did you mean", units) are the whole point, and a
generic validator's messages would need rewriting anyway.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pool import config_values as parsers
from pool.config_env import ENV_REF, expand_env, origin, substitute, yaml_scalar
from pool.config_values import parse_duration, redact_url
from pool.config_yaml import read_document
from pool.errors import ConfigError
from pool.keys import QUEUE_NAME_RULE, is_valid_queue_name
from pool.metrics import check_namespace
from pool.schedules import Schedule, check_cron, check_timezone
from pool.settings import (
    INHERIT,
    Config,
    DeadLetterSettings,
    LoggingSettings,
    MetricsSettings,
    RedisSettings,
    RetrySettings,
    ScriptSettings,
    TLSSettings,
)

# The import path of the settings and the loader: `from pool.config import Config, load`.
__all__ = [
    "INHERIT", "REDIS_URL_ENV", "Config", "DeadLetterSettings", "LoggingSettings", "MetricsSettings",
    "RedisSettings", "RetrySettings", "ScriptSettings", "TLSSettings", "expand_env", "from_mapping", "load",
    "parse_duration", "redact_url",
]

REDIS_URL_ENV = "POOL_REDIS_URL"


# ---------------------------------------------------------------------------------------------
# Sections: yaml key → (dataclass field, parser). A nested section is a (class, table) pair.

_Table = Mapping[str, tuple[str, Any]]

_TLS: _Table = {
    "ca_file": ("ca_file", parsers.optional_string),
    "cert_file": ("cert_file", parsers.optional_string),
    "key_file": ("key_file", parsers.optional_string),
    "verify": ("verify", parsers.boolean),
}
_REDIS: _Table = {
    "url": ("url", parsers.redis_url),
    "username": ("username", parsers.optional_string),
    "password": ("password", parsers.optional_string),
    "socket_timeout": ("socket_timeout_s", parsers.duration(0.1)),
    "connect_timeout": ("connect_timeout_s", parsers.duration(0.1)),
    "tls": ("tls", (TLSSettings, _TLS)),
    "cluster": ("cluster", parsers.boolean),
    "sentinels": ("sentinels", ("list", parsers.host_port)),
    "service_name": ("service_name", parsers.optional_string),
    "sentinel_password": ("sentinel_password", parsers.optional_string),
}
_RETRY_FIELDS: _Table = {
    "max_retries": ("max_retries", parsers.integer(0, 1000)),
    "backoff": ("backoff_s", parsers.duration(0, allow_zero=True)),
    "backoff_max": ("backoff_max_s", parsers.duration(0, allow_zero=True)),
    "retry_on": ("retry_on", ("list", parsers.exception_name)),
    "fail_on": ("fail_on", ("list", parsers.exception_name)),
    "dead_letter": ("dead_letter", parsers.boolean),
}
_HANDLER_ENTRY: _Table = {"path": ("path", parsers.handler_path), **_RETRY_FIELDS}
_QUEUE_ENTRY: _Table = {
    "name": ("name", parsers.queue_name),
    "weight": ("weight", parsers.integer(1, 1000)),
    "rate_limit": ("rate_limit", parsers.rate_limit),
}
_SCHEDULE_ENTRY: _Table = {
    "handler": ("handler", parsers.function_path),
    "cron": ("cron", parsers.checked(check_cron)),
    "every": ("every_s", parsers.duration(0.1)),
    "timezone": ("timezone", parsers.checked(check_timezone)),
    "args": ("args", parsers.json_list),
    "kwargs": ("kwargs", parsers.json_mapping),
    "queue": ("queue", parsers.queue_name),
    "catch_up": ("catch_up", parsers.boolean),
    "grace": ("grace_s", parsers.duration(0, allow_zero=True)),
    "timeout": ("timeout_s", parsers.duration(0.001)),
}
_DEAD_LETTER: _Table = {
    "ttl": ("ttl_s", parsers.duration(1.0)),
    "max": ("max_jobs", parsers.integer(1)),
}
_SCRIPTS: _Table = {
    "allowed_dirs": ("allowed_dirs", ("list", parsers.string)),
    "max_output": ("max_output_bytes", parsers.size(1)),
    "env": ("env", ("list", parsers.env_name)),
}
_LOGGING: _Table = {
    "level": ("level", parsers.choice(*parsers.LOG_LEVELS)),
    "format": ("format", parsers.choice(*parsers.LOG_FORMATS)),
    "levels": ("levels", parsers.logger_levels),
}
_METRICS: _Table = {
    "port": ("port", parsers.integer(0, 65535)),
    "host": ("host", parsers.string),
    "namespace": ("namespace", parsers.checked(check_namespace)),
}
_TOP: _Table = {
    "redis": ("redis", (RedisSettings, _REDIS)),
    "processes": ("processes", parsers.integer(1, 512)),
    "concurrency": ("concurrency", parsers.integer(1, 10_000)),
    "queues": ("queues", ("queues",)),
    "schedules": ("schedules", ("schedules",)),
    "handlers": ("handlers", ("handlers",)),
    "on_startup": ("on_startup", ("list", parsers.function_path)),
    "on_shutdown": ("on_shutdown", ("list", parsers.function_path)),
    "retries": ("retries", (RetrySettings, _RETRY_FIELDS)),
    "dead_letter": ("dead_letter", (DeadLetterSettings, _DEAD_LETTER)),
    "scripts": ("scripts", (ScriptSettings, _SCRIPTS)),
    "max_result_size": ("max_result_bytes", parsers.size(64)),
    "events": ("events", parsers.boolean),
    "timeout": ("timeout_s", parsers.duration(0.001)),
    "result_ttl": ("result_ttl_s", parsers.duration(1.0)),
    "key_prefix": ("key_prefix", parsers.key_prefix),
    "shutdown_timeout": ("shutdown_timeout_s", parsers.duration(0, allow_zero=True)),
    "max_payload_size": ("max_payload_bytes", parsers.size(64)),
    "heartbeat_interval": ("heartbeat_interval_s", parsers.duration(0.05)),
    "heartbeat_ttl": ("heartbeat_ttl_s", parsers.duration(0.5)),
    "reclaim_interval": ("reclaim_interval_s", parsers.duration(0.05)),
    "max_deliveries": ("max_deliveries", parsers.integer(1, 1000)),
    "durability": ("durability", parsers.choice("fast", "replicated")),
    "replication_timeout": ("replication_timeout_s", parsers.duration(0.01)),
    "max_jobs_per_process": ("max_jobs_per_process", parsers.integer(0)),
    "shared_wait_from": ("shared_wait_from", parsers.integer(0, 100_000)),
    "max_memory_per_process": ("max_memory_per_process", parsers.size(0)),
    "timeout_grace": ("timeout_grace_s", parsers.duration(0, allow_zero=True)),
    "state_dir": ("state_dir", parsers.string),
    "pythonpath": ("pythonpath", ("list", parsers.string)),
    "logging": ("logging", (LoggingSettings, _LOGGING)),
    "metrics": ("metrics", (MetricsSettings, _METRICS)),
}


class _Reader:
    """Walks the parsed YAML with the tables above, collecting the file name for messages.

    ``${VAR}`` references are expanded here, value by value, rather than in a pass over the
    whole document first: the parser of the key decides what an expanded value may become, and
    an error can still show the reference the value came from.
    """

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {message}" if where else f"{self.source}: {message}")

    def section(self, data: Any, table: _Table, where: str) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise self.error(where, f"must be a mapping of keys ({', '.join(table)})")
        values: dict[str, Any] = {}
        for key, raw in data.items():
            path = f"{where}.{key}" if where else str(key)
            if key not in table:
                raise self.error(path, _unknown_key_message(str(key), table))
            attribute, parser = table[key]
            values[attribute] = self.value(raw, parser, path)
        return values

    def value(self, raw: Any, parser: Any, path: str) -> Any:
        if isinstance(parser, tuple) and parser[0] in ("handlers", "queues", "schedules"):
            return getattr(self, parser[0])(raw, path)
        if isinstance(parser, tuple) and parser[0] == "list":
            return self.list_of(raw, parser[1], path)
        if isinstance(parser, tuple):
            cls, table = parser
            return cls(**self.section(raw, table, path))
        if isinstance(raw, str) and ENV_REF.search(raw):
            return self.expanded(raw, parser, path)
        raw = expand_env(raw, self.source, self.environ, path)  # strings inside a list or mapping value
        try:
            return parser(raw)
        except parsers.Invalid as exc:
            raise self.invalid(path, exc, raw) from None

    def expanded(self, template: str, parser: Callable[[Any], Any], path: str) -> Any:
        """The text after substitution; if the key refuses it and the whole value was one reference,
        the number or boolean YAML reads in that text (so ``"4"`` from the environment is 4).

        The text comes first so that a key taking a string keeps it as written: a password
        ``123456`` stays a string. An empty or null-looking text stays text too, so that
        ``${URL:-}`` never turns into "no URL" (the embedded server) by itself.
        """
        text = substitute(template, self.source, self.environ, path)
        try:
            return parser(text)
        except parsers.Invalid as exc:
            error = exc
        typed = yaml_scalar(text) if ENV_REF.fullmatch(template) else None
        if typed is not None:
            try:
                return parser(typed)
            except parsers.Invalid as exc:
                error = exc
        raise self.invalid(path, error, text, origin(template, self.environ, path)) from None

    def invalid(self, path: str, exc: parsers.Invalid, raw: Any, origin: str = "") -> ConfigError:
        """The message for a refused value; a secret's value never shows, only where it came from."""
        hide = parsers.SECRET_PATHS.get(path)
        shown = hide(raw) if hide and isinstance(raw, str) else "***" if hide else raw
        came_from = f" from {origin}" if origin else ""
        return self.error(path, f"{exc} (got {shown!r}{came_from})")

    def handlers(self, raw: Any, path: str) -> tuple[tuple[str, ...], dict[str, RetrySettings]]:
        """Entries are dotted paths, or mappings with `path` and retry settings for it."""
        if isinstance(raw, (str, dict)):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise self.error(path, f"must be a non-empty list (got {raw!r})")
        paths: list[str] = []
        retries: dict[str, RetrySettings] = {}
        for i, entry in enumerate(raw):
            where = f"{path}[{i}]"
            if isinstance(entry, dict):
                values = self.section(entry, _HANDLER_ENTRY, where)
                if "path" not in values:
                    raise self.error(where, "needs `path:` (the handler's dotted path)")
                handler = values.pop("path")
                retries[handler] = dataclasses.replace(INHERIT, **values)
            else:
                handler = self.value(entry, parsers.handler_path, where)
            if handler in paths:
                raise self.error(path, f"lists {handler!r} twice")
            paths.append(handler)
        return tuple(paths), retries

    def queues(self, raw: Any, path: str) -> tuple[tuple[str, ...], dict[str, int], dict[str, tuple[int, int]]]:
        """Entries are queue names, or mappings with `name` and a `weight` and/or `rate_limit`."""
        if isinstance(raw, (str, dict)):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise self.error(path, f"must be a non-empty list of queue names (got {raw!r})")
        names: list[str] = []
        weights: dict[str, int] = {}
        rates: dict[str, tuple[int, int]] = {}
        for i, entry in enumerate(raw):
            where = f"{path}[{i}]"
            if isinstance(entry, dict):
                values = self.section(entry, _QUEUE_ENTRY, where)
                if "name" not in values:
                    raise self.error(where, "needs `name:` (the queue's name)")
                name = values["name"]
                if "weight" in values:
                    weights[name] = values["weight"]
                if "rate_limit" in values:
                    rates[name] = values["rate_limit"]
            else:
                name = self.value(entry, parsers.queue_name, where)
            if name in names:
                raise self.error(path, f"lists queue {name!r} twice")
            names.append(name)
        if weights:
            weights = {name: weights.get(name, 1) for name in names}
        return tuple(names), weights, rates

    def schedules(self, raw: Any, path: str) -> tuple[Schedule, ...]:
        """A mapping of schedule name → handler, cron or every, and the job's arguments."""
        if not isinstance(raw, dict):
            raise self.error(path, "must be a mapping of schedule names to settings (see README, Schedules)")
        schedules = []
        for name, entry in raw.items():
            where = f"{path}.{name}"
            if not isinstance(name, str) or not is_valid_queue_name(name):
                raise self.error(where, f"schedule names must be {QUEUE_NAME_RULE}")
            values = self.section(entry, _SCHEDULE_ENTRY, where)
            if "handler" not in values:
                raise self.error(where, "needs `handler:` (the dotted path of the function to run)")
            if ("cron" in values) == ("every_s" in values):
                raise self.error(where, "needs exactly one of `cron:` (e.g. '0 3 * * *') or `every:` (e.g. 30s)")
            if "timezone" in values and "cron" not in values:
                raise self.error(f"{where}.timezone", "applies to `cron:` schedules only")
            schedules.append(Schedule(name=name, **values))
        return tuple(schedules)

    def list_of(self, raw: Any, parser: Callable[[Any], Any], path: str) -> tuple[Any, ...]:
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise self.error(path, f"must be a non-empty list (got {raw!r})")
        items = tuple(self.value(item, parser, f"{path}[{i}]") for i, item in enumerate(raw))
        if len(set(items)) != len(items):
            raise self.error(path, f"lists the same entry twice (got {raw!r})")
        return items


def _unknown_key_message(key: str, table: _Table) -> str:
    close = difflib.get_close_matches(key, list(table), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(table)
    return f"unknown key ({hint})"


def from_mapping(
    data: Any, path: Path | str = "pool.yaml", environ: Mapping[str, str] | None = None
) -> Config:
    """Validate an already-parsed YAML document.

    Args:
        data: the document (a mapping, or None for an empty file).
        path: the file it came from; used in messages and to resolve relative paths.
        environ: environment for ``${VAR}`` and ``POOL_REDIS_URL`` (default ``os.environ``).

    Raises:
        ConfigError: naming the key path, the value and what is allowed.
    """
    environ = os.environ if environ is None else environ
    path = Path(path).resolve()
    source = path.name
    reader = _Reader(source, environ)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise reader.error("", "must be a mapping of settings (see README, Configuration)")
    values = reader.section(data, _TOP, "")
    if "handlers" in values:
        values["handlers"], values["handler_retries"] = values["handlers"]
    if "queues" in values:
        values["queues"], values["queue_weights"], values["rate_limits"] = values["queues"]
    config = Config(path=path, **values)
    config = _apply_environment(config, environ, reader)
    _check_script_env(config, data.get("redis"), reader)
    return _check_relations(config, reader)


def _apply_environment(config: Config, environ: Mapping[str, str], reader: _Reader) -> Config:
    url = environ.get(REDIS_URL_ENV)
    if url:
        try:
            checked = parsers.redis_url(url)
        except parsers.Invalid as exc:
            raise ConfigError(f"{REDIS_URL_ENV}: {exc} (got {redact_url(url)!r})") from None
        config = config.replace(redis=dataclasses.replace(config.redis, url=checked))
    url = config.redis.url and parsers.cluster_url(config.redis.url)
    if url:  # redis+cluster://: the same as a redis:// seed with cluster: true
        config = config.replace(redis=dataclasses.replace(config.redis, url=url, cluster=True))
    state_dir = Path(config.state_dir)
    if not state_dir.is_absolute():
        state_dir = config.base_dir / state_dir
    return config.replace(state_dir=state_dir)


def _check_relations(config: Config, reader: _Reader) -> Config:
    _check_topology(config, reader)
    _check_durability(config, reader)
    if config.schedules:
        schedules = tuple(dataclasses.replace(s, queue=s.queue or config.queues[0]) for s in config.schedules)
        config = config.replace(schedules=schedules)
    if config.scripts.allowed_dirs:
        dirs = tuple(str((config.base_dir / d).resolve()) for d in config.scripts.allowed_dirs)
        config = config.replace(scripts=dataclasses.replace(config.scripts, allowed_dirs=dirs))
    if config.heartbeat_ttl_s <= 2 * config.heartbeat_interval_s:
        raise reader.error(
            "heartbeat_ttl",
            f"must be more than twice heartbeat_interval "
            f"(got {config.heartbeat_ttl_s:g}s with an interval of {config.heartbeat_interval_s:g}s)",
        )
    return config


def _check_script_env(config: Config, redis_section: Any, reader: _Reader) -> None:
    """Refuse to hand a Redis secret to script jobs: a script that prints its environment would
    store it in its result, readable by whoever may read jobs."""
    secrets = {REDIS_URL_ENV: "it overrides redis.url"}
    for key in ("url", "username", "password", "sentinel_password"):
        value = redis_section.get(key) if isinstance(redis_section, dict) else None
        for match in ENV_REF.finditer(value if isinstance(value, str) else ""):
            secrets[match.group(1)] = f"redis.{key} is ${{{match.group(1)}}}"
    for name in config.scripts.env:
        if name in secrets:
            raise reader.error("scripts.env", f"{name} holds a Redis secret ({secrets[name]}); a script job "
                                              "must not see it: remove it from the list")


def _check_topology(config: Config, reader: _Reader) -> None:
    settings = config.redis
    if settings.sentinels:
        if settings.url:
            raise reader.error("redis.url", "cannot be set with redis.sentinels: the Sentinels name the master; "
                                            "remove one of them")
        if not settings.service_name:
            raise reader.error("redis.service_name", "is required with redis.sentinels: the name the Sentinels "
                                                     "monitor the master by (`sentinel monitor <name> ...`)")
        if settings.cluster:
            raise reader.error("redis.cluster", "cannot be combined with redis.sentinels (a Cluster fails over "
                                                "by itself)")
    elif settings.service_name:
        raise reader.error("redis.service_name", "needs redis.sentinels (the addresses of the Sentinels)")
    if settings.cluster and (not settings.url or settings.url.startswith("unix://")):
        raise reader.error("redis.cluster", "needs redis.url: the redis:// address of one node of the Cluster")


def _check_durability(config: Config, reader: _Reader) -> None:
    settings = config.redis
    if config.durability == "replicated":
        if settings.is_embedded:
            raise reader.error("durability", "replicated needs a Redis with replicas (redis.url or "
                                             "redis.sentinels); the embedded server has none")
        if settings.cluster:
            raise reader.error("durability", "replicated is not supported on Redis Cluster yet; use Sentinel, "
                                             "or durability: fast")
        if config.replication_timeout_s >= settings.socket_timeout_s:
            raise reader.error("replication_timeout", f"must be shorter than redis.socket_timeout "
                                                      f"({settings.socket_timeout_s:g}s): a WAIT that long would "
                                                      f"look like a dead connection")


def load(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a pool.yaml.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or a setting is wrong.
    """
    path = Path(path)
    data = read_document(path)
    return from_mapping(data, path, environ)
