"""The value parsers of pool.yaml: each turns one YAML value into a typed value, or raises
:class:`Invalid` with a message that says what is allowed (config.py adds the file and key path).

Durations (``500ms``, ``30s``), sizes (``512KiB``), rate limits (``100/min``), names, URLs,
dotted paths. config.py owns the tables that say which key takes which parser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from pool.keys import QUEUE_NAME_RULE, is_valid_queue_name

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
# A compound duration ("1m30s", "1h 30m") is parts that each carry a unit, summed as Go's
# time.ParseDuration does; the parts may come in any order.
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_COMPOUND_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_UNITS = {
    None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
    "gb": 1000**3, "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # whole-string: fullmatch, no "$" that lets "\n" through
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LOG_LEVELS = ("debug", "info", "warning", "error")

# The longest duration any setting, job option or CLI flag takes: 100 years. Every duration ends
# up somewhere with a ceiling: PEXPIRE and SET PX refuse a TTL whose deadline passes 2**63 ms
# ("invalid expire time", raised half-way through ack.lua after the job was marked completed),
# threading and time.sleep refuse more than ~292 years, and time.gmtime cannot show a due time
# past the year 9999. A finite cap far below all of them, checked where the value is parsed,
# keeps every one of those calls safe; nobody means a TTL or delay longer than a century.
MAX_DURATION_S = 100 * 365 * 86400.0
MAX_DURATION_TEXT = "36500d (100 years)"
# Integers Lua and Redis read as exact numbers (a double's 53 bits); past it a count is garbled.
MAX_INTEGER = 2**53
LOG_FORMATS = ("text", "json")


class Invalid(Exception):
    """A value is wrong; the message says what is allowed. Turned into ConfigError with a path."""


def integer(minimum: int, maximum: int = MAX_INTEGER) -> Callable[[Any], int]:
    rule = f"an integer >= {minimum} and <= {maximum}"

    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be {rule}")
        if not minimum <= value <= maximum:
            raise Invalid(f"must be {rule}")
        return value

    return parse


def parse_duration(value: Any) -> float:
    """'30s', '500ms', '2m', '1h', '1d', a compound such as '1m30s', or a number of seconds → seconds.

    The number may be anything YAML or Python reads (``.inf`` too): the range is checked by
    :func:`check_seconds`, which every caller applies.

    Raises:
        ValueError: the value is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if _COMPOUND_DURATION.fullmatch(value):
            return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(value))
    raise ValueError(value)


def duration_rule(minimum_s: float, allow_zero: bool = False) -> str:
    """What a duration may be, for messages: 'a duration from 1s to 36500d (100 years) such as ...'."""
    low = "0" if allow_zero else f"{minimum_s:g}s"
    return f"a duration from {low} to {MAX_DURATION_TEXT} such as '500ms', '30s', '2m', '1h'"


