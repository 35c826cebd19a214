"""The Lua sources as the loader assembles them: includes expanded, codes that exist, no copies."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from pool.lua import SOURCES, AckCode, CancelCode, RequeueCode, codes

_LUA_FILES = [f for f in resources.files("pool.lua").iterdir() if f.name.endswith(".lua")]
_LUA_FILES += [f for f in resources.files("pool.lua").joinpath("includes").iterdir() if f.name.endswith(".lua")]


def test_every_include_line_is_expanded():
    """No script reaches the server with an ``--@include`` line left in it."""
    assert not [name for name, source in SOURCES.items() if "--@include" in source]
    assert "local function bury(" in SOURCES["requeue"] and "local function promote(" in SOURCES["promote"]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_code_a_script_returns_is_a_member_of_its_enum(name):
    """A misspelt ``AckCode.NAME`` would be nil in Lua: every one used is defined in codes.py."""
    enums = {enum.__name__: enum for enum in codes.CODES}
    used = re.findall(r"\b(\w+Code)\.(\w+)", SOURCES[name])
    assert all(member in enums[enum].__members__ for enum, member in used)


def test_the_lua_tables_mirror_the_enums():
    """The ``codes`` include is the enums, rendered: the scripts and Python share one table."""
    tables = codes.lua_tables()
    assert "local AckCode = {ACKED = 1, CANCELLED = 2, ALREADY_ACKED = 0, NOT_ACTIVE = -1}" in tables
    assert all(f"local {enum.__name__} = " in tables for enum in (AckCode, CancelCode, RequeueCode))


def test_no_block_of_six_lines_is_repeated_in_the_scripts():
    """A block several scripts need is an include (STYLE: one copy of every shape)."""
    seen: dict[tuple[str, ...], str] = {}
    repeated = []
    for file in _LUA_FILES:
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
        for at in range(len(lines) - 5):
            block = tuple(lines[at:at + 6])
            if sum(1 for line in block if line not in ("", "end", "else")) < 4:
                continue  # closing ends and blank lines repeat without meaning anything
            where = f"{file.name}:{at + 1}"
            if block in seen:
                repeated.append((seen[block], where))
            seen.setdefault(block, where)
    assert repeated == []
