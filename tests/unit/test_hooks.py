"""on_startup / on_shutdown: the keys in pool.yaml, importing the hooks, and calling them."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal

import pytest

from pool import hooks
from pool.config import from_mapping, load
from pool.errors import ConfigError, HandlerError
from pool.hooks import Hook, Hooks
from pool.supervisor import Supervisor

HOOKS = "tests.hook_handlers"


def test_a_hook_key_takes_one_dotted_path_or_a_list():
    config = from_mapping({"on_startup": f"{HOOKS}.record_startup",
                           "on_shutdown": [f"{HOOKS}.record_shutdown", f"{HOOKS}.failing_shutdown"]})
    assert config.on_startup == (f"{HOOKS}.record_startup",)
    assert config.on_shutdown == (f"{HOOKS}.record_shutdown", f"{HOOKS}.failing_shutdown")
    assert from_mapping({}).on_startup == from_mapping({}).on_shutdown == ()
    with pytest.raises(ConfigError, match=r"^pool.yaml: on_startup\[0\]: must be the dotted path of a function"):
        from_mapping({"on_startup": "setup"})


def test_loading_names_the_key_of_a_hook_that_is_missing_or_a_module():
    with pytest.raises(HandlerError, match=rf"^on_shutdown: '{HOOKS}.nope' not found: module '{HOOKS}' has no 'nope'$"):
        Hooks.load(from_mapping({"on_shutdown": f"{HOOKS}.nope"}))
    with pytest.raises(HandlerError, match=rf"^on_startup: '{HOOKS}' is a module; name one function in it"):
        Hooks.load(from_mapping({"on_startup": HOOKS}))


async def test_hooks_run_in_order_sync_async_and_returning_a_coroutine():
    calls: list[str] = []

    async def opened() -> None:
        calls.append("async")

    loaded = Hooks([Hook("a", lambda: calls.append("sync")), Hook("b", opened), Hook("c", lambda: opened())])
    assert await loaded.startup("w1") is True
    assert calls == ["sync", "async", "async"]


async def test_startup_stops_at_the_first_hook_that_raises(caplog):
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("no database")

    loaded = Hooks([Hook("app.broken", broken), Hook("app.after", lambda: calls.append("after"))])
    assert await loaded.startup("w1") is False
    assert calls == []
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "w1 cannot start: on_startup hook app.broken raised" in record.getMessage()
    assert record.exc_info[0] is RuntimeError


async def test_every_shutdown_hook_runs_though_one_raises_and_one_overruns(caplog, monkeypatch):
    monkeypatch.setattr(hooks, "SHUTDOWN_HOOK_TIMEOUT_S", 0.05)
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("close failed")

    async def hung() -> None:
        await asyncio.Event().wait()

    async def raises_timeout() -> None:
        raise TimeoutError("the database did not answer")

    loaded = Hooks(shutdown=[Hook("app.broken", broken), Hook("app.hung", hung), Hook("app.slow", raises_timeout),
                             Hook("app.last", lambda: calls.append("last"))])
    await loaded.shutdown("w1")
    assert calls == ["last"]
    messages = [(r.getMessage(), r.exc_info and r.exc_info[0]) for r in caplog.records if r.levelno == logging.ERROR]
    assert messages == [
        ("worker w1: on_shutdown hook app.broken raised", RuntimeError),
        ("worker w1: on_shutdown hook app.hung did not finish within 0.05s; left behind", None),
        ("worker w1: on_shutdown hook app.slow raised", TimeoutError),
    ]


def test_a_reload_naming_a_hook_that_cannot_be_imported_is_refused(tmp_path, caplog):
    path = tmp_path / "pool.yaml"
    path.write_text("handlers: [tests.sample_handlers]\n")
    supervisor = Supervisor(load(path, environ={}), worker_main=lambda *a: 0)
    try:
        path.write_text(f"handlers: [tests.sample_handlers]\non_startup: {HOOKS}.open_db\n")
        supervisor._dispatch(signal.SIGHUP)
    finally:
        shutil.rmtree(supervisor.run_dir, ignore_errors=True)
    assert supervisor.config.on_startup == ()
    assert (f"reload refused, the running workers stay: pool.yaml: on_startup: '{HOOKS}.open_db' not found: "
            f"module '{HOOKS}' has no 'open_db'") in caplog.text
