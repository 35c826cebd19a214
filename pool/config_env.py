"""``${VAR}`` and ``${VAR:-default}`` in pool.yaml: substitution, the typing of a value that was
one reference, and how a message names where an expanded value came from.

config.py's reader decides when to expand and what the key's parser makes of the text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from pool import config_values as parsers
from pool.errors import ConfigError

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, source: str, environ: Mapping[str, str], where: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of the parsed YAML, as text.

    The reader uses it for the strings inside list and mapping values (a schedule's `args`);
    a value that is itself a string goes through ``_Reader.expanded``, which may type it.

    Raises:
        ConfigError: a referenced variable is not set and has no default.
    """
    if isinstance(data, dict):
        return {
            k: expand_env(v, source, environ, f"{where}.{k}" if where else str(k))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [expand_env(v, source, environ, f"{where}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data
    return substitute(data, source, environ, where)


def substitute(template: str, source: str, environ: Mapping[str, str], where: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{source}: {where}: environment variable {name} is not set "
            f"(export it, or write ${{{name}:-default}})"
        )

    return ENV_REF.sub(substitute, template)


def yaml_scalar(text: str) -> bool | int | float | None:
    """The boolean or number YAML reads in ``text`` ('4', '0.5', 'true'); None for anything else.

    Only these: a string is the text itself, and null, dates, lists and mappings are not what a
    ``${VAR}`` in a scalar key means.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return value if isinstance(value, (bool, int, float)) else None


def origin(template: str, environ: Mapping[str, str], path: str) -> str:
    """Where an expanded value came from, for messages: the text in the file, less the defaults of
    variables that are set (they played no part). For a secret only the variables' names, since
    a default written in the file or the text around a reference may be part of the secret."""
    if path in parsers.SECRET_PATHS:
        return ", ".join(f"${{{match.group(1)}}}" for match in ENV_REF.finditer(template))
    return ENV_REF.sub(lambda m: f"${{{m.group(1)}}}" if m.group(1) in environ else m.group(0), template)