def is_valid_seconds(seconds: float, minimum_s: float, allow_zero: bool = False) -> bool:
    """Whether ``seconds`` is finite, at most MAX_DURATION_S and at least ``minimum_s`` (or 0 if
    allowed): the one range check of every duration pool takes, from a file, a call or a flag."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return False
    if seconds > MAX_DURATION_S:
        return False
    return (seconds == 0 and allow_zero) or seconds >= minimum_s


def duration(minimum_s: float, allow_zero: bool = False) -> Callable[[Any], float]:
    rule = duration_rule(minimum_s, allow_zero)

    def parse(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except (ValueError, OverflowError):
            raise Invalid(f"must be {rule}") from None
        if is_valid_seconds(seconds, minimum_s, allow_zero):
            return seconds
        raise Invalid(f"must be {rule}")

    return parse


def size(minimum: int) -> Callable[[Any], int]:
    rule = f"a size >= {minimum} bytes such as 65536, '512KiB', '1MB'"

    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise Invalid(f"must be {rule}")
        if isinstance(value, int):
            size = value
        elif isinstance(value, str) and (match := _SIZE.match(value)):
            size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
        else:
            raise Invalid(f"must be {rule}")
        if size < minimum:
            raise Invalid(f"must be {rule}")
        return size

    return parse


def string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid("must be a non-empty string")
    return value


def env_name(value: Any) -> str:
    """The name of an environment variable (``APP_TOKEN``)."""
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise Invalid("must be the name of an environment variable (letters, digits and _, not first a digit)")
    return value


def optional_string(value: Any) -> str | None:
    """A string, or None when absent or empty (``${REDIS_PASSWORD:-}`` with the variable unset)."""
    return None if value is None or value == "" else string(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in allowed:
            raise Invalid("must be one of " + ", ".join(allowed))
        return value.lower()

    return parse


def logger_levels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise Invalid("must map logger names to levels, e.g. {pool.jobs: warning, examples: debug}")
    for name, level in value.items():
        if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
            raise Invalid(f"the level of {name!r} must be one of {', '.join(LOG_LEVELS)}")
    return {name: level.lower() for name, level in value.items()}


CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}


def cluster_url(url: str) -> str | None:
    """The plain URL of a ``redis+cluster://`` (or ``rediss+cluster://``) seed URL; None otherwise."""
    for scheme, plain in CLUSTER_SCHEMES.items():
        if url.startswith(scheme):
            return plain + url.removeprefix(scheme)
    return None


def redis_url(value: Any) -> str | None:
    if value is None:
        return None
    url = string(value)
    if not url.startswith(("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)):
        raise Invalid(
            "must start with redis://, rediss:// (TLS), unix:// or redis+cluster:// (a Cluster seed) "
            "(or leave `redis` out to use the embedded server)"
        )
    from redis.connection import parse_url

    try:
        parse_url(cluster_url(url) or url)
    except ValueError as exc:
        raise Invalid(f"is not a valid Redis URL ({_safe_reason(str(exc), url)})") from None
    _check_query_parameters(cluster_url(url) or url)
    return url


def _safe_reason(reason: str, url: str) -> str:
    """redis-py's reason, unless it quotes a piece of the user information (a password with a '/'
    splits the URL early, and redis-py then names a piece of it as the port)."""
    _, _, rest = url.partition("://")
    userinfo = rest.rpartition("@")[0]
    query = rest.partition("?")[2]
    hidden = [part.partition("=")[2] for part in query.split("&") if part.partition("=")[0] not in _SHOWN_QUERY_PARAMETERS]
    pieces = [piece for piece in [*re.split(r"[:/?#@&=]", userinfo), *hidden] if len(piece) >= 2]
    if any(piece in reason for piece in pieces):
        return "redis-py cannot read it; percent-encode a '/', '?', '#' or '@' in the password, e.g. %2F for '/'"
    return reason


def _check_query_parameters(url: str) -> None:
    """redis-py hands every query parameter to the connection as a keyword: one it does not take
    would be a TypeError at the first command. Building a connection object (it does not
    connect) finds it here instead."""
    import redis

    try:
        redis.ConnectionPool.from_url(url).make_connection()
    except TypeError as exc:
        name = re.search(r"keyword argument '(\w+)'", str(exc))
        raise Invalid(f"has a query parameter redis-py does not take ({name.group(1) if name else exc}); "
                      "remove it") from None


# Query parameters of a Redis URL shown as written; every other one's value is hidden. redis-py
# passes each query parameter to the connection as a keyword, so `?password=` and `?username=`
# authenticate as the userinfo does; an allow-list also hides a secret under a name not
# foreseen (a proxy's `token=`), where a deny-list would print it.
_SHOWN_QUERY_PARAMETERS = frozenset({
    "db", "protocol", "timeout", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
    "retry_on_timeout", "max_connections", "health_check_interval", "readonly", "client_name",
    "ssl_cert_reqs", "ssl_check_hostname", "decode_responses", "encoding",
})


def redact_url(url: str) -> str:
    """The URL with its secrets replaced by ``***``: safe for logs, errors and `pool status`.

    Hidden: the password of the user information, and the value of every query parameter but
    the plain connection settings (``?password=``, ``?username=``, ``?token=`` and any other).
    The user information ends at the last '@' before the query, so a password that contains
    '@' is hidden whole; when the only '@' comes after a '?', where the query starts is
    ambiguous, and everything before that '@' is hidden.
    """
    scheme, sep, rest = url.partition("://")
    head = scheme + sep if sep else ""
    rest = rest if sep else url  # a malformed URL (no "://") may still carry a password
    location, question, query = rest.partition("?")
    if "@" in location:
        userinfo, _, host = location.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        location = f"{user}{':***' if colon else ''}@{host}"
    elif "@" in query:  # '?' inside the password, or '@' inside a query value: hide both readings
        _, _, after = rest.rpartition("@")
        location, question, query = after.partition("?")
        location = "***@" + location
    return head + location + (question + _redact_query(query) if question else "")


def _redact_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        shown = equals and name in _SHOWN_QUERY_PARAMETERS
        parts.append(part if shown else f"{name}=***" if equals else "***" if part else part)
    return "&".join(parts)


# Values never echoed in an error message: the URL is shown redacted, the others not at all.
SECRET_PATHS = {"redis.url": redact_url, "redis.username": lambda v: "***", "redis.password": lambda v: "***",
                "redis.sentinel_password": lambda v: "***"}


def host_port(value: Any) -> str:
    """``host:port`` (a Sentinel's address)."""
    text = string(value).strip()
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(f"must be host:port, like 10.0.0.5:26379 (got {text!r})")
    return text


def key_prefix(value: Any) -> str:
    if not isinstance(value, str) or not _PREFIX.fullmatch(value):
        raise Invalid("must be 1-64 characters of letters, digits, '_', '.', '-'")
    return value


def queue_name(value: Any) -> str:
    if not isinstance(value, str) or not is_valid_queue_name(value):
        raise Invalid(f"queue names must be {QUEUE_NAME_RULE}")
    return value


RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S.*?)\s*$")
RATE_WINDOWS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def rate_limit(value: Any) -> tuple[int, int]:
    """'100/s', '10/min', '5/2s', '1000/1h' → (jobs, window in ms)."""
    rule = "must be jobs per window such as '100/s', '10/min', '5/2s' or '1000/1h'"
    match = RATE.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) < 1:
        raise Invalid(rule)
    window = match.group(2).lower()
    try:
        seconds = RATE_WINDOWS[window] if window in RATE_WINDOWS else parse_duration(window)
    except ValueError:
        raise Invalid(rule) from None
    if not is_valid_seconds(seconds, 0.001) or int(match.group(1)) > MAX_INTEGER:
        raise Invalid(rule)
    return int(match.group(1)), int(seconds * 1000)


