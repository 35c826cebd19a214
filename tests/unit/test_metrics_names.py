"""Metric names: the namespace setting, the names a scrape can show, and the alert rules we ship
naming only those (so examples/pool-rules.yml cannot drift from the code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pool import metrics
from pool.config import from_mapping
from pool.errors import ConfigError
from pool.supervisor.exporter import accepts_gzip

RULES = Path(__file__).parents[2] / "examples" / "pool-rules.yml"


def test_names_are_unchanged_without_a_namespace():
    """No namespace: the names users graph today, and only the Redis gauge is pool's own."""
    config = from_mapping({"metrics": {"port": 9100}}, "pool.yaml", {})
    assert config.metrics.namespace == ""
    names = metrics.sample_names(config.metrics.namespace)
    assert {"job_success_total", "job_queue_length", "workers_alive", "job_duration_seconds_bucket"} <= names
    assert "pool_redis_up" in names and "redis_up" not in names  # redis_up is redis_exporter's


def test_a_namespace_prefixes_every_name():
    """``namespace: pool`` puts ``pool_`` before every name, the Redis gauge included (once)."""
    config = from_mapping({"metrics": {"port": 9100, "namespace": "pool"}}, "pool.yaml", {})
    names = metrics.sample_names(config.metrics.namespace)
    assert all(name.startswith("pool_") for name in names), names
    assert {"pool_job_success_total", "pool_job_queue_length", "pool_redis_up"} <= names
    assert {name.removeprefix("pool_") for name in names} - {"redis_up"} \
        == metrics.sample_names("") - {"pool_redis_up"}


@pytest.mark.parametrize("value", ["9lives", "my-app", "a:b", "", "x" * 65, 7, "pool\n"])
def test_a_namespace_that_cannot_start_a_metric_name_is_refused(value):
    """A namespace Prometheus could not take is a one-line config error naming the key."""
    with pytest.raises(ConfigError) as info:
        from_mapping({"metrics": {"namespace": value}}, "pool.yaml", {})
    assert str(info.value).startswith("pool.yaml: metrics.namespace: must be"), info.value
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("header", "gzipped"), [
    ("gzip", True), ("identity, gzip", True), ("GZIP;q=0.5", True), ("deflate, gzip ; q=1", True),
    ("", False), ("identity", False), ("gzip;q=0", False), ("br, gzip; q=0.000", False), ("x-gzipped", False),
])
def test_gzip_is_served_only_when_accepted(header, gzipped):
    """Accept-Encoding with gzip (and not q=0) gets gzip; anything else the plain text."""
    assert accepts_gzip(header) is gzipped


# PromQL words that are not metric names: functions are recognised by their "(", these are not.
_PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                 "bool", "offset", "inf", "nan"}


def metric_names_in(expr: str) -> set[str]:
    """The metric names an expression selects: without strings, label matchers, grouping label
    lists, ranges and numbers, the identifiers left that do not call a function."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    tokens = re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", expr)
    return {m.group(1) for m in tokens if not m.group(2) and m.group(1).lower() not in _PROMQL_WORDS}


def test_the_rules_parser_finds_the_names():
    """The helper above sees through grouping, matchers, ranges and numbers."""
    expr = 'sum by (queue) (rate(a_total[5m])) / clamp_min(b_total{job="x"}, 1e-9) > 0 or up{job="pool"} == 0'
    assert metric_names_in(expr) == {"a_total", "b_total", "up"}


def test_every_metric_the_shipped_rules_name_is_one_pool_exports():
    """examples/pool-rules.yml names only metrics pool exports, its own recording rules, or
    Prometheus's ``up``: a renamed metric fails here, not in someone's silent alert."""
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    named = set().union(*(metric_names_in(rule["expr"]) for rule in rules))
    assert named, "no metric names found in the rules"
    assert named - metrics.sample_names() - recorded - {"up"} == set()
    assert "pool_redis_up" in named  # the alert on Redis watches pool's gauge, not redis_exporter's
