"""Per-process hooks: pool.yaml's ``on_startup`` and ``on_shutdown`` functions.

Each worker process calls its ``on_startup`` functions once, in order, on its event loop and
before it claims a job (to open a database pool, configure an SDK, warm a cache), and its
``on_shutdown`` functions once after its last job ended, before the loop closes: on a stop, a
reload and a recycle alike. A hook takes no arguments; it may be ``async def`` (awaited) or a
plain function (called on the loop's thread). The ``on_startup`` hooks run before the process
reports its loop alive, so they share the boot allowance with the handler imports (60 s: past it
the supervisor kills the process as frozen); a plain ``on_shutdown`` hook blocks the loop, and
one blocking past ``heartbeat_ttl`` gets the process killed the same way.

Failures: a hook that cannot be imported stops `pool run` (and a reload) with one line, through
the same pre-fork check the handlers get (:func:`check_importable`). An ``on_startup`` hook that
raises stops its process with ExitCode.BOOT, so the supervisor halts the pool instead of
respawning into the same error; the ``on_shutdown`` hooks do not run then (nothing of the
process's work ran). An ``on_shutdown`` hook that raises or overruns is logged and the next one
runs: the process still exits cleanly.

The worker (worker/process.py) decides when the hooks run; this module imports and calls them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pool import handlers
from pool.errors import HandlerError

logger = logging.getLogger("pool.worker")

HOOK_KEYS = ("on_startup", "on_shutdown")
SHUTDOWN_HOOK_TIMEOUT_S = 10.0  # an async on_shutdown hook still running then is given up on


@dataclass(frozen=True, slots=True)
class Hook:
    """One configured hook: its dotted path (for log lines) and the function."""

    path: str
    func: Callable[[], Any]


def check_importable(config: Any) -> None:
    """Import the config's hooks in a fresh interpreter, as :func:`pool.handlers.check_importable`
    does for the handlers (it is called with the hooks in their place), before any fork.

    Raises:
        HandlerError: the first hook that cannot be imported, as one line naming its key.
    """
    for key in HOOK_KEYS:
        paths = getattr(config, key)
        if not paths:
            continue
        try:
            handlers.check_importable(config.replace(handlers=paths, schedules=()))
        except HandlerError as exc:
            raise HandlerError(f"{config.path.name}: {key}: {str(exc).removeprefix('handler ')}") from None


def _resolve(key: str, path: str) -> Hook:
    try:
        found = handlers.resolve(path)
    except HandlerError as exc:
        raise HandlerError(f"{key}: {str(exc).removeprefix('handler ')}") from None
    if len(found) != 1 or found[0].name != path:
        raise HandlerError(f"{key}: '{path}' is a module; name one function in it (e.g. {path}.setup)")
    return Hook(path, found[0].func)


class Hooks:
    """The hooks of one worker process. ``Hooks()`` has none.

    Args:
        startup: called in order by :meth:`startup`.
        shutdown: called in order by :meth:`shutdown`.
    """

    def __init__(self, startup: Iterable[Hook] = (), shutdown: Iterable[Hook] = ()) -> None:
        self._startup = tuple(startup)
        self._shutdown = tuple(shutdown)

    @classmethod
    def load(cls, config: Any) -> Hooks:
        """Import the hooks ``config`` names (in the worker process, after the handlers).

        Raises:
            HandlerError: a hook cannot be imported, or names a module rather than a function.
        """
        return cls([_resolve("on_startup", p) for p in config.on_startup],
                   [_resolve("on_shutdown", p) for p in config.on_shutdown])

    async def startup(self, worker_id: str) -> bool:
        """Run the on_startup hooks; False (logged with the traceback) once one raises."""
        for hook in self._startup:
            try:
                await _call(hook.func)
            except Exception:
                logger.exception("worker %s cannot start: on_startup hook %s raised; stopping this process "
                                 "(the pool halts rather than restart into the same error)", worker_id, hook.path)
                return False
        return True

    async def shutdown(self, worker_id: str) -> None:
        """Run every on_shutdown hook; one that raises or overruns is logged, and the next runs."""
        for hook in self._shutdown:
            try:
                async with asyncio.timeout(SHUTDOWN_HOOK_TIMEOUT_S) as deadline:
                    await _call(hook.func)
            except Exception:
                if deadline.expired():
                    logger.error("worker %s: on_shutdown hook %s did not finish within %gs; left behind",
                                 worker_id, hook.path, SHUTDOWN_HOOK_TIMEOUT_S)
                else:
                    logger.exception("worker %s: on_shutdown hook %s raised", worker_id, hook.path)


async def _call(func: Callable[[], Any]) -> None:
    """Call a hook; await what it returns if that is awaitable (an async def, or a plain
    function returning a coroutine, such as a partial of one)."""
    result = func()
    if inspect.isawaitable(result):
        await result
