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


def _imported_modules(path: Path) -> set[str]:
    """The pool modules a source file imports (``from pool.x import y`` counts pool.x and pool.x.y)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pool"):
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pool")}
    return found


def test_the_worker_and_the_supervisor_wings_never_import_each_other():
    """The two process roles stay apart: a worker is forked with nothing of the arbiter, and the
    arbiter never imports the asyncio side (it holds no event loop)."""
    for wing, other in (("worker", "pool.supervisor"), ("supervisor", "pool.worker")):
        for path in (ROOT / "pool" / wing).glob("*.py"):
            crossing = {name for name in _imported_modules(path) if name == other or name.startswith(other + ".")}
            assert not crossing, f"pool/{wing}/{path.name} imports {sorted(crossing)}"


def test_the_public_import_paths_survive_the_wings():
    from pool import AsyncClient, Client, JobSpec
    from pool.cli import main
    from pool.supervisor import Supervisor
    from pool.worker import Worker

    assert [cls.__name__ for cls in (AsyncClient, Client, JobSpec, Supervisor, Worker)] == [
        "AsyncClient", "Client", "JobSpec", "Supervisor", "Worker"]
    assert callable(main)
    packages = set(PROJECT["tool"]["setuptools"]["packages"])
    assert {"pool.worker", "pool.supervisor", "pool.lua", "pool.cli"} <= packages
    assert resources.files("pool.lua").joinpath("includes", "finish.lua").is_file()
