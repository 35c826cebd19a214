"""Handlers by dotted path: import them, list them, refuse anything not registered.

A job names its handler by the function's dotted path (``examples.tasks.add``). Only names
registered in pool.yaml are ever looked up: a job can never make a worker import a module.
The registry is built and validated in the supervisor before any fork, so an import error stops
`pool run` at start-up with one clear line.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from pool.config import INHERIT, RetrySettings, ScriptSettings
from pool.errors import HandlerError

IMPORT_CHECK_TIMEOUT_S = 300.0  # check_importable gives up after this long

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler: its public name, how to call it, and its own retry settings."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    retries: RetrySettings = INHERIT


def task(
    *, max_retries: int | None = None, backoff: float | None = None, backoff_max: float | None = None,
    retry_on: Iterable[type[BaseException] | str] | None = None,
    fail_on: Iterable[type[BaseException] | str] | None = None, dead_letter: bool | None = None,
) -> Callable[[F], F]:
    """Give a handler its own retry settings (pool.yaml's handler entry, then the job, win over these).

    Args:
        max_retries: retries after the first attempt.
        backoff: seconds before the first retry (doubling after each, ±20% jitter).
        backoff_max: the longest wait between attempts, in seconds.
        retry_on: exception classes (or names) that retry; others fail at once.
        fail_on: exception classes (or names) that never retry.
        dead_letter: False to end exhausted jobs as `failed` instead of in the dead set.
    """

    def names(types: Iterable[type[BaseException] | str] | None) -> tuple[str, ...] | None:
        if types is None:
            return None
        return tuple(t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}" for t in types)

    settings = RetrySettings(max_retries, backoff, backoff_max, names(retry_on), names(fail_on), dead_letter)

    def mark(func: F) -> F:
        func.__pool_retries__ = settings  # type: ignore[attr-defined]
        return func

    return mark


class Registry:
    """The handlers one worker may run, by name."""

    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self._handlers = {handler.name: handler for handler in handlers}

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers


def _make_handler(name: str, func: Callable[..., Any]) -> Handler:
    retries = getattr(func, "__pool_retries__", INHERIT)
    return Handler(name=name, func=func, is_async=inspect.iscoroutinefunction(func), retries=retries)


def _import_failure(exc: BaseException, module_name: str, path: str) -> HandlerError:
    if isinstance(exc, ModuleNotFoundError) and exc.name and (
        module_name == exc.name or module_name.startswith(exc.name + ".")
    ):
        return HandlerError(
            f"handler '{path}' not found: no module named '{exc.name}' "
            f"(is it on PYTHONPATH, or next to pool.yaml?)"
        )
    return HandlerError(f"handler '{path}': importing '{module_name}' failed: {_last_line(exc)}")


def _import_module(module_name: str, path: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # any error in user code at import is a config error, not a crash
        raise _import_failure(exc, module_name, path) from None


def _module_if_exists(path: str) -> ModuleType | None:
    """Import ``path`` as a module; None only when no module of exactly that name exists."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name == path and "." in path:
            return None
        raise _import_failure(exc, path, path) from None
    except Exception as exc:
        raise _import_failure(exc, path, path) from None


def _last_line(exc: BaseException) -> str:
    """`TypeError: x` plus the user-code line it came from, so the one-line error is actionable."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _public_functions(module: ModuleType) -> list[Callable[..., Any]]:
    """Functions defined in ``module`` itself whose names do not start with '_'."""
    exported = getattr(module, "__all__", None)
    found: list[Callable[..., Any]] = []
    for name, value in vars(module).items():
        if not inspect.isfunction(value) or value.__module__ != module.__name__:
            continue
        if (exported is not None and name not in exported) or name.startswith("_"):
            continue
        found.append(value)
    return found


def resolve(path: str) -> list[Handler]:
    """Turn one configured dotted path into its handlers.

    ``pkg.module`` registers every public function of the module; ``pkg.module.func`` one function.

    Raises:
        HandlerError: the module cannot be imported, the attribute is missing or not callable,
            or a module has no public functions.
    """
    module = _module_if_exists(path)
    if module is not None:
        functions = _public_functions(module)
        if not functions:
            raise HandlerError(f"handler module '{path}' has no public functions to register")
        return [_make_handler(f"{path}.{f.__name__}", f) for f in functions]
    module_name, _, attribute = path.rpartition(".")
    module = _import_module(module_name, path)
    func = getattr(module, attribute, None)
    if func is None:
        raise HandlerError(f"handler '{path}' not found: module '{module_name}' has no '{attribute}'")
    if not callable(func):
        raise HandlerError(f"handler '{path}' is a {type(func).__name__}, not a function")
    return [_make_handler(path, func)]


def load_registry(
    paths: Iterable[str], base_dir: Path | None = None, scripts: ScriptSettings | None = None,
    import_paths: Sequence[Path] = (),
) -> Registry:
    """Import every configured handler path into a registry.

    Args:
        paths: dotted paths from pool.yaml ``handlers:``.
        base_dir: folder of pool.yaml, put on ``sys.path`` so that ``examples.tasks`` next to it
            imports without installing anything.
        scripts: with ``allowed_dirs`` set, the built-in ``pool.script`` handler is registered.
        import_paths: the config's ``import_paths`` (its ``pythonpath`` entries, then its folder);
            put on ``sys.path`` in that order instead of ``base_dir`` alone.

    Raises:
        HandlerError: the first path that cannot be imported.
    """
    folders = [str(p) for p in (import_paths or ([base_dir] if base_dir is not None else []))]
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    handlers: list[Handler] = []
    for path in paths:
        if path == "pool.script":
            continue  # built in: registered below when scripts.allowed_dirs is set; an entry only sets retries
        handlers.extend(resolve(path))
    if scripts is not None and scripts.allowed_dirs:
        from pool.script_jobs import SCRIPT_HANDLER, make_handler

        handlers.append(_make_handler(SCRIPT_HANDLER, make_handler(scripts, base_dir or Path.cwd())))
    return Registry(handlers)


def check_importable(config: Any) -> None:
    """Import the config's handlers in a fresh interpreter, so the supervisor stays free of user code.

    The supervisor never imports handler modules itself: its forked workers do, so a reload
    (SIGHUP) runs new code. This check runs them once in a subprocess with the supervisor's
    import path, and turns a failure into the same one-line error.

    Also checks that every schedule names a registered handler, so a typo fails at start-up
    instead of once per tick.

    Raises:
        HandlerError: the first handler that cannot be imported (one line).
    """
    if not config.handlers and not config.scripts.allowed_dirs:
        raise HandlerError(f"{config.path.name}: handlers: list at least one handler to run (e.g. examples.tasks)")
    if not config.handlers:
        return
    env = dict(os.environ)
    # Exactly the path the workers get, which is the supervisor's: -P keeps `python -c` from
    # putting the current folder first (it did, so the check passed where workers then failed).
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    schedules = [f"{s.name}={s.handler}" for s in config.schedules]
    folders = os.pathsep.join(str(p) for p in config.import_paths)
    command = [sys.executable, "-P", "-c", _CHECK_PROGRAM, folders, config.path.name, *config.handlers,
               "--schedules", *schedules]
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=IMPORT_CHECK_TIMEOUT_S,
                                check=False)
    except subprocess.TimeoutExpired:
        raise HandlerError(f"importing the handlers took over {IMPORT_CHECK_TIMEOUT_S:g}s; is a module doing work "
                           "at import?") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise HandlerError(lines[-1] if lines else f"importing the handlers failed (exit {result.returncode})")


_CHECK_PROGRAM = """
import os
import sys
from pathlib import Path
from pool.errors import HandlerError
from pool.handlers import load_registry
split = sys.argv.index("--schedules")
try:
    registry = load_registry(sys.argv[3:split], import_paths=[Path(p) for p in sys.argv[1].split(os.pathsep)])
except HandlerError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
for entry in sys.argv[split + 1:]:
    name, handler = entry.split("=", 1)
    if handler not in registry and handler != "pool.script":
        print(f"{sys.argv[2]}: schedules.{name}.handler: {handler} is not a registered handler "
              f"(add it, or its module, to handlers:)", file=sys.stderr)
        sys.exit(2)
"""
