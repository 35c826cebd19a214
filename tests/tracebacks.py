"""A pytest plugin that keeps failure reports readable on the CPython releases whose parser leaks.

CPython 3.11.0-3.11.7 and 3.12.0-3.12.1 (gh-106905, fixed in 3.11.8 and 3.12.2) miscount the AST
constructor's recursion depth on some parses that fail. pytest's long and short tracebacks parse the
source of every frame they show; a failure whose traceback passes through the standard library's
`asyncio.wait_for` (whose source pytest cuts into a fragment that does not parse) leaves the count
off, and a later parse raises ``SystemError: AST constructor recursion depth mismatch``: pytest
dies with INTERNALERROR and the rest of the suite never runs. Native tracebacks (the `traceback`
module's) parse nothing, so on those releases they are the default. A ``--tb`` given on the
command line is kept.
"""

from __future__ import annotations

import sys

import pytest


def has_leaky_parser(version: tuple[int, int, int]) -> bool:
    """Whether this CPython release has gh-106905 (its tracebacks must not be rendered from AST)."""
    return (3, 11, 0) <= version <= (3, 11, 7) or (3, 12, 0) <= version <= (3, 12, 1)


def pytest_configure(config: pytest.Config) -> None:
    if has_leaky_parser(sys.version_info[:3]) and config.option.tbstyle == "auto":
        config.option.tbstyle = "native"
