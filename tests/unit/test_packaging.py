"""What the wheel declares and carries: the typing marker, the Lua scripts, the SPDX license and
the distribution name (the import package and the command stay ``pool``)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_is_marked_typed_and_the_marker_ships_in_the_wheel():
    """``pool/py.typed`` exists and is package data, so type checkers read pool's hints (PEP 561)."""
    assert resources.files("pool").joinpath("py.typed").is_file()
    assert "py.typed" in PROJECT["tool"]["setuptools"]["package-data"]["pool"]
    assert "Typing :: Typed" in PROJECT["project"]["classifiers"]


def test_the_license_is_an_spdx_expression_with_its_file():
    """PEP 639 metadata: ``license = "MIT"`` and the LICENSE file that it names, built by a
    setuptools that understands both (the table form is deprecated)."""
    assert PROJECT["project"]["license"] == "MIT"
    assert PROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the pool authors" in text
    assert "setuptools>=77" in PROJECT["build-system"]["requires"][0]


def test_the_distribution_has_a_name_of_its_own_and_installs_the_pool_command():
    """``pool`` on the index is someone else's: the distribution is ``pool-jobs``; the import
    package and the command are still ``pool``."""
    assert PROJECT["project"]["name"] == "pool-jobs"
    assert PROJECT["project"]["scripts"] == {"pool": "pool.cli:main"}
    assert "pool" in PROJECT["tool"]["setuptools"]["packages"]
    classifiers = set(PROJECT["project"]["classifiers"])
    assert {f"Programming Language :: Python :: 3.{minor}" for minor in (11, 12, 13)} <= classifiers
    assert {"Operating System :: POSIX", "Framework :: AsyncIO"} <= classifiers
