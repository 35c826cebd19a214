"""Handler registry: dotted paths, modules, and one-line import errors."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from pool.errors import HandlerError
from pool.handlers import load_registry


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway importable package; returns (name, writer of modules)."""
    name = "pkg_" + uuid.uuid4().hex[:8]
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(module: str, source: str) -> str:
        (tmp_path / name / f"{module}.py").write_text(textwrap.dedent(source))
        return f"{name}.{module}"

    yield name, write
    for mod in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[mod]


def test_module_path_registers_its_public_functions(package):
    _, write = package
    path = write("tasks", """
        import os
        from json import dumps
        def add(a, b): return a + b
        async def fetch(url): return url
        def _private(): pass
        CONSTANT = 3
    """)
    registry = load_registry([path])
    assert registry.names() == [f"{path}.add", f"{path}.fetch"]
    assert registry.get(f"{path}.fetch").is_async
    assert not registry.get(f"{path}.add").is_async


def test_function_path_registers_one_function(package):
    _, write = package
    path = write("images", "def thumbnail(w, h): return w\ndef other(): pass\n")
    registry = load_registry([f"{path}.thumbnail"])
    assert registry.names() == [f"{path}.thumbnail"]


def test_unknown_names_are_not_in_the_registry(package):
    _, write = package
    path = write("tasks", "def add(a, b): return a + b\n")
    registry = load_registry([path])
    assert registry.get("os.system") is None
    assert "os.system" not in registry


def test_missing_module_is_one_clear_line():
    with pytest.raises(HandlerError) as info:
        load_registry(["nosuchpkg_zz.tasks"])
    assert str(info.value) == (
        "handler 'nosuchpkg_zz.tasks' not found: no module named 'nosuchpkg_zz' "
        "(is it on PYTHONPATH, or next to pool.yaml?)"
    )


def test_missing_function_is_named(package):
    _, write = package
    path = write("tasks", "def add(a, b): return a + b\n")
    with pytest.raises(HandlerError, match=rf"^handler '{path}.ad' not found: module '{path}' has no 'ad'$"):
        load_registry([f"{path}.ad"])


def test_error_while_importing_is_reported_with_its_line(package):
    _, write = package
    path = write("broken", "import json\nraise RuntimeError('no database configured')\n")
    with pytest.raises(HandlerError) as info:
        load_registry([path])
    assert str(info.value) == (
        f"handler '{path}': importing '{path}' failed: RuntimeError: no database configured (broken.py:2)"
    )


def test_missing_dependency_inside_a_module_is_not_called_missing_handler(package):
    _, write = package
    path = write("needs", "import nosuchdep_zz\n")
    with pytest.raises(HandlerError, match=rf"handler '{path}': importing '{path}' failed: ModuleNotFoundError"):
        load_registry([path])


def test_non_callable_is_refused(package):
    _, write = package
    path = write("consts", "LIMIT = 3\ndef f(): pass\n")
    with pytest.raises(HandlerError, match="is a int, not a function"):
        load_registry([f"{path}.LIMIT"])


def test_module_without_public_functions_is_refused(package):
    _, write = package
    path = write("empty", "def _hidden(): pass\n")
    with pytest.raises(HandlerError, match="has no public functions"):
        load_registry([path])


def test_base_dir_is_put_on_sys_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = "mod_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{name}.py").write_text("def hello(): return 'hi'\n")
    registry = load_registry([name], base_dir=tmp_path)
    assert registry.get(f"{name}.hello").func() == "hi"


def test_a_schedule_must_name_a_registered_handler():
    from pool.config import from_mapping
    from pool.errors import HandlerError
    from pool.handlers import check_importable

    root = Path(__file__).resolve().parents[2]
    good = {"handlers": ["tests.sample_handlers"], "schedules": {"beat": {"handler": "tests.sample_handlers.add",
                                                                        "every": "1m"}}}
    check_importable(from_mapping(good, root / "pool.yaml", environ={}))
    bad = {**good, "schedules": {"beat": {"handler": "tests.sample_handlers.nope", "every": "1m"}}}
    with pytest.raises(HandlerError, match=r"pool.yaml: schedules.beat.handler: tests.sample_handlers.nope is not a "
                                           r"registered handler"):
        check_importable(from_mapping(bad, root / "pool.yaml", environ={}))