def function_path(value: Any) -> str:
    path = handler_path(value)
    if not is_dotted_path(path, min_parts=2):
        raise Invalid("must be the dotted path of a function such as 'examples.tasks.add'")
    return path


def checked(check: Callable[[str], str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        try:
            return check(string(value))
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    return parse


def json_list(value: Any) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise Invalid("must be a list of arguments, e.g. [1, 'two']")
    return tuple(value)


def json_mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise Invalid("must be a mapping of keyword arguments, e.g. {size: 128}")
    return dict(value)


_DOTTED_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def is_dotted_path(value: Any, min_parts: int = 1) -> bool:
    """Whether ``value`` is a Python dotted name of at least ``min_parts`` parts: the one check
    of handler paths, hook functions and exception names, in pool.yaml and in a client call."""
    return isinstance(value, str) and bool(_DOTTED_PATH.fullmatch(value)) and value.count(".") + 1 >= min_parts


def handler_path(value: Any) -> str:
    if not is_dotted_path(value):
        raise Invalid("must be a dotted path such as 'examples.tasks' or 'examples.tasks.add'")
    return value


def exception_name(value: Any) -> str:
    if not is_dotted_path(value):
        raise Invalid("must be an exception class name such as 'ConnectionError' or 'httpx.TimeoutException'")
    return value
